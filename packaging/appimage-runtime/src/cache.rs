//! The extracted trees in `$XDG_CACHE_HOME/hearth/appimage/<key>/`, one per image.
//!
//! Architecture Invariant: a tree is complete when it is under its final name. It is extracted
//! into a partial sibling, gets [`COMPLETE_MARKER`] last, and is renamed into place; a launch
//! reuses a tree only when it finds the marker.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xxhash_rust::xxh3::Xxh3;

use crate::elf::ImageLocation;
use crate::extract::{self, PartialDirectory};

/// Written last into an extracted tree.
pub const COMPLETE_MARKER: &str = ".hearth-appimage-complete";
/// Changes when the layout of extracted trees changes, so old trees are not reused.
const CACHE_FORMAT: &[u8] = b"hearth-appimage-cache-1";

/// The directory that holds the extracted trees.
pub fn cache_root() -> Result<PathBuf> {
    cache_root_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// `$XDG_CACHE_HOME/hearth/appimage`, or `$HOME/.cache/hearth/appimage`. The XDG base directory
/// specification says to ignore a relative `XDG_CACHE_HOME`.
fn cache_root_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    let absolute =
        |value: Option<OsString>| value.map(PathBuf::from).filter(|path| path.is_absolute());
    let base = match (absolute(xdg_cache_home), absolute(home)) {
        (Some(xdg_cache_home), _) => xdg_cache_home,
        (None, Some(home)) => home.join(".cache"),
        (None, None) => bail!(
            "cannot find a cache directory: neither XDG_CACHE_HOME nor HOME is an absolute path"
        ),
    };
    Ok(base.join("hearth").join("appimage"))
}

/// The image's cache key: the hex of a 128-bit XXH3 hash of the whole image. XXH3 reads at
/// memory speed, so hashing a 100 MB image costs some milliseconds once it is in the page cache.
pub fn image_key(appimage: &Path, location: ImageLocation) -> Result<String> {
    let read_error = || format!("cannot read {}", appimage.display());
    let mut file = File::open(appimage).with_context(read_error)?;
    file.seek(SeekFrom::Start(location.offset))
        .with_context(read_error)?;
    let mut image = file.take(location.len);
    let mut hasher = Xxh3::new();
    hasher.update(CACHE_FORMAT);
    hasher.update(&location.len.to_le_bytes());
    let mut buffer = vec![0u8; 1 << 20];
    let mut hashed = 0u64;
    loop {
        let read = image.read(&mut buffer).with_context(read_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        hashed += read as u64;
    }
    if hashed != location.len {
        bail!("{} ended while hashing its image", appimage.display());
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// The extracted tree of the image: reused when complete, else extracted now.
pub fn prepare_app_dir(appimage: &Path, location: ImageLocation, root: &Path) -> Result<PathBuf> {
    let key = image_key(appimage, location)?;
    let app_dir = root.join(&key);
    if is_complete(&app_dir) {
        return Ok(app_dir);
    }
    fs::create_dir_all(root)
        .with_context(|| format!("cannot create the cache directory {}", root.display()))?;
    extract::remove_stale_siblings(root);

    let mut partial = PartialDirectory::create_for(&app_dir)
        .with_context(|| format!("cannot extract into the cache directory {}", root.display()))?;
    extract::extract_image(appimage, location, partial.path())?;
    let marker = partial.path().join(COMPLETE_MARKER);
    File::create(&marker)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot write {}", marker.display()))?;

    if partial.try_rename_to(&app_dir).is_err() {
        if is_complete(&app_dir) {
            // A launch beside this one finished first; `partial` is removed on drop.
            return Ok(app_dir);
        }
        if app_dir.symlink_metadata().is_ok() {
            // An incomplete tree under the final name (not made by this runtime): set it aside.
            let stale = extract::sibling_path(&app_dir, "stale", std::process::id())?;
            fs::rename(&app_dir, &stale).with_context(|| {
                format!("cannot move the incomplete {} aside", app_dir.display())
            })?;
            extract::remove_tree(&stale)?;
        }
        partial.try_rename_to(&app_dir).with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.path().display(),
                app_dir.display()
            )
        })?;
    }
    // Best effort: make the rename itself durable.
    let _ = File::open(root).and_then(|directory| directory.sync_all());
    Ok(app_dir)
}

fn is_complete(app_dir: &Path) -> bool {
    app_dir.join(COMPLETE_MARKER).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn cache_root_prefers_an_absolute_xdg_cache_home() {
        let root = cache_root_from(Some("/x/cache".into()), Some("/home/me".into())).unwrap();
        assert_eq!(root, PathBuf::from("/x/cache/hearth/appimage"));
    }

    #[test]
    fn cache_root_ignores_a_relative_or_empty_xdg_cache_home() {
        for xdg_cache_home in ["relative/cache", ""] {
            let root =
                cache_root_from(Some(xdg_cache_home.into()), Some("/home/me".into())).unwrap();
            assert_eq!(root, PathBuf::from("/home/me/.cache/hearth/appimage"));
        }
    }

    #[test]
    fn cache_root_without_xdg_cache_home_or_home_is_an_error() {
        let error = cache_root_from(None, None).unwrap_err().to_string();
        assert_eq!(
            error,
            "cannot find a cache directory: neither XDG_CACHE_HOME nor HOME is an absolute path"
        );
    }

    #[test]
    fn image_key_hashes_only_the_image_bytes() {
        let mut first = tempfile::NamedTempFile::new().unwrap();
        first.write_all(b"runtime one|hsqs image").unwrap();
        let mut second = tempfile::NamedTempFile::new().unwrap();
        second.write_all(b"other runtime|hsqs image").unwrap();
        let mut changed = tempfile::NamedTempFile::new().unwrap();
        changed.write_all(b"runtime one|hsqs imagf").unwrap();

        let first_key = image_key(
            first.path(),
            ImageLocation {
                offset: 12,
                len: 10,
            },
        )
        .unwrap();
        let second_key = image_key(
            second.path(),
            ImageLocation {
                offset: 14,
                len: 10,
            },
        )
        .unwrap();
        let changed_key = image_key(
            changed.path(),
            ImageLocation {
                offset: 12,
                len: 10,
            },
        )
        .unwrap();
        assert_eq!(first_key.len(), 32);
        assert!(first_key.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(first_key, second_key);
        assert_ne!(first_key, changed_key);
    }

    #[test]
    fn image_key_of_a_file_cut_short_is_an_error() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"runtime|hsqs").unwrap();
        let error = image_key(
            file.path(),
            ImageLocation {
                offset: 8,
                len: 100,
            },
        )
        .unwrap_err();
        assert!(
            error.to_string().ends_with("ended while hashing its image"),
            "{error}"
        );
    }
}
