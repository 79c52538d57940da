//! Downloading one model file over HTTP(S) on a named thread: progress reports, cancel, resume
//! and a sha256 check before the file takes its name.
//!
//! The file is written to `<dest>.part` (locked while a download writes it) and hashed as it
//! arrives. A `.part` left by a cancelled or broken download is resumed with a `Range` request:
//! `206 Partial Content` continues it, `200 OK` (the server ignored the range) starts it over. A
//! connection that breaks or stalls mid-file is resumed the same way a few times before giving up.
//! At the end the sha256 is compared with the expected one (from the catalog, or else the
//! `x-linked-etag` header Hugging Face sends with its redirect, which carries the LFS sha256), and
//! only a match is renamed to `dest`; a mismatch deletes the `.part`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_RANGE, HeaderMap, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};

/// Redirects followed at most (Hugging Face uses one, to its CDN).
const MAX_REDIRECTS: usize = 10;
/// Progress is reported after at least this many bytes or this much time, whichever comes first.
const PROGRESS_BYTES: u64 = 256 << 10;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// How often a wait checks the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Timeouts and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Giving up on connecting to the server.
    pub connect_timeout: Duration,
    /// Giving up on a server that sends nothing (no headers, or no body bytes) for this long.
    pub stall_timeout: Duration,
    /// How many times a connection that broke or stalled mid-file is resumed automatically.
    pub retries: u32,
    pub retry_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
            retries: 3,
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// What a download is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, or re-reading the kept `.part` before resuming.
    Connecting,
    Downloading,
    /// Comparing the checksum and moving the file into place.
    Verifying,
}

/// A progress report: bytes of the file on disk so far, and the file's size once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub phase: Phase,
}

/// What the finished file was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The sha256 the caller gave (from the catalog).
    Expected,
    /// The sha256 the server reported in `x-linked-etag`.
    ServerEtag,
    /// Nothing to check against: neither was available.
    Unchecked,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    pub checked: Checked,
}

/// Why a download did not finish. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "cannot reach {host}: check the connection, or open a .gguf file you already have ({detail})"
    )]
    Unreachable { host: String, detail: String },
    #[error(
        "{url} was not found (404): the model may have moved; pick another model or open a .gguf file you already have"
    )]
    NotFound { url: String },
    #[error("{url}: the server answered {status}{hint}")]
    Http {
        url: String,
        status: String,
        hint: &'static str,
    },
    #[error(
        "the download from {host} stalled (nothing for {secs} s): check the connection and start it again to resume"
    )]
    Stalled { host: String, secs: u64 },
    #[error(
        "the connection to {host} broke after {done} bytes ({detail}): start the download again to resume"
    )]
    Interrupted {
        host: String,
        done: u64,
        detail: String,
    },
    #[error("download cancelled; {} is kept so it can resume later", part.display())]
    Cancelled { part: PathBuf },
    #[error(
        "{file}: sha256 is {found}, expected {expected}; the damaged download was deleted: start it again"
    )]
    ChecksumMismatch {
        file: String,
        expected: String,
        found: String,
    },
    #[error("{} is already being downloaded", path.display())]
    Busy { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot download {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the download thread stopped unexpectedly: {0}")]
    Crashed(String),
}

impl DownloadError {
    #[cfg(test)]
    /// True when the download can be resumed by starting it again (the `.part` is kept).
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            Self::Stalled { .. } | Self::Interrupted { .. } | Self::Cancelled { .. }
        )
    }

    /// True for the errors an automatic retry may fix.
    fn is_transient(&self) -> bool {
        matches!(self, Self::Stalled { .. } | Self::Interrupted { .. })
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A download running on its own thread (`hearth-download`); dropping it cancels the download.
#[derive(Debug)]
pub struct Download {
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Downloaded, DownloadError>>>,
}

impl Download {
    /// Starts downloading `url` to `dest` with the default [`Options`]. `on_progress` is called
    /// on the download thread (at most every 256 KiB or 100 ms); setting `cancel` stops it,
    /// keeping the `.part` for a later resume.
    pub fn start(
        url: impl Into<String>,
        dest: impl Into<PathBuf>,
        expected_sha256: Option<String>,
        on_progress: impl FnMut(Progress) + Send + 'static,
        cancel: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        Self::start_with(
            Options::default(),
            url,
            dest,
            expected_sha256,
            on_progress,
            cancel,
        )
    }

    /// [`Download::start`] with other timeouts and retries.
    pub fn start_with(
        opts: Options,
        url: impl Into<String>,
        dest: impl Into<PathBuf>,
        expected_sha256: Option<String>,
        mut on_progress: impl FnMut(Progress) + Send + 'static,
        cancel: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let (url, dest) = (url.into(), dest.into());
        let flag = Arc::clone(&cancel);
        let thread = std::thread::Builder::new()
            .name("hearth-download".into())
            .spawn(move || {
                download(
                    &url,
                    &dest,
                    expected_sha256.as_deref(),
                    &opts,
                    &flag,
                    &mut on_progress,
                )
            })?;
        Ok(Self {
            cancel,
            thread: Some(thread),
        })
    }

    /// Asks the download to stop; [`Download::try_finish`] then yields `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    #[cfg(test)]
    /// The outcome once the thread has finished, without blocking; `None` while it runs (and
    /// after the outcome was taken).
    pub fn try_finish(&mut self) -> Option<Result<Downloaded, DownloadError>> {
        if !self.thread.as_ref()?.is_finished() {
            return None;
        }
        self.thread.take().map(join)
    }

    /// Waits for the outcome (blocks: not for the UI thread).
    pub fn join(mut self) -> Result<Downloaded, DownloadError> {
        match self.thread.take() {
            Some(t) => join(t),
            None => Err(DownloadError::Crashed(
                "the outcome was already taken".into(),
            )),
        }
    }
}

/// Dropping the handle of a running download cancels it (the `.part` is kept).
impl Drop for Download {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.cancel();
        }
    }
}

