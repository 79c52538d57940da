//! The files: where Hearth keeps its data ([`DataDirs`]), atomic writes ([`atomic_write`]), and
//! the conversation [`Store`]: one `conversations/<id>.json` per conversation, plus `trash/`.
//!
//! Nothing the user wrote is lost (ARCHITECTURE invariant 7):
//! - A write goes to a temporary file in the same folder, is flushed and synced, renamed over the
//!   target, and the folder is synced: a crash leaves the old file or the new one, never half.
//! - A file that cannot be read or parsed is reported as a [`Problem`] and skipped; the store
//!   then refuses to save over it or delete it (the user may want it back by hand).
//! - Deleting moves the file to `trash/<deleted unix ms>-<id>.json`, so [`Store::undo_delete`]
//!   can bring it back; entries older than [`TRASH_DAYS`] days are purged when the store opens.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Conversation, FORMAT_VERSION, now_ms};

/// The settings file's name (in the config folder).
pub const SETTINGS_FILE: &str = "settings.json";
/// Overrides both data folders (conversations and settings): tests and portable installs.
pub const DATA_DIR_ENV: &str = "HEARTH_DATA_DIR";

/// Days a deleted conversation stays in the trash.
pub const TRASH_DAYS: u64 = 30;

/// The largest conversation file read (a bigger one is reported, not loaded).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Temporary files of [`atomic_write`]: `.hearth-XXXXXX.tmp`, never `*.json`.
const TEMP_PREFIX: &str = ".hearth-";
const TEMP_SUFFIX: &str = ".tmp";

/// Temporary files older than this, left by a crash mid-write, are removed on open.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Where Hearth keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirs {
    /// Conversations (and their trash).
    pub data: PathBuf,
    /// `settings.json`.
    pub config: PathBuf,
}

impl DataDirs {
    /// `HEARTH_DATA_DIR` for both when set, else the platform's folders for "Hearth"; `None`
    /// when the platform has no home folder (the app then asks for `HEARTH_DATA_DIR`).
    pub fn from_env() -> Option<DataDirs> {
        Self::resolve(std::env::var_os(DATA_DIR_ENV))
    }

    /// [`Self::from_env`] with the variable's value given (empty counts as unset).
    pub fn resolve(overridden: Option<OsString>) -> Option<DataDirs> {
        if let Some(dir) = overridden.filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return Some(DataDirs {
                data: dir.clone(),
                config: dir,
            });
        }
        let dirs = directories::ProjectDirs::from("", "", "Hearth")?;
        Some(DataDirs {
            data: dirs.data_dir().to_path_buf(),
            config: dirs.config_dir().to_path_buf(),
        })
    }

    pub fn settings_path(&self) -> PathBuf {
        self.config.join(SETTINGS_FILE)
    }
}

