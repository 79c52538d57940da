//! Builds small AppImages (the runtime binary + a squashfs image made with backhand) and runs
//! them: extract-and-run with the cache, `--appimage-offset`, `--appimage-extract`, errors.

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::{COMPLETE_MARKER, RUNTIME, entries_of, mode_of, output_of, printed, stdout_of};

/// Prints its arguments and the runtime's environment; `--exit-7` exits with status 7.
const APP_RUN: &str = r#"#!/bin/sh
[ "$1" = "--exit-7" ] && exit 7
for argument in "$@"; do printf 'arg=[%s]\n' "$argument"; done
printf 'APPDIR=%s\n' "$APPDIR"
printf 'APPIMAGE=%s\n' "$APPIMAGE"
printf 'ARGV0=%s\n' "$ARGV0"
printf 'OWD=%s\n' "$OWD"
printf 'note=%s\n' "$(cat "$APPDIR/note" 2>/dev/null || echo none)"
"#;

/// 300 KiB: two full 128 KiB blocks and a fragment.
fn payload() -> Vec<u8> {
    (0..300 * 1024u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn header(mode: u16) -> NodeHeader {
    NodeHeader::new(mode, 0, 0, 0)
}

/// A zstd squashfs image like the one `build-appimage.sh` makes with `mksquashfs`.
fn squashfs_image() -> Vec<u8> {
    let mut writer = FilesystemWriter::default();
    writer.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None).unwrap());
    writer.set_root_mode(0o755);
    writer
        .push_file(
            Cursor::new(APP_RUN.as_bytes().to_vec()),
            "AppRun",
            header(0o755),
        )
        .unwrap();
    writer.push_dir("usr", header(0o755)).unwrap();
    writer.push_dir("usr/bin", header(0o755)).unwrap();
    writer
        .push_file(Cursor::new(payload()), "usr/bin/payload.bin", header(0o640))
        .unwrap();
    writer
        .push_symlink("../../AppRun", "usr/bin/apprun-link", header(0o777))
        .unwrap();
    writer.push_dir("read-only", header(0o555)).unwrap();
    writer
        .push_file(
            Cursor::new(b"inside".to_vec()),
            "read-only/inside.txt",
            header(0o444),
        )
        .unwrap();
    let mut image = Cursor::new(Vec::new());
    writer.write(&mut image).unwrap();
    image.into_inner()
}