fn join(t: JoinHandle<Result<Downloaded, DownloadError>>) -> Result<Downloaded, DownloadError> {
    t.join().unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(DownloadError::Crashed(msg))
    })
}

/// `<dest>.part`: where the file is written until it is verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Downloads `url` to `dest` on the calling thread (blocks; [`Download`] runs it on its own).
pub fn download(
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    opts: &Options,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Downloaded, DownloadError> {
    let parsed = Url::parse(url).map_err(|e| DownloadError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DownloadError::BadUrl {
            url: url.to_string(),
            reason: "only http and https URLs can be downloaded".into(),
        });
    }
    let expected = match expected_sha256 {
        Some(e) => Some(normalize_sha256(e).ok_or_else(|| DownloadError::BadUrl {
            url: url.to_string(),
            reason: format!("the expected sha256 '{e}' is not 64 hex digits"),
        })?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err(dest))?;
    let job = Job {
        url: parsed,
        dest,
        opts,
        cancel,
        report: Reporter::new(on_progress),
    };
    runtime.block_on(job.run(expected))
}

struct Job<'a> {
    url: Url,
    dest: &'a Path,
    opts: &'a Options,
    cancel: &'a AtomicBool,
    report: Reporter<'a>,
}

/// The `.part` file and what is known about it.
struct Part {
    path: PathBuf,
    file: File,
    /// sha256 of the first `hashed` bytes.
    hasher: Sha256,
    hashed: u64,
    total: Option<u64>,
    /// sha256 the server reported.
    etag: Option<String>,
}

impl Part {
    fn len(&self) -> Result<u64, DownloadError> {
        Ok(self.file.metadata().map_err(io_err(&self.path))?.len())
    }

    /// Empties the file to start over.
    fn restart(&mut self) -> Result<(), DownloadError> {
        self.file.set_len(0).map_err(io_err(&self.path))?;
        self.hasher = Sha256::new();
        self.hashed = 0;
        Ok(())
    }
}

