//! The built binary's real window under Xvfb: it opens, draws, answers a typed question, and a
//! kill in the middle of an answer loses nothing the user wrote (the next start finds it).
//! Needs `Xvfb`, `xdotool` and ImageMagick's `import` (installed by `.ci/run`); without them the
//! test says so and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_engine::source::SMOLLM2_135M_Q4_1;
use serde_json::Value;

use crate::cli::{model, path_str};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts Xvfb on a display it picks itself (`-displayfd`: it writes the number once it accepts
/// connections), so stale lock files or sockets of earlier servers cannot collide with it; it
/// keeps running when its last client disconnects (`-noreset`).
fn xvfb() -> (Xvfb, String) {
    use std::io::BufRead;
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            // Without it the server resets when its last client goes (the killed app), and a
            // client connecting during the reset is refused.
            "-noreset",
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Xvfb");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("read Xvfb's display number");
    let n: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Xvfb did not start (it wrote {line:?})"));
    let server = Xvfb(child);
    let display = format!(":{n}");
    // Wait until the server answers a client, not only until it has picked its number.
    let start = Instant::now();
    while !Command::new("xdotool")
        .arg("getdisplaygeometry")
        .env("DISPLAY", &display)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Xvfb on {display} accepts no clients"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, display)
}

/// An X server stopped with SIGTERM when dropped, so it removes its lock file and socket.
struct Xvfb(Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Starts the window; its diagnostics go to `log` (shown if the window never appears).
fn hearth_window(display: &str, data: &Path, model: &Path, log: &Path) -> Killed {
    let log = std::fs::File::create(log).expect("create the window's log");
    let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg(model)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HEARTH_DATA_DIR", data)
        .env("HEARTH_LOG", "info,hearth=debug,hearth_engine=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start hearth");
    Killed(child)
}

/// The id of Hearth's window, once it is mapped; `app` is its process, `log` its diagnostics.
fn window(display: &str, app: &mut Killed, log: &Path) -> String {
    let start = Instant::now();
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!(
                "hearth exited ({status}) before its window appeared on {display}:\n{}",
                log_text()
            );
        }
        let out = Command::new("xdotool")
            .args(["search", "--onlyvisible", "--name", "^Hearth$"])
            .env("DISPLAY", display)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(id) = text.lines().next() {
            return id.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no Hearth window appeared in 60 s; its log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn xdotool(display: &str, args: &[&str]) {
    let status = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .status()
        .unwrap();
    assert!(status.success(), "xdotool {args:?}");
}

/// Screenshot of the whole screen; returns the standard deviation of its pixels (0 = blank).
fn screenshot(display: &str, out: &Path) -> f64 {
    let status = Command::new("import")
        .args(["-window", "root", path_str(out)])
        .env("DISPLAY", display)
        .status()
        .unwrap();
    assert!(status.success(), "import");
    let stats = Command::new("convert")
        .args([
            path_str(out),
            "-format",
            "%[fx:standard_deviation]",
            "info:",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&stats.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// The saved conversations' user messages.
fn saved_questions(data: &Path) -> Vec<String> {
    let dir = data.join("conversations");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", entry.path().display()));
        for n in v["nodes"].as_array().unwrap() {
            if n["role"] == "user" {
                out.push(n["content"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

#[test]
fn the_window_opens_answers_and_a_kill_mid_answer_keeps_the_question() {
    if !(have("Xvfb") && have("xdotool") && have("import")) {
        assert!(
            std::env::var("CI").is_err(),
            "Xvfb, xdotool and ImageMagick are needed under CI"
        );
        eprintln!("SKIPPED: the window test needs Xvfb, xdotool and ImageMagick");
        return;
    }
    let smol = model(&SMOLLM2_135M_Q4_1);
    let data = tempfile::tempdir().unwrap();
    let (_x, display) = xvfb();
    let shots = std::env::var_os("HEARTH_SCREENSHOT_DIR").map(PathBuf::from);
    let shot = |name: &str| match &shots {
        Some(d) => d.join(name),
        None => data.path().join(name),
    };

    let log = data.path().join("hearth-1.log");
    let mut app = hearth_window(&display, data.path(), &smol, &log);
    let id = window(&display, &mut app, &log);
    std::thread::sleep(Duration::from_secs(2)); // the model loads, the first frames draw
    let spread = screenshot(&display, &shot("hearth-start.png"));
    assert!(spread > 0.02, "the screenshot is blank (spread {spread})");

    // Ask a question; kill the app while the answer streams.
    xdotool(&display, &["windowfocus", "--sync", &id]);
    // The composer has the keyboard focus from the start.
    let question = "Write a long story about a lighthouse keeper";
    xdotool(&display, &["type", "--delay", "5", question]);
    xdotool(&display, &["key", "Return"]);
    std::thread::sleep(Duration::from_millis(1500));
    screenshot(&display, &shot("hearth-answering.png"));
    drop(app); // SIGKILL, mid-answer
    assert_eq!(
        saved_questions(data.path()),
        vec![question.to_string()],
        "the question was saved before the answer"
    );

    // Start again: the conversation is there, and nothing was lost or rewritten.
    let before: Vec<_> = std::fs::read_dir(data.path().join("conversations"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    let log = data.path().join("hearth-2.log");
    let mut app = hearth_window(&display, data.path(), &smol, &log);
    window(&display, &mut app, &log);
    std::thread::sleep(Duration::from_secs(2));
    let spread = screenshot(&display, &shot("hearth-restarted.png"));
    assert!(spread > 0.02, "blank after the restart");
    assert_eq!(saved_questions(data.path()), vec![question.to_string()]);
    let after: Vec<_> = std::fs::read_dir(data.path().join("conversations"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(before, after, "starting again changes no file");
}
