//! Hearth's AppImage type-2 runtime: the ELF head of an AppImage file, followed by a squashfs
//! image. It extracts the image once into a cache directory and runs its `AppRun`; see
//! README.md for why it exists and how it differs from the upstream runtime.

mod cache;
mod elf;
mod extract;

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::elf::ImageLocation;

const HELP: &str = "\
Hearth AppImage runtime options (any other arguments go to Hearth):
  --appimage-extract          extract the image to ./squashfs-root and exit
  --appimage-extract-and-run  run the app (the default; accepted for compatibility)
  --appimage-help             print this help and exit
  --appimage-offset           print the byte offset of the image in this file and exit
  --appimage-version          print the version of this runtime and exit
The image is extracted once into $XDG_CACHE_HOME/hearth/appimage/ (~/.cache/... without it) and
reused by later launches.";

fn main() -> ExitCode {
    match run(std::env::args_os().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hearth AppImage: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the first argument asks of the runtime.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Run,
    Extract,
    Help,
    Offset,
    Version,
}

/// Reads a runtime option from the first argument (as the upstream runtime does) and removes it.
fn take_action(app_arguments: &mut Vec<OsString>) -> Result<Action> {
    let Some(option) = app_arguments.first().and_then(|first| first.to_str()) else {
        return Ok(Action::Run);
    };
    if !option.starts_with("--appimage-") {
        return Ok(Action::Run);
    }
    let action = match option {
        "--appimage-extract" => Action::Extract,
        "--appimage-extract-and-run" => Action::Run,
        "--appimage-help" => Action::Help,
        "--appimage-offset" => Action::Offset,
        "--appimage-version" => Action::Version,
        unknown => bail!("unknown option {unknown}; --appimage-help lists the options"),
    };
    app_arguments.remove(0);
    Ok(action)
}

fn run(mut arguments: Vec<OsString>) -> Result<()> {
    let argv0 = if arguments.is_empty() {
        OsString::new()
    } else {
        arguments.remove(0)
    };
    match take_action(&mut arguments)? {
        Action::Help => println!("{HELP}"),
        Action::Version => println!("hearth-appimage-runtime {}", env!("CARGO_PKG_VERSION")),
        Action::Offset => println!("{}", locate_own_image()?.1.offset),
        Action::Extract => {
            let (appimage, location) = locate_own_image()?;
            let target = std::env::current_dir()
                .context("cannot read the current directory")?
                .join("squashfs-root");
            extract::extract_to_new_directory(&appimage, location, &target)?;
            println!("extracted to {}", target.display());
        }
        Action::Run => {
            let (appimage, location) = locate_own_image()?;
            let app_dir = cache::prepare_app_dir(&appimage, location, &cache::cache_root()?)?;
            return Err(exec_app_run(&app_dir, &appimage, &argv0, &arguments));
        }
    }
    Ok(())
}

/// This AppImage file's absolute path and the image in it.
fn locate_own_image() -> Result<(PathBuf, ImageLocation)> {
    // The kernel's link to the running file: absolute, and symlinks resolved.
    let appimage = std::env::current_exe().context("cannot find the path of this AppImage file")?;
    let location = elf::locate_image(&appimage)?;
    Ok((appimage, location))
}

/// Replaces this process with `<app_dir>/AppRun`; returns only on failure.
fn exec_app_run(
    app_dir: &Path,
    appimage: &Path,
    argv0: &OsStr,
    arguments: &[OsString],
) -> anyhow::Error {
    let app_run = app_dir.join("AppRun");
    if app_run.symlink_metadata().is_err() {
        return anyhow::anyhow!(
            "the image has no AppRun at its root ({} is missing)",
            app_run.display()
        );
    }
    let mut command = Command::new(&app_run);
    command
        .args(arguments)
        .env("APPIMAGE", appimage)
        .env("APPDIR", app_dir)
        .env("ARGV0", argv0);
    if let Ok(original_directory) = std::env::current_dir() {
        command.env("OWD", original_directory);
    }
    let error = command.exec();
    anyhow::Error::new(error).context(format!("cannot run {}", app_run.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(values: &[&str]) -> Vec<OsString> {
        values.iter().map(OsString::from).collect()
    }

    #[test]
    fn take_action_reads_and_removes_a_leading_runtime_option() {
        let mut app_arguments = arguments(&["--appimage-offset"]);
        assert_eq!(take_action(&mut app_arguments).unwrap(), Action::Offset);
        assert!(app_arguments.is_empty());

        let mut app_arguments = arguments(&["--appimage-extract-and-run", "--serve", "x"]);
        assert_eq!(take_action(&mut app_arguments).unwrap(), Action::Run);
        assert_eq!(app_arguments, arguments(&["--serve", "x"]));
    }

    #[test]
    fn take_action_passes_app_arguments_through() {
        let mut app_arguments = arguments(&["--model", "x.gguf", "--appimage-offset"]);
        assert_eq!(take_action(&mut app_arguments).unwrap(), Action::Run);
        assert_eq!(
            app_arguments,
            arguments(&["--model", "x.gguf", "--appimage-offset"])
        );

        let mut no_arguments = Vec::new();
        assert_eq!(take_action(&mut no_arguments).unwrap(), Action::Run);
    }

    #[test]
    fn take_action_refuses_an_unknown_runtime_option() {
        let error = take_action(&mut arguments(&["--appimage-mount"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "unknown option --appimage-mount; --appimage-help lists the options"
        );
    }
}