impl Job<'_> {
    async fn run(mut self, expected: Option<String>) -> Result<Downloaded, DownloadError> {
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let path = part_path(self.dest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DownloadError::Busy { path }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        let mut part = Part {
            path,
            file,
            hasher: Sha256::new(),
            hashed: 0,
            total: None,
            etag: None,
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.opts.connect_timeout)
            .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DownloadError::BadUrl {
                url: self.shown_url(),
                reason: format!("cannot set up HTTP: {e}"),
            })?;
        let mut retries = self.opts.retries;
        loop {
            match self.attempt(&client, &mut part).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && retries > 0 => {
                    retries -= 1;
                    let delay = self.opts.retry_delay;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancelled(self.cancel) => return Err(DownloadError::Cancelled { part: part.path }),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.finish(part, expected)
    }

    /// One request: resumes from the `.part`'s length, appends the body until it ends.
    async fn attempt(
        &mut self,
        client: &reqwest::Client,
        part: &mut Part,
    ) -> Result<(), DownloadError> {
        let offset = part.len()?;
        self.report.now(offset, part.total, Phase::Connecting);
        let mut resp = self.get(client, offset, part).await?;
        let start = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = content_range(resp.headers());
                if let Some((_, total)) = range {
                    part.total = total.or(part.total);
                }
                match range {
                    Some((start, _)) if start == offset => start,
                    _ => {
                        part.restart()?;
                        return Err(self.interrupted(
                            0,
                            "the server resumed at the wrong place; starting over",
                        ));
                    }
                }
            }
            StatusCode::OK => {
                // A fresh download, or a server that ignored the range: start over.
                if offset > 0 {
                    part.restart()?;
                }
                part.total = resp.content_length().or(part.total);
                0
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                let total = content_range(resp.headers()).and_then(|(_, t)| t);
                if total == Some(offset) {
                    // The `.part` is already complete.
                    part.total = total;
                    self.rehash(part, offset)?;
                    return Ok(());
                }
                part.restart()?;
                return Err(self.interrupted(
                    0,
                    "the kept partial file is longer than the file; starting over",
                ));
            }
            status => return Err(self.status_error(status)),
        };
        self.rehash(part, start)?;
        part.file
            .seek(SeekFrom::Start(start))
            .map_err(io_err(&part.path))?;
        let mut done = start;
        self.report.now(done, part.total, Phase::Downloading);
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(DownloadError::Cancelled {
                    part: part.path.clone(),
                });
            }
            let chunk = tokio::select! {
                c = tokio::time::timeout(self.opts.stall_timeout, resp.chunk()) => c,
                () = cancelled(self.cancel) => return Err(DownloadError::Cancelled { part: part.path.clone() }),
            };
            let bytes = match chunk {
                Err(_elapsed) => return Err(self.stalled()),
                Ok(Err(e)) => return Err(self.interrupted(done, &error_chain(&e))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => bytes,
            };
            part.file.write_all(&bytes).map_err(io_err(&part.path))?;
            part.hasher.update(&bytes);
            done += bytes.len() as u64;
            part.hashed = done;
            if part.total.is_some_and(|t| done > t) {
                part.restart()?;
                return Err(self.interrupted(
                    0,
                    "the server sent more than the file's size; starting over",
                ));
            }
            self.report.maybe(done, part.total, Phase::Downloading);
        }
        if let Some(total) = part.total.filter(|&t| done < t) {
            return Err(self.interrupted(
                done,
                &format!("the server closed it {} bytes short", total - done),
            ));
        }
        part.total = Some(done);
        Ok(())
    }

    /// Sends the GET (with `Range` when resuming), following redirects by hand so that
    /// Hugging Face's `x-linked-etag` on the redirect is seen.
    async fn get(
        &self,
        client: &reqwest::Client,
        offset: u64,
        part: &mut Part,
    ) -> Result<reqwest::Response, DownloadError> {
        let mut url = self.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = client.get(url.clone());
            if offset > 0 {
                req = req.header(RANGE, format!("bytes={offset}-"));
            }
            let resp = tokio::select! {
                r = tokio::time::timeout(self.opts.stall_timeout, req.send()) => r,
                () = cancelled(self.cancel) => return Err(DownloadError::Cancelled { part: part.path.clone() }),
            };
            let resp = match resp {
                Err(_elapsed) => return Err(self.stalled()),
                Ok(Err(e)) if e.is_connect() => {
                    return Err(DownloadError::Unreachable {
                        host: self.host(),
                        detail: error_chain(&e),
                    });
                }
                Ok(Err(e)) => return Err(self.interrupted(offset, &error_chain(&e))),
                Ok(Ok(resp)) => resp,
            };
            if let Some(etag) = linked_etag(resp.headers()) {
                part.etag = Some(etag);
            }
            if let Some(size) = header_u64(resp.headers(), "x-linked-size") {
                part.total = Some(size);
            }
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok());
            match next {
                Some(next) => url = next,
                None => return Err(self.status_error(resp.status())),
            }
        }
        Err(DownloadError::BadUrl {
            url: self.shown_url(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Brings the running hash up to the first `upto` bytes of the `.part`.
    fn rehash(&mut self, part: &mut Part, upto: u64) -> Result<(), DownloadError> {
        if part.hashed == upto {
            return Ok(());
        }
        part.hasher = Sha256::new();
        part.hashed = 0;
        part.file
            .seek(SeekFrom::Start(0))
            .map_err(io_err(&part.path))?;
        let mut buf = vec![0u8; 1 << 20];
        while part.hashed < upto {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(DownloadError::Cancelled {
                    part: part.path.clone(),
                });
            }
            let want = buf
                .len()
                .min(usize::try_from(upto - part.hashed).unwrap_or(usize::MAX));
            part.file
                .read_exact(&mut buf[..want])
                .map_err(io_err(&part.path))?;
            part.hasher.update(&buf[..want]);
            part.hashed += want as u64;
            self.report
                .maybe(part.hashed, part.total, Phase::Connecting);
        }
        part.file.set_len(upto).map_err(io_err(&part.path))
    }

    /// Checks the sha256 and renames the `.part` to `dest`, or deletes it on a mismatch.
    fn finish(mut self, part: Part, expected: Option<String>) -> Result<Downloaded, DownloadError> {
        let bytes = part.hashed;
        self.report.now(bytes, Some(bytes), Phase::Verifying);
        let found = format!("{:x}", part.hasher.finalize());
        let (want, checked) = match (expected, part.etag) {
            (Some(e), _) => (Some(e), Checked::Expected),
            (None, Some(e)) => (Some(e), Checked::ServerEtag),
            (None, None) => (None, Checked::Unchecked),
        };
        if let Some(want) = want.filter(|w| *w != found) {
            drop(part.file);
            let _ = fs::remove_file(&part.path);
            return Err(DownloadError::ChecksumMismatch {
                file: self.dest.display().to_string(),
                expected: want,
                found,
            });
        }
        part.file.sync_all().map_err(io_err(&part.path))?;
        drop(part.file);
        fs::rename(&part.path, self.dest).map_err(io_err(self.dest))?;
        Ok(Downloaded {
            path: self.dest.to_path_buf(),
            bytes,
            sha256: found,
            checked,
        })
    }

    /// `host` or `host:port` of the URL, for messages.
    fn host(&self) -> String {
        let host = self.url.host_str().unwrap_or("the server");
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// The URL without query or credentials, for messages.
    fn shown_url(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    fn stalled(&self) -> DownloadError {
        DownloadError::Stalled {
            host: self.host(),
            secs: self.opts.stall_timeout.as_secs().max(1),
        }
    }

    fn interrupted(&self, done: u64, detail: &str) -> DownloadError {
        DownloadError::Interrupted {
            host: self.host(),
            done,
            detail: detail.to_string(),
        }
    }

    fn status_error(&self, status: StatusCode) -> DownloadError {
        let url = self.shown_url();
        let hint = match status.as_u16() {
            404 => return DownloadError::NotFound { url },
            401 | 403 => {
                ": the file needs a login or a licence accepted on the website; download it in a browser and open it here"
            }
            429 => ": too many requests; wait a minute and try again",
            500..=599 => ": the server has a problem; try again later",
            _ => "",
        };
        DownloadError::Http {
            url,
            status: status.to_string(),
            hint,
        }
    }
}

/// Calls the progress callback, at most every [`PROGRESS_BYTES`] or [`PROGRESS_INTERVAL`].
struct Reporter<'a> {
    on_progress: &'a mut dyn FnMut(Progress),
    last_at: Instant,
    last_done: u64,
}

impl<'a> Reporter<'a> {
    fn new(on_progress: &'a mut dyn FnMut(Progress)) -> Self {
        Self {
            on_progress,
            last_at: Instant::now(),
            last_done: 0,
        }
    }

    fn now(&mut self, done: u64, total: Option<u64>, phase: Phase) {
        self.last_at = Instant::now();
        self.last_done = done;
        (self.on_progress)(Progress { done, total, phase });
    }

    fn maybe(&mut self, done: u64, total: Option<u64>, phase: Phase) {
        if done.abs_diff(self.last_done) >= PROGRESS_BYTES
            || self.last_at.elapsed() >= PROGRESS_INTERVAL
        {
            self.now(done, total, phase);
        }
    }
}

/// Resolves once `flag` is set.
async fn cancelled(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// `(start, total)` from `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.trim().strip_prefix("bytes")?.trim().split_once('/')?;
    let total = total.trim().parse().ok();
    let start = match range.trim() {
        "*" => 0,
        r => r.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((start, total))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The sha256 in Hugging Face's `x-linked-etag` (`"<hex>"`, maybe weak); `None` when absent or
/// not a sha256 (a git blob id for a small file).
fn linked_etag(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-linked-etag")?.to_str().ok()?;
    normalize_sha256(v.trim().trim_start_matches("W/").trim_matches('"'))
}

/// Lowercase hex when `s` is 64 hex digits.
fn normalize_sha256(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// An error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
