//! The runtime's tests: each module builds AppImages and runs them as a user would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod appimage;
mod build_script;

pub const RUNTIME: &str = env!("CARGO_BIN_EXE_hearth-appimage-runtime");
pub const COMPLETE_MARKER: &str = ".hearth-appimage-complete";

/// Runs `command`, retrying while another test thread's fork still holds a just-written
/// executable open for writing (ETXTBSY).
pub fn output_of(command: &mut Command) -> Output {
    const TEXT_FILE_BUSY: i32 = 26;
    for _ in 0..50 {
        match command.output() {
            Err(error) if error.raw_os_error() == Some(TEXT_FILE_BUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.unwrap(),
        }
    }
    panic!("{command:?} stayed busy");
}

pub fn stdout_of(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The value of the `KEY=` line the AppRun script printed.
pub fn printed<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {stdout}"))
}

pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn entries_of(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
