//! A loopback HTTP/1.1 file server for the download tests: serves files with `Range` support
//! (or ignoring it), can drop the connection or stall midway, redirects the way Hugging Face does
//! (with an `x-linked-etag` that may lie), and records every request it saw.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One file the server serves.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub data: Vec<u8>,
    /// Answer `Range` with 206; when false, always send the whole file with 200.
    pub honor_range: bool,
    /// For successive requests: close the connection after this many body bytes.
    pub drops: VecDeque<usize>,
    /// After this many body bytes (of every request), go silent for this long.
    pub stall: Option<(usize, Duration)>,
    /// Pause between 16 KiB chunks.
    pub chunk_delay: Duration,
}

impl Served {
    pub fn file(data: Vec<u8>) -> Self {
        Self {
            data,
            honor_range: true,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
enum Route {
    File(Served),
    /// 302 to another path, with these extra headers.
    Redirect {
        to: String,
        headers: Vec<(String, String)>,
    },
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (Arc::clone(&routes), Arc::clone(&seen));
        std::thread::Builder::new()
            .name("test-http".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (r, s) = (Arc::clone(&r), Arc::clone(&s));
                    std::thread::spawn(move || handle(stream, &r, &s));
                }
            })
            .unwrap();
        Self { base, routes, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn serve(&self, path: &str, served: Served) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.into(), Route::File(served));
    }

    /// Redirects `from` to `to` with `x-linked-etag: "<etag>"` and `x-linked-size`, as Hugging
    /// Face's `resolve` URLs do.
    pub fn redirect(&self, from: &str, to: &str, etag: &str, size: usize) {
        let headers = vec![
            ("x-linked-etag".into(), format!("\"{etag}\"")),
            ("x-linked-size".into(), size.to_string()),
        ];
        self.routes.lock().unwrap().insert(
            from.into(),
            Route::Redirect {
                to: to.into(),
                headers,
            },
        );
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn handle(stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let route = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(Route::File(f)) => {
                let drop_after = f.drops.pop_front();
                Some((Route::File(f.clone()), drop_after))
            }
            Some(r) => Some((r.clone(), None)),
            None => None,
        }
    };
    let mut out = stream;
    match route {
        None => {
            let _ = out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
        Some((Route::Redirect { to, headers }, _)) => {
            let mut head = format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\n");
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = out.write_all(head.as_bytes());
        }
        Some((Route::File(f), drop_after)) => send_file(&mut out, &f, range.as_deref(), drop_after),
    }
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

fn send_file(out: &mut TcpStream, f: &Served, range: Option<&str>, drop_after: Option<usize>) {
    let len = f.data.len();
    let start = range
        .filter(|_| f.honor_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let head = match start {
        Some(s) if s >= len => {
            let _ = write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        Some(s) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n\
             Content-Length: {}\r\n",
            len - 1,
            len - s
        ),
        None => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
    };
    let start = start.unwrap_or(0);
    if out
        .write_all(format!("{head}Accept-Ranges: bytes\r\nConnection: close\r\n\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    let body = &f.data[start..];
    let limit = drop_after.unwrap_or(body.len()).min(body.len());
    let mut sent = 0;
    while sent < limit {
        if let Some((at, pause)) = f.stall
            && sent >= at
        {
            std::thread::sleep(pause);
            return;
        }
        let mut end = (sent + (16 << 10)).min(limit);
        if let Some((at, _)) = f.stall.filter(|(at, _)| *at > sent) {
            end = end.min(at);
        }
        if out.write_all(&body[sent..end]).is_err() {
            return;
        }
        sent = end;
        if !f.chunk_delay.is_zero() {
            std::thread::sleep(f.chunk_delay);
        }
    }
    if let Some((at, pause)) = f.stall
        && sent >= at
        && sent < body.len()
    {
        std::thread::sleep(pause);
    }
}