/// A file operation failed; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is not valid JSON for this file: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} has format version {}, this Hearth reads version {FORMAT_VERSION}", path.display(), found.map_or("none".to_string(), |v| v.to_string()))]
    Version { path: PathBuf, found: Option<u64> },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{} could not be read, so Hearth leaves it as it is (fix or move it by hand)", path.display())]
    Unreadable { path: PathBuf },
    #[error(
        "{:?} is not a conversation id (letters, digits, '-' and '_' only)",
        id
    )]
    BadId { id: String },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("no deleted conversation {id} in {}", dir.display())]
    NotInTrash { id: String, dir: PathBuf },
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// Names the file.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Problem {
    fn new(path: &Path, error: &StoreError) -> Problem {
        Problem {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same folder, flushed and
/// synced, renamed over `path`, then the folder synced (on Unix), so that after a crash `path`
/// holds either its old content or `bytes`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(io_error("create a temporary file beside", path))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.flush())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_error("write", path))?;
    // On failure the temporary file is removed when `persist`'s error drops it.
    tmp.persist(path)
        .map_err(|e| io_error("replace", path)(e.error))?;
    sync_dir(dir).map_err(io_error("sync the folder of", path))
}

/// Makes a rename in `dir` durable (Unix; elsewhere the rename itself is).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A new conversation id: the time in ms (13 digits, so ids sort by creation) and a random
/// suffix, e.g. `1754550000123-k3f9qz`.
pub fn new_id() -> String {
    let suffix: String = (0..6)
        .map(|_| {
            let c = fastrand::u8(0..36);
            char::from(if c < 10 { b'0' + c } else { b'a' + c - 10 })
        })
        .collect();
    format!("{:013}-{suffix}", now_ms())
}

/// Ids name files, so only plain names are allowed.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads and checks one conversation file.
pub fn read_conversation(path: &Path) -> Result<Conversation, StoreError> {
    let len = fs::metadata(path).map_err(io_error("read", path))?.len();
    if len > MAX_FILE_BYTES {
        return Err(StoreError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is too large for a conversation file"),
        });
    }
    let bytes = fs::read(path).map_err(io_error("read", path))?;
    let parse = |source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(parse)?;
    let found = value.get("version").and_then(serde_json::Value::as_u64);
    if found != Some(u64::from(FORMAT_VERSION)) {
        return Err(StoreError::Version {
            path: path.to_path_buf(),
            found,
        });
    }
    let mut conversation: Conversation = serde_json::from_value(value).map_err(parse)?;
    conversation
        .validate()
        .map_err(|reason| StoreError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
    Ok(conversation)
}

/// The conversation files in a data folder.
#[derive(Debug)]
pub struct Store {
    conversations: PathBuf,
    trash: PathBuf,
    /// Files that failed to read or parse: never written over or deleted.
    unreadable: HashSet<PathBuf>,
    /// Files known to hold a conversation (read, written or checked by this store).
    known: HashSet<PathBuf>,
}

impl Store {
    /// Opens (creating) `dir/conversations` and `dir/trash`, purges trash entries older than
    /// [`TRASH_DAYS`] days and temporary files a crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        let store = Store {
            conversations: dir.join("conversations"),
            trash: dir.join("trash"),
            unreadable: HashSet::new(),
            known: HashSet::new(),
        };
        for d in [&store.conversations, &store.trash] {
            fs::create_dir_all(d).map_err(io_error("create the folder", d))?;
        }
        store.purge_trash(now_ms());
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// The folder holding the conversation files.
    pub fn conversations_dir(&self) -> &Path {
        &self.conversations
    }

    #[cfg(test)]
    pub fn trash_dir(&self) -> &Path {
        &self.trash
    }

    /// The file of conversation `id`.
    pub fn path_of(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !is_valid_id(id) {
            return Err(StoreError::BadId { id: id.to_string() });
        }
        Ok(self.conversations.join(format!("{id}.json")))
    }

    /// An empty conversation whose id names no file here, in the trash or among the problems.
    pub fn new_conversation(&self) -> Conversation {
        let trashed = self.trash_entries();
        loop {
            let id = new_id();
            let path = self.conversations.join(format!("{id}.json"));
            let taken = path.exists()
                || self.unreadable.contains(&path)
                || trashed.iter().any(|(_, t, _)| *t == id);
            if !taken {
                return Conversation::new(id);
            }
        }
    }

    /// Every conversation that reads, newest first (by `updated`), and a [`Problem`] for each
    /// file that does not (those are skipped and left alone).
    pub fn load_all(&mut self) -> (Vec<Conversation>, Vec<Problem>) {
        let mut conversations = Vec::new();
        let mut problems = Vec::new();
        let entries = match fs::read_dir(&self.conversations) {
            Ok(entries) => entries,
            Err(e) => {
                let error = io_error("list", &self.conversations)(e);
                problems.push(Problem::new(&self.conversations, &error));
                return (conversations, problems);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_conversation_name(p) && !p.is_dir())
            .collect();
        paths.sort();
        for path in paths {
            match self.read_checked(&path) {
                Ok(c) => conversations.push(c),
                Err(e) => problems.push(Problem::new(&path, &e)),
            }
        }
        conversations.sort_by(|a, b| b.updated.cmp(&a.updated).then_with(|| b.id.cmp(&a.id)));
        (conversations, problems)
    }

    /// Reads `path`, checks that its id is its name, and records whether it read.
    fn read_checked(&mut self, path: &Path) -> Result<Conversation, StoreError> {
        let result = read_conversation(path).and_then(|c| {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if c.id == stem && is_valid_id(&c.id) {
                Ok(c)
            } else {
                Err(StoreError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("holds conversation {:?}, not {stem:?}", c.id),
                })
            }
        });
        match &result {
            Ok(_) => {
                self.unreadable.remove(path);
                self.known.insert(path.to_path_buf());
            }
            Err(_) => {
                self.known.remove(path);
                self.unreadable.insert(path.to_path_buf());
            }
        }
        result
    }

    /// Refuses a file that did not read; checks one this store has not seen yet.
    fn check_writable(&mut self, path: &Path) -> Result<(), StoreError> {
        if !self.unreadable.contains(path) && (self.known.contains(path) || !path.exists()) {
            return Ok(());
        }
        if self.unreadable.contains(path) || self.read_checked(path).is_err() {
            return Err(StoreError::Unreadable {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Writes `conversation` to its file atomically. The app calls this after every finished
    /// message (the user's before generation starts). Refuses a file that could not be read.
    pub fn save(&mut self, conversation: &Conversation) -> Result<(), StoreError> {
        let path = self.path_of(&conversation.id)?;
        self.check_writable(&path)?;
        let json = serde_json::to_vec_pretty(conversation)
            .map_err(|e| io_error("encode", &path)(io::Error::other(e)))?;
        atomic_write(&path, &json)?;
        self.known.insert(path);
        Ok(())
    }

    /// Moves conversation `id` to the trash; `false` when it had no file (never saved).
    pub fn delete(&mut self, id: &str) -> Result<bool, StoreError> {
        let path = self.path_of(id)?;
        if !path.exists() {
            return Ok(false);
        }
        self.check_writable(&path)?;
        let mut deleted = now_ms();
        let mut target = self.trash.join(format!("{deleted:013}-{id}.json"));
        while target.exists() {
            deleted += 1;
            target = self.trash.join(format!("{deleted:013}-{id}.json"));
        }
        fs::rename(&path, &target).map_err(io_error("move to the trash", &path))?;
        self.known.remove(&path);
        sync_dir(&self.trash).map_err(io_error("sync", &self.trash))?;
        sync_dir(&self.conversations).map_err(io_error("sync", &self.conversations))?;
        Ok(true)
    }

    /// Brings back the conversation `id` deleted last and returns it.
    pub fn undo_delete(&mut self, id: &str) -> Result<Conversation, StoreError> {
        let path = self.path_of(id)?;
        let Some((_, _, entry)) = self
            .trash_entries()
            .into_iter()
            .filter(|(_, t, _)| t == id)
            .max_by_key(|(deleted, _, _)| *deleted)
        else {
            return Err(StoreError::NotInTrash {
                id: id.to_string(),
                dir: self.trash.clone(),
            });
        };
        if path.exists() {
            return Err(StoreError::Exists { path });
        }
        fs::rename(&entry, &path).map_err(io_error("restore", &entry))?;
        sync_dir(&self.conversations).map_err(io_error("sync", &self.conversations))?;
        sync_dir(&self.trash).map_err(io_error("sync", &self.trash))?;
        self.read_checked(&path)
    }

    /// The trash's entries: (deleted unix ms, id, path).
    fn trash_entries(&self) -> Vec<(u64, String, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.trash) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?;
                let (deleted, id) = name.strip_suffix(".json")?.split_once('-')?;
                let deleted = deleted.parse().ok()?;
                let id = id.to_string();
                Some((deleted, id, path))
            })
            .collect()
    }

    /// Removes trash entries deleted more than [`TRASH_DAYS`] days before `now` (unix ms);
    /// returns how many. Files whose names are not trash entries are left alone.
    pub fn purge_trash(&self, now: u64) -> usize {
        let max_age = TRASH_DAYS * 24 * 3600 * 1000;
        self.trash_entries()
            .into_iter()
            .filter(|(deleted, _, _)| now.saturating_sub(*deleted) > max_age)
            .filter(|(_, _, path)| fs::remove_file(path).is_ok())
            .count()
    }

    /// Removes `.hearth-*.tmp` files older than an hour (a crash between create and rename).
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.conversations) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP);
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) && stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// `*.json`, not hidden.
fn is_conversation_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}
