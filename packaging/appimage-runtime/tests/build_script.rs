//! Runs `packaging/appimage/build-appimage.sh` with `mksquashfs` on a stand-in `hearth` and
//! checks the AppImage it writes: the type-2 magic, the AppDir layout, and that it runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{RUNTIME, entries_of, mode_of, output_of, printed, stdout_of};

/// Stands in for the release `hearth` binary: prints its arguments and where it runs from.
const FAKE_HEARTH: &str = r#"#!/bin/sh
for argument in "$@"; do printf 'hearth arg=[%s]\n' "$argument"; done
printf 'APPDIR=%s\n' "$APPDIR"
"#;

const DESKTOP_ENTRY: &str =
    "[Desktop Entry]\nType=Application\nName=Hearth\nExec=hearth %U\nIcon=hearth\n";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../appimage/build-appimage.sh")
}

/// The first 24 bytes of a PNG of `size`x`size` (signature and IHDR chunk), which is all the
/// script reads; the rest stands for the pixels.
fn png_of_size(size: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&size.to_be_bytes());
    png.extend_from_slice(&size.to_be_bytes());
    png.extend_from_slice(format!("pixels of the {size} icon").as_bytes());
    png
}

fn mksquashfs_is_installed() -> bool {
    Command::new("mksquashfs")
        .arg("-version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The inputs of the script in `work`: the stand-in binary, a desktop entry, icons 256 and 48.
fn script_inputs(work: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let hearth = work.join("hearth");
    fs::write(&hearth, FAKE_HEARTH).unwrap();
    fs::set_permissions(&hearth, fs::Permissions::from_mode(0o755)).unwrap();
    let desktop_file = work.join("hearth.desktop");
    fs::write(&desktop_file, DESKTOP_ENTRY).unwrap();
    let icons = work.join("icons");
    fs::create_dir(&icons).unwrap();
    fs::write(icons.join("hearth-256.png"), png_of_size(256)).unwrap();
    fs::write(icons.join("hearth-48.png"), png_of_size(48)).unwrap();
    (hearth, desktop_file, icons)
}

fn script_command(hearth: &Path, output: &Path, desktop_file: &Path, icons: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(script())
        .arg(hearth)
        .arg(output)
        .env("HEARTH_APPIMAGE_RUNTIME", RUNTIME)
        .env("HEARTH_DESKTOP_FILE", desktop_file)
        .env("HEARTH_ICONS_DIR", icons);
    command
}

#[test]
fn build_script_writes_an_appimage_that_runs_and_extracts_to_the_appdir_layout() {
    if !mksquashfs_is_installed() {
        // CI installs squashfs-tools (`.ci/run`); there a missing mksquashfs is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "mksquashfs is not installed (apt-get install squashfs-tools)"
        );
        eprintln!("SKIPPED: mksquashfs is not installed (apt-get install squashfs-tools)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (hearth, desktop_file, icons) = script_inputs(work.path());
    let appimage = work.path().join("out/Hearth-x86_64.AppImage");

    let built = output_of(&mut script_command(
        &hearth,
        &appimage,
        &desktop_file,
        &icons,
    ));
    assert!(built.status.success(), "{built:?}");
    let stdout = String::from_utf8(built.stdout).unwrap();
    assert!(
        stdout.contains(&format!("build-appimage: wrote {} (", appimage.display())),
        "{stdout}"
    );
    assert_eq!(
        entries_of(appimage.parent().unwrap()),
        ["Hearth-x86_64.AppImage"]
    );

    let bytes = fs::read(&appimage).unwrap();
    let runtime_len = fs::metadata(RUNTIME).unwrap().len() as usize;
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(&bytes[8..11], [0x41, 0x49, 0x02]);
    assert_eq!(&bytes[runtime_len..runtime_len + 4], b"hsqs");
    assert_eq!(mode_of(&appimage), 0o755);

    let cache = work.path().join("cache");
    let run = stdout_of(&output_of(
        Command::new(&appimage)
            .args(["--model", "a b"])
            .env("XDG_CACHE_HOME", &cache),
    ));
    assert!(
        run.starts_with("hearth arg=[--model]\nhearth arg=[a b]\n"),
        "{run}"
    );
    assert!(
        Path::new(printed(&run, "APPDIR")).starts_with(&cache),
        "{run}"
    );

    stdout_of(&output_of(
        Command::new(&appimage)
            .arg("--appimage-extract")
            .current_dir(work.path()),
    ));
    let root = work.path().join("squashfs-root");
    assert_eq!(
        fs::read_link(root.join("AppRun")).unwrap(),
        Path::new("usr/bin/hearth")
    );
    assert_eq!(
        fs::read_to_string(root.join("usr/bin/hearth")).unwrap(),
        FAKE_HEARTH
    );
    assert_eq!(mode_of(&root.join("usr/bin/hearth")), 0o755);
    assert_eq!(
        fs::read_to_string(root.join("hearth.desktop")).unwrap(),
        DESKTOP_ENTRY
    );
    let installed_entry = root.join("usr/share/applications/hearth.desktop");
    assert_eq!(fs::read_to_string(installed_entry).unwrap(), DESKTOP_ENTRY);
    assert_eq!(fs::read(root.join("hearth.png")).unwrap(), png_of_size(256));
    assert_eq!(
        fs::read_link(root.join(".DirIcon")).unwrap(),
        Path::new("hearth.png")
    );
    let hicolor = root.join("usr/share/icons/hicolor");
    assert_eq!(entries_of(&hicolor), ["256x256", "48x48"]);
    assert_eq!(
        fs::read(hicolor.join("48x48/apps/hearth.png")).unwrap(),
        png_of_size(48)
    );
    assert_eq!(
        fs::read(hicolor.join("256x256/apps/hearth.png")).unwrap(),
        png_of_size(256)
    );
}

#[test]
fn build_script_refuses_an_icon_that_is_not_256_pixels_wide() {
    let work = tempfile::tempdir().unwrap();
    let (hearth, desktop_file, icons) = script_inputs(work.path());
    fs::write(icons.join("hearth-256.png"), png_of_size(128)).unwrap();
    let appimage = work.path().join("Hearth.AppImage");

    let built = output_of(&mut script_command(
        &hearth,
        &appimage,
        &desktop_file,
        &icons,
    ));
    assert_eq!(built.status.code(), Some(1));
    let expected = format!(
        "build-appimage: error: {} is 128x128 pixels, not 256x256\n",
        icons.join("hearth-256.png").display()
    );
    assert_eq!(String::from_utf8(built.stderr).unwrap(), expected);
    assert!(!appimage.exists());
}

#[test]
fn build_script_refuses_a_desktop_entry_without_the_hearth_icon() {
    let work = tempfile::tempdir().unwrap();
    let (hearth, desktop_file, icons) = script_inputs(work.path());
    fs::write(
        &desktop_file,
        DESKTOP_ENTRY.replace("Icon=hearth", "Icon=other"),
    )
    .unwrap();
    let appimage = work.path().join("Hearth.AppImage");

    let built = output_of(&mut script_command(
        &hearth,
        &appimage,
        &desktop_file,
        &icons,
    ));
    assert_eq!(built.status.code(), Some(1));
    let stderr = String::from_utf8(built.stderr).unwrap();
    assert!(
        stderr.ends_with("must say Icon=hearth (the AppImage's icon is hearth.png at its root)\n"),
        "{stderr}"
    );
    assert!(!appimage.exists());
}
