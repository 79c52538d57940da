//! Extracting the squashfs image to a directory tree.
//!
//! Trees are extracted into a temporary sibling directory (`.NAME.partial-PID`) that is renamed
//! into place when complete, so no one ever sees a half-extracted tree under the final name.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use backhand::{FilesystemReader, InnerNode};

use crate::elf::ImageLocation;

/// Permission bits kept from the image: setuid, setgid and sticky bits are dropped, since the
/// tree belongs to the user who extracts it.
const PERMISSION_BITS: u32 = 0o777;
/// Directories stay writable and searchable for their owner so that the tree can be removed.
const DIRECTORY_OWNER_BITS: u32 = 0o700;

/// Extracts the image at `location` in the file `appimage` into the empty directory `into`,
/// keeping permission bits and symlinks. Regular files are synced to disk.
pub fn extract_image(appimage: &Path, location: ImageLocation, into: &Path) -> Result<()> {
    let file =
        File::open(appimage).with_context(|| format!("cannot open {}", appimage.display()))?;
    let filesystem =
        FilesystemReader::from_reader_with_offset(BufReader::new(file), location.offset)
            .with_context(|| {
                format!(
                    "cannot read the squashfs image at offset {} of {}",
                    location.offset,
                    appimage.display()
                )
            })?;

    let mut created_directories = HashSet::from([into.to_path_buf()]);
    let mut directory_modes = Vec::new();
    for node in filesystem.files() {
        let relative = relative_path(&node.fullpath)?;
        let destination = into.join(&relative);
        let mode = u32::from(node.header.permissions) & PERMISSION_BITS;
        if relative.as_os_str().is_empty() {
            directory_modes.push((destination, mode | DIRECTORY_OWNER_BITS));
            continue;
        }
        // Every entry goes into a directory this extraction made, never through a symlink.
        let parent = destination.parent().unwrap_or(into);
        if !created_directories.contains(parent) {
            bail!(
                "the image lists {} outside a directory of the image",
                node.fullpath.display()
            );
        }
        match &node.inner {
            InnerNode::Dir(_) => {
                fs::create_dir(&destination)
                    .with_context(|| format!("cannot create {}", destination.display()))?;
                directory_modes.push((destination.clone(), mode | DIRECTORY_OWNER_BITS));
                created_directories.insert(destination);
            }
            InnerNode::File(file) => {
                let mut contents = filesystem.file(file).reader_checked().with_context(|| {
                    format!("cannot read {} in the image", node.fullpath.display())
                })?;
                write_file(&destination, &mut contents, mode)?;
            }
            InnerNode::Symlink(link) => {
                symlink(&link.link, &destination).with_context(|| {
                    format!("cannot create the symlink {}", destination.display())
                })?;
            }
            InnerNode::CharacterDevice(_)
            | InnerNode::BlockDevice(_)
            | InnerNode::NamedPipe
            | InnerNode::Socket => {
                eprintln!(
                    "hearth AppImage: skipping {}: devices, pipes and sockets are not extracted",
                    node.fullpath.display()
                );
            }
        }
    }
    // Deepest first, so a read-only directory is closed only after its contents were written.
    for (directory, mode) in directory_modes.iter().rev() {
        fs::set_permissions(directory, Permissions::from_mode(*mode))
            .with_context(|| format!("cannot set the mode of {}", directory.display()))?;
    }
    Ok(())
}

/// Extracts the image into `target`, which must not exist yet, via a temporary sibling.
pub fn extract_to_new_directory(
    appimage: &Path,
    location: ImageLocation,
    target: &Path,
) -> Result<()> {
    if target.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; remove it or extract somewhere else",
            target.display()
        );
    }
    let mut partial = PartialDirectory::create_for(target)?;
    extract_image(appimage, location, partial.path())?;
    partial.try_rename_to(target).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.path().display(),
            target.display()
        )
    })
}

/// A directory being extracted, named `.NAME.partial-PID` beside the final `NAME`. Removed when
/// dropped unless renamed into place.
#[derive(Debug)]
pub struct PartialDirectory {
    path: Option<PathBuf>,
}

impl PartialDirectory {
    /// Creates the empty partial directory for `target`.
    pub fn create_for(target: &Path) -> Result<Self> {
        let path = sibling_path(target, "partial", std::process::id())?;
        if path.symlink_metadata().is_ok() {
            // Left by an earlier process with the same id.
            remove_tree(&path)?;
        }
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path: Some(path) })
    }

    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("the partial directory is there until renamed")
    }

    /// Renames the partial directory to `target`. On failure it stays where it was (and is
    /// removed when dropped).
    pub fn try_rename_to(&mut self, target: &Path) -> io::Result<()> {
        fs::rename(self.path(), target)?;
        self.path = None;
        Ok(())
    }
}