/// Writes runtime + AppImage magic + image to `directory/Test.AppImage`; returns its path and
/// the runtime's length (the image offset).
fn build_appimage(directory: &Path) -> (PathBuf, u64) {
    let mut bytes = fs::read(RUNTIME).unwrap();
    let runtime_len = bytes.len() as u64;
    bytes[8..11].copy_from_slice(&[0x41, 0x49, 0x02]);
    bytes.extend_from_slice(&squashfs_image());
    let path = directory.join("Test.AppImage");
    fs::write(&path, &bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    (path, runtime_len)
}

#[test]
fn extract_and_run_passes_arguments_and_environment_then_reuses_the_cached_tree() {
    let work = tempfile::tempdir().unwrap();
    let (appimage, _) = build_appimage(work.path());
    let cache = work.path().join("cache");
    let original_directory = work.path().join("somewhere");
    fs::create_dir(&original_directory).unwrap();
    let launch = |arguments: &[&str]| {
        output_of(
            Command::new(&appimage)
                .args(arguments)
                .env("XDG_CACHE_HOME", &cache)
                .current_dir(&original_directory),
        )
    };

    let first = stdout_of(&launch(&["hello world", "--flag", ""]));
    let app_dir = PathBuf::from(printed(&first, "APPDIR"));
    let cache_root = cache.join("hearth").join("appimage");
    assert_eq!(app_dir.parent(), Some(cache_root.as_path()));
    let key = app_dir.file_name().unwrap().to_str().unwrap();
    assert!(
        key.len() == 32 && key.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{key}"
    );
    let arguments: Vec<&str> = first
        .lines()
        .filter(|line| line.starts_with("arg="))
        .collect();
    assert_eq!(arguments, ["arg=[hello world]", "arg=[--flag]", "arg=[]"]);
    assert_eq!(
        printed(&first, "APPIMAGE"),
        appimage.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(printed(&first, "ARGV0"), appimage.to_str().unwrap());
    assert_eq!(
        printed(&first, "OWD"),
        original_directory.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(printed(&first, "note"), "none");

    assert!(app_dir.join(COMPLETE_MARKER).is_file());
    assert_eq!(
        fs::read(app_dir.join("usr/bin/payload.bin")).unwrap(),
        payload()
    );
    assert_eq!(mode_of(&app_dir.join("AppRun")), 0o755);
    assert_eq!(mode_of(&app_dir.join("usr/bin/payload.bin")), 0o640);
    assert_eq!(mode_of(&app_dir.join("read-only/inside.txt")), 0o444);
    assert_eq!(
        fs::read_link(app_dir.join("usr/bin/apprun-link")).unwrap(),
        Path::new("../../AppRun")
    );
    assert_eq!(entries_of(&cache_root), [key]);

    // The second launch does not extract again: a file added to the tree survives, and nothing
    // was created in (or removed from) the cache directory, so its mtime is unchanged.
    fs::write(app_dir.join("note"), "kept").unwrap();
    let cache_root_mtime = fs::metadata(&cache_root).unwrap().modified().unwrap();
    let second = stdout_of(&launch(&["again"]));
    assert_eq!(printed(&second, "APPDIR"), app_dir.to_str().unwrap());
    assert_eq!(printed(&second, "note"), "kept");
    assert_eq!(
        fs::metadata(&cache_root).unwrap().modified().unwrap(),
        cache_root_mtime
    );
    assert_eq!(second.lines().next(), Some("arg=[again]"));

    let failing = launch(&["--exit-7"]);
    assert_eq!(failing.status.code(), Some(7), "{failing:?}");
}

#[test]
fn extract_and_run_replaces_an_incomplete_tree_and_removes_interrupted_extractions() {
    let work = tempfile::tempdir().unwrap();
    let (appimage, _) = build_appimage(work.path());
    let cache = work.path().join("cache");
    let launch = || output_of(Command::new(&appimage).env("XDG_CACHE_HOME", &cache));
    let app_dir = PathBuf::from(printed(&stdout_of(&launch()), "APPDIR"));

    fs::remove_file(app_dir.join(COMPLETE_MARKER)).unwrap();
    fs::write(app_dir.join("note"), "from the incomplete tree").unwrap();
    // As left by a launch that was killed mid-extraction (no process has this id).
    let interrupted = app_dir.with_file_name(".0123.partial-4194305");
    fs::create_dir(&interrupted).unwrap();
    fs::write(interrupted.join("AppRun"), "half").unwrap();

    let stdout = stdout_of(&launch());
    assert_eq!(printed(&stdout, "APPDIR"), app_dir.to_str().unwrap());
    assert_eq!(printed(&stdout, "note"), "none");
    assert!(app_dir.join(COMPLETE_MARKER).is_file());
    let key = app_dir.file_name().unwrap().to_str().unwrap();
    assert_eq!(entries_of(app_dir.parent().unwrap()), [key]);
}

#[test]
fn concurrent_first_launches_all_run_and_leave_one_tree() {
    let work = tempfile::tempdir().unwrap();
    let (appimage, _) = build_appimage(work.path());
    let cache = work.path().join("cache");
    let launches: Vec<_> = (0..4)
        .map(|launch| {
            let appimage = appimage.clone();
            let cache = cache.clone();
            std::thread::spawn(move || {
                let output = output_of(
                    Command::new(&appimage)
                        .arg(format!("launch {launch}"))
                        .env("XDG_CACHE_HOME", &cache),
                );
                stdout_of(&output)
            })
        })
        .collect();
    let outputs: Vec<String> = launches
        .into_iter()
        .map(|launch| launch.join().unwrap())
        .collect();

    let app_dir = printed(&outputs[0], "APPDIR").to_owned();
    for (launch, stdout) in outputs.iter().enumerate() {
        assert_eq!(printed(stdout, "APPDIR"), app_dir);
        assert_eq!(
            stdout.lines().next(),
            Some(format!("arg=[launch {launch}]").as_str())
        );
    }
    let app_dir = PathBuf::from(app_dir);
    let key = app_dir.file_name().unwrap().to_str().unwrap();
    assert_eq!(entries_of(app_dir.parent().unwrap()), [key]);
    assert_eq!(
        fs::read(app_dir.join("usr/bin/payload.bin")).unwrap(),
        payload()
    );
}

#[test]
fn appimage_offset_prints_the_length_of_the_runtime() {
    let work = tempfile::tempdir().unwrap();
    let (appimage, runtime_len) = build_appimage(work.path());
    let stdout = stdout_of(&output_of(Command::new(&appimage).arg("--appimage-offset")));
    assert_eq!(stdout, format!("{runtime_len}\n"));
}

#[test]
fn appimage_extract_writes_squashfs_root_with_modes_and_symlinks() {
    let work = tempfile::tempdir().unwrap();
    let (appimage, _) = build_appimage(work.path());
    let extract = || {
        output_of(
            Command::new(&appimage)
                .arg("--appimage-extract")
                .current_dir(work.path()),
        )
    };

    let stdout = stdout_of(&extract());
    let root = work.path().canonicalize().unwrap().join("squashfs-root");
    assert_eq!(stdout, format!("extracted to {}\n", root.display()));
    assert_eq!(fs::read_to_string(root.join("AppRun")).unwrap(), APP_RUN);
    assert_eq!(mode_of(&root.join("AppRun")), 0o755);
    assert_eq!(
        fs::read(root.join("usr/bin/payload.bin")).unwrap(),
        payload()
    );
    assert_eq!(mode_of(&root.join("usr/bin/payload.bin")), 0o640);
    assert_eq!(
        fs::read_link(root.join("usr/bin/apprun-link")).unwrap(),
        Path::new("../../AppRun")
    );
    assert_eq!(
        fs::read_to_string(root.join("usr/bin/apprun-link")).unwrap(),
        APP_RUN
    );
    assert_eq!(
        fs::read_to_string(root.join("read-only/inside.txt")).unwrap(),
        "inside"
    );
    assert_eq!(mode_of(&root.join("read-only/inside.txt")), 0o444);
    // 0o555 in the image; the owner keeps write access so that the tree can be removed.
    assert_eq!(mode_of(&root.join("read-only")), 0o755);
    assert!(!root.join(COMPLETE_MARKER).exists());
    assert_eq!(entries_of(work.path()), ["Test.AppImage", "squashfs-root"]);

    let again = extract();
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8(again.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "hearth AppImage: {} already exists; remove it or extract somewhere else\n",
            root.display()
        )
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn unusable_cache_directory_is_named_in_a_one_line_error() {
    let work = tempfile::tempdir().unwrap();
    let (appimage, _) = build_appimage(work.path());
    // A regular file where the cache directory should be: fails even for root.
    let not_a_directory = work.path().join("not-a-directory");
    fs::write(&not_a_directory, "").unwrap();

    let output = output_of(Command::new(&appimage).env("XDG_CACHE_HOME", &not_a_directory));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let expected_start = format!(
        "hearth AppImage: cannot create the cache directory {}/hearth/appimage: ",
        not_a_directory.display()
    );
    assert!(stderr.starts_with(&expected_start), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn runtime_without_an_image_says_so_but_still_answers_help_and_version() {
    let output = output_of(&mut Command::new(RUNTIME));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr
            .starts_with("hearth AppImage: this runtime has no image appended (no squashfs magic"),
        "{stderr}"
    );

    let offset = output_of(Command::new(RUNTIME).arg("--appimage-offset"));
    assert_eq!(offset.status.code(), Some(1));

    let version = stdout_of(&output_of(Command::new(RUNTIME).arg("--appimage-version")));
    assert_eq!(
        version,
        format!("hearth-appimage-runtime {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = stdout_of(&output_of(Command::new(RUNTIME).arg("--appimage-help")));
    for option in [
        "--appimage-extract",
        "--appimage-help",
        "--appimage-offset",
        "--appimage-version",
    ] {
        assert!(
            help.contains(&format!("  {option} ")),
            "{option} missing from {help}"
        );
    }

    let unknown = output_of(Command::new(RUNTIME).arg("--appimage-mount"));
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(unknown.stderr).unwrap(),
        "hearth AppImage: unknown option --appimage-mount; --appimage-help lists the options\n"
    );
}
