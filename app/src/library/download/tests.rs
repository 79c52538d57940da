//! The downloader against a loopback server: full download, resume after a dropped connection,
//! a server that ignores `Range`, cancel then resume, stalls, lying checksums and 404.

use std::sync::Mutex;
use std::sync::mpsc;

use super::*;
use crate::library::test_server::{Seen, Served, TestServer};

const LEN: usize = 1 << 20;

fn data() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..LEN).map(|_| rng.u8(..)).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn quick(retries: u32) -> Options {
    Options {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        retries,
        retry_delay: Duration::from_millis(10),
    }
}

/// Runs a download on the calling thread, collecting its progress reports.
fn run(
    url: &str,
    dest: &Path,
    expected: Option<&str>,
    opts: Options,
) -> (Result<Downloaded, DownloadError>, Vec<Progress>) {
    let mut reports = Vec::new();
    let cancel = AtomicBool::new(false);
    let result = download(url, dest, expected, &opts, &cancel, &mut |p| {
        reports.push(p)
    });
    (result, reports)
}

fn seen(path: &str, range: Option<&str>) -> Seen {
    Seen {
        path: path.into(),
        range: range.map(str::to_string),
    }
}

#[test]
fn full_download_on_a_named_thread_reports_progress_and_checks_the_expected_sha256() {
    let server = TestServer::start();
    let data = data();
    server.serve("/m.gguf", Served::file(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("models/m.gguf");
    let (tx, rx) = mpsc::channel();
    let thread_name = Arc::new(Mutex::new(None));
    let name = Arc::clone(&thread_name);
    let download = Download::start_with(
        quick(0),
        server.url("/m.gguf"),
        &dest,
        Some(sha256_hex(&data).to_uppercase()),
        move |p| {
            *name.lock().unwrap() = std::thread::current().name().map(str::to_string);
            tx.send(p).unwrap();
        },
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let done = download.join().unwrap();
    assert_eq!(
        thread_name.lock().unwrap().as_deref(),
        Some("hearth-download")
    );
    assert_eq!(
        done,
        Downloaded {
            path: dest.clone(),
            bytes: LEN as u64,
            sha256: sha256_hex(&data),
            checked: Checked::Expected,
        }
    );
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert!(!part_path(&dest).exists());
    let reports: Vec<Progress> = rx.try_iter().collect();
    assert_eq!(
        reports[0],
        Progress {
            done: 0,
            total: None,
            phase: Phase::Connecting
        }
    );
    let last = reports.last().unwrap();
    assert_eq!(
        (last.done, last.total, last.phase),
        (LEN as u64, Some(LEN as u64), Phase::Verifying)
    );
    // 1 MiB in 256 KiB steps at least, never going backwards.
    assert!(reports.len() >= 5, "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(server.seen(), [seen("/m.gguf", None)]);
}

#[test]
fn dropped_connection_is_resumed_with_a_range_request() {
    let server = TestServer::start();
    let data = data();
    let mut served = Served::file(data.clone());
    served.drops.push_back(300_000);
    server.serve("/m.gguf", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let (result, _) = run(&server.url("/m.gguf"), &dest, None, quick(1));
    let done = result.unwrap();
    assert_eq!(done.checked, Checked::Unchecked);
    assert_eq!(done.sha256, sha256_hex(&data));
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(
        server.seen(),
        [
            seen("/m.gguf", None),
            seen("/m.gguf", Some("bytes=300000-"))
        ]
    );
}

#[test]
fn broken_download_keeps_the_part_and_the_next_start_resumes_it() {
    let server = TestServer::start();
    let data = data();
    let mut served = Served::file(data.clone());
    served.drops.push_back(400_000);
    server.serve("/m.gguf", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let sha = sha256_hex(&data);

    let (result, _) = run(&server.url("/m.gguf"), &dest, Some(&sha), quick(0));
    let err = result.unwrap_err();
    assert!(
        matches!(err, DownloadError::Interrupted { done: 400_000, .. }),
        "{err:?}"
    );
    assert!(err.is_resumable());
    let msg = err.to_string();
    assert!(msg.starts_with("the connection to 127.0.0.1:"), "{msg}");
    assert!(msg.contains("start the download again to resume"), "{msg}");
    assert_eq!(fs::metadata(part_path(&dest)).unwrap().len(), 400_000);
    assert!(!dest.exists());

    let (result, _) = run(&server.url("/m.gguf"), &dest, Some(&sha), quick(0));
    assert_eq!(result.unwrap().checked, Checked::Expected);
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(server.seen()[1], seen("/m.gguf", Some("bytes=400000-")));
}

#[test]
fn server_that_ignores_range_makes_the_download_start_over() {
    let server = TestServer::start();
    let data = data();
    let mut served = Served::file(data.clone());
    served.honor_range = false;
    server.serve("/m.gguf", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    // A kept part whose bytes are not the file's: resuming onto it would corrupt the file.
    fs::write(part_path(&dest), vec![0xAA; 1000]).unwrap();
    let (result, _) = run(
        &server.url("/m.gguf"),
        &dest,
        Some(&sha256_hex(&data)),
        quick(0),
    );
    assert_eq!(result.unwrap().bytes, LEN as u64);
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(server.seen(), [seen("/m.gguf", Some("bytes=1000-"))]);
}

#[test]
fn cancel_keeps_the_part_and_a_later_start_resumes_it() {
    let server = TestServer::start();
    let data = data();
    let mut served = Served::file(data.clone());
    served.chunk_delay = Duration::from_millis(3);
    server.serve("/m.gguf", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let (tx, rx) = mpsc::channel();
    let mut download = Download::start(
        server.url("/m.gguf"),
        &dest,
        None,
        move |p| {
            let _ = tx.send(p);
        },
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    // Cancel from this thread, as the UI would, once 200 kB have arrived.
    while rx.recv().unwrap().done < 200_000 {}
    download.cancel();
    while !download.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = download.try_finish().unwrap().unwrap_err();
    assert!(matches!(err, DownloadError::Cancelled { .. }), "{err:?}");
    assert!(download.try_finish().is_none());
    assert!(err.to_string().contains("m.gguf.part is kept"), "{err}");
    let kept = fs::metadata(part_path(&dest)).unwrap().len();
    assert!((200_000..LEN as u64).contains(&kept), "{kept}");
    assert!(!dest.exists());

    let (result, _) = run(
        &server.url("/m.gguf"),
        &dest,
        Some(&sha256_hex(&data)),
        quick(0),
    );
    result.unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
    let range = format!("bytes={kept}-");
    assert_eq!(server.seen()[1], seen("/m.gguf", Some(&range)));
}

#[test]
fn stalled_server_times_out_and_keeps_what_arrived() {
    let server = TestServer::start();
    let mut served = Served::file(data());
    served.stall = Some((100_000, Duration::from_secs(3)));
    server.serve("/m.gguf", served);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let opts = Options {
        stall_timeout: Duration::from_millis(300),
        ..quick(0)
    };
    let (result, _) = run(&server.url("/m.gguf"), &dest, None, opts);
    let err = result.unwrap_err();
    assert!(matches!(err, DownloadError::Stalled { .. }), "{err:?}");
    assert!(
        err.to_string().contains("stalled (nothing for 1 s)"),
        "{err}"
    );
    assert_eq!(fs::metadata(part_path(&dest)).unwrap().len(), 100_000);
}

#[test]
fn hugging_face_style_redirect_supplies_the_sha256_to_check() {
    let server = TestServer::start();
    let data = data();
    server.serve("/cdn/blob", Served::file(data.clone()));
    server.redirect(
        "/repo/resolve/main/m.gguf",
        "/cdn/blob",
        &sha256_hex(&data),
        LEN,
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let (result, reports) = run(
        &server.url("/repo/resolve/main/m.gguf"),
        &dest,
        None,
        quick(0),
    );
    let done = result.unwrap();
    assert_eq!(done.checked, Checked::ServerEtag);
    assert_eq!(fs::read(&dest).unwrap(), data);
    // The size from x-linked-size is known from the first report after the redirect.
    assert!(
        reports
            .iter()
            .any(|p| p.phase == Phase::Downloading && p.total == Some(LEN as u64))
    );
    assert_eq!(
        server.seen(),
        [
            seen("/repo/resolve/main/m.gguf", None),
            seen("/cdn/blob", None)
        ]
    );
}

#[test]
fn lying_etag_fails_the_download_and_deletes_the_part() {
    let server = TestServer::start();
    server.serve("/cdn/blob", Served::file(data()));
    let lie = "0".repeat(64);
    server.redirect("/repo/resolve/main/m.gguf", "/cdn/blob", &lie, LEN);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let (result, _) = run(
        &server.url("/repo/resolve/main/m.gguf"),
        &dest,
        None,
        quick(0),
    );
    let err = result.unwrap_err();
    let expected = format!(
        "{}: sha256 is {}, expected {lie}; the damaged download was deleted: start it again",
        dest.display(),
        sha256_hex(&data())
    );
    assert_eq!(err.to_string(), expected);
    assert!(!dest.exists());
    assert!(!part_path(&dest).exists());
}

#[test]
fn wrong_expected_sha256_from_the_catalog_is_a_mismatch_too() {
    let server = TestServer::start();
    server.serve("/m.gguf", Served::file(data()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let wrong = "ab".repeat(32);
    let (result, _) = run(&server.url("/m.gguf"), &dest, Some(&wrong), quick(0));
    match result.unwrap_err() {
        DownloadError::ChecksumMismatch {
            file,
            expected,
            found,
        } => {
            assert_eq!(file, dest.display().to_string());
            assert_eq!(expected, wrong);
            assert_eq!(found, sha256_hex(&data()));
        }
        e => panic!("{e:?}"),
    }
    assert!(!dest.exists() && !part_path(&dest).exists());
    let (result, _) = run(&server.url("/m.gguf"), &dest, Some("abc"), quick(0));
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("'abc' is not 64 hex digits")
    );
}

#[test]
fn not_found_is_a_clear_error() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    let url = server.url("/nope/resolve/main/m.gguf");
    let (result, _) = run(&format!("{url}?download=true"), &dest, None, quick(3));
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{url} was not found (404): the model may have moved; \
             pick another model or open a .gguf file you already have"
        )
    );
    assert!(!err.is_resumable());
    assert!(!dest.exists());
    assert_eq!(server.seen().len(), 1, "a 404 is not retried");
}

#[test]
fn unreachable_server_says_to_check_the_connection_or_open_a_file() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = run(
        &format!("http://127.0.0.1:{port}/m.gguf"),
        &dir.path().join("m.gguf"),
        None,
        quick(3),
    );
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Unreachable { .. }), "{err:?}");
    assert!(
        msg.starts_with(&format!(
            "cannot reach 127.0.0.1:{port}: check the connection, or open a .gguf file you already have ("
        )),
        "{msg}"
    );
}

#[test]
fn complete_part_answered_416_is_verified_and_kept() {
    let server = TestServer::start();
    let data = data();
    server.serve("/m.gguf", Served::file(data.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.gguf");
    fs::write(part_path(&dest), &data).unwrap();
    let (result, _) = run(
        &server.url("/m.gguf"),
        &dest,
        Some(&sha256_hex(&data)),
        quick(0),
    );
    assert_eq!(result.unwrap().bytes, LEN as u64);
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(server.seen(), [seen("/m.gguf", Some("bytes=1048576-"))]);
}

#[test]
fn content_range_and_etag_headers_parse() {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_RANGE, "bytes 100-199/1000".parse().unwrap());
    assert_eq!(content_range(&h), Some((100, Some(1000))));
    h.insert(CONTENT_RANGE, "bytes */1000".parse().unwrap());
    assert_eq!(content_range(&h), Some((0, Some(1000))));
    h.insert(CONTENT_RANGE, "bytes 5-9/*".parse().unwrap());
    assert_eq!(content_range(&h), Some((5, None)));
    let sha = "AB".repeat(32);
    h.insert("x-linked-etag", format!("W/\"{sha}\"").parse().unwrap());
    assert_eq!(linked_etag(&h), Some("ab".repeat(32)));
    // A git blob id (small files) is not a sha256.
    h.insert(
        "x-linked-etag",
        "\"0123456789abcdef0123456789abcdef01234567\""
            .parse()
            .unwrap(),
    );
    assert_eq!(linked_etag(&h), None);
}