impl Drop for PartialDirectory {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            // Best effort: a leftover is removed by a later launch (`remove_stale_siblings`).
            let _ = remove_tree(path);
        }
    }
}

/// `.NAME.KIND-PID` beside `target`.
pub fn sibling_path(target: &Path, kind: &str, pid: u32) -> Result<PathBuf> {
    let name = target
        .file_name()
        .with_context(|| format!("{} has no file name", target.display()))?;
    let mut sibling_name = std::ffi::OsString::from(".");
    sibling_name.push(name);
    sibling_name.push(format!(".{kind}-{pid}"));
    Ok(target.with_file_name(sibling_name))
}

/// Removes `.*.partial-PID` and `.*.stale-PID` directories in `directory` whose process is gone
/// (interrupted extractions). Best effort.
pub fn remove_stale_siblings(directory: &Path) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let pid = name
            .strip_prefix('.')
            .and_then(|rest| {
                rest.rsplit_once(".partial-")
                    .or_else(|| rest.rsplit_once(".stale-"))
            })
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = remove_tree(&entry.path());
        }
    }
}

/// Removes a tree made by [`extract_image`] (its directories are owner-writable).
pub fn remove_tree(path: &Path) -> Result<()> {
    fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// The path of an image entry relative to the image root; refuses `..` and other oddities.
fn relative_path(image_path: &Path) -> Result<PathBuf> {
    let mut relative = PathBuf::new();
    for component in image_path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => relative.push(name),
            _ => bail!(
                "the image has an entry with an unsafe path: {}",
                image_path.display()
            ),
        }
    }
    Ok(relative)
}

fn write_file(destination: &Path, contents: &mut impl io::Read, mode: u32) -> Result<()> {
    // `create_new` never follows a symlink at `destination` and never overwrites.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(destination)
        .with_context(|| format!("cannot create {}", destination.display()))?;
    io::copy(contents, &mut file)
        .with_context(|| format!("cannot write {}", destination.display()))?;
    // Set after writing: `open`'s mode would be narrowed by the umask.
    file.set_permissions(Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", destination.display()))?;
    // A tree reused on every launch must not keep a file cut short by a power loss.
    file.sync_all()
        .with_context(|| format!("cannot sync {}", destination.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_strips_the_root_and_refuses_parent_components() {
        assert_eq!(relative_path(Path::new("/")).unwrap(), PathBuf::new());
        assert_eq!(
            relative_path(Path::new("/usr/bin/hearth")).unwrap(),
            PathBuf::from("usr/bin/hearth")
        );
        let error = relative_path(Path::new("/usr/../../etc/passwd"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "the image has an entry with an unsafe path: /usr/../../etc/passwd"
        );
    }

    #[test]
    fn sibling_path_is_hidden_beside_the_target() {
        let sibling = sibling_path(Path::new("/cache/hearth/appimage/abc"), "partial", 42).unwrap();
        assert_eq!(
            sibling,
            PathBuf::from("/cache/hearth/appimage/.abc.partial-42")
        );
    }

    #[test]
    fn remove_stale_siblings_removes_only_directories_of_dead_processes() {
        let directory = tempfile::tempdir().unwrap();
        // Above the kernel's largest pid_max (2^22), so no such process.
        let dead = directory.path().join(".abc.partial-4194305");
        let dead_stale = directory.path().join(".abc.stale-4194306");
        let alive = directory
            .path()
            .join(format!(".abc.partial-{}", std::process::id()));
        let unrelated = directory.path().join("abc");
        for path in [&dead, &dead_stale, &alive, &unrelated] {
            fs::create_dir(path).unwrap();
            fs::write(path.join("file"), "x").unwrap();
        }

        remove_stale_siblings(directory.path());

        assert!(!dead.exists());
        assert!(!dead_stale.exists());
        assert!(alive.join("file").exists());
        assert!(unrelated.join("file").exists());
    }

    #[test]
    fn partial_directory_is_removed_when_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("tree");
        let partial = PartialDirectory::create_for(&target).unwrap();
        let partial_path = partial.path().to_path_buf();
        fs::write(partial_path.join("file"), "x").unwrap();
        drop(partial);
        assert!(!partial_path.exists());
        assert!(!target.exists());
    }

    #[test]
    fn partial_directory_rename_to_an_occupied_target_keeps_both() {
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("tree");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("occupant"), "x").unwrap();
        let mut partial = PartialDirectory::create_for(&target).unwrap();
        fs::write(partial.path().join("file"), "y").unwrap();

        let error = partial.try_rename_to(&target).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::DirectoryNotEmpty);
        assert_eq!(
            fs::read_to_string(partial.path().join("file")).unwrap(),
            "y"
        );
        assert_eq!(fs::read_to_string(target.join("occupant")).unwrap(), "x");
    }
}
