//! API keys: a type that cannot be printed or serialized, where keys come from (the OS keychain,
//! then `HEARTH_CLOUD_API_KEY`, then memory), and the warning before one would travel over plain
//! http.
//!
//! Keychain failures are never fatal: a machine without a keychain (CI, a bare server) simply
//! falls through to the next source, and the failure is reported beside the result. Keychain
//! calls may block (an unlock prompt, a slow D-Bus), so make them off the UI thread.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;
use reqwest::header::HeaderValue;

/// The keychain service name every Hearth key is stored under.
pub const KEYCHAIN_SERVICE: &str = "hearth";
/// The environment variable read when the keychain has no key.
pub const API_KEY_ENV: &str = "HEARTH_CLOUD_API_KEY";

/// A secret API key. Its `Debug` and `Display` print a redaction, and it implements no
/// serialization, so it cannot end up in logs, error messages or conversation files by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a pasted newline) is dropped. `None` for an empty key.
    pub fn new(key: impl Into<String>) -> Option<ApiKey> {
        let key = key.into();
        let trimmed = key.trim();
        (!trimmed.is_empty()).then(|| ApiKey(trimmed.to_owned()))
    }

    /// The key itself, for the one place that needs it (the `Authorization` header) or a keychain.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// `Authorization: Bearer …`, marked sensitive so HTTP internals never print it.
    pub(crate) fn bearer_header(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Replaces every occurrence of the key in `text` (a server may echo it back).
    pub(crate) fn scrub(&self, text: &str) -> String {
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Keychain,
    Environment,
    Memory,
}

/// A key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    pub key: ApiKey,
    pub source: KeySource,
}

/// What [`resolve_api_key`] found: maybe a key, and why the keychain could not be asked, if so.
#[derive(Debug)]
pub struct KeyLookup {
    pub resolved: Option<ResolvedKey>,
    /// The keychain failed (no keychain on this machine, locked, …); the other sources were tried.
    pub keychain_error: Option<KeychainError>,
}

/// The OS keychain could not be used. Never carries the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeychainError {
    #[error("{0}")]
    Endpoint(String),
    #[error("keychain (service {service:?}, user {user:?}): {message}")]
    Store {
        service: &'static str,
        user: String,
        message: String,
    },
}

/// The keychain user name for an endpoint: its host, with the port when one is given
/// (`api.openai.com`, `127.0.0.1:8080`).
pub fn keychain_user(base_url: &str) -> Result<String, KeychainError> {
    let url = Url::parse(base_url)
        .map_err(|e| KeychainError::Endpoint(format!("invalid cloud endpoint: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| KeychainError::Endpoint("cloud endpoint has no host".into()))?;
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

fn entry(base_url: &str) -> Result<(keyring::Entry, String), KeychainError> {
    let user = keychain_user(base_url)?;
    let entry = keyring::Entry::new(KEYCHAIN_SERVICE, &user).map_err(|e| store_error(&user, &e))?;
    Ok((entry, user))
}

fn store_error(user: &str, error: &keyring::Error) -> KeychainError {
    // The encoding errors hold the stored bytes; their text never does, but say it ourselves.
    let message = match error {
        keyring::Error::BadEncoding(_) => "the stored key is not UTF-8".to_owned(),
        keyring::Error::BadDataFormat(..) => "the stored key has an unexpected format".to_owned(),
        // The store failed to start (no Secret Service on this desktop, say): say why.
        keyring::Error::NoDefaultStore => match keyring::Entry::store_status() {
            Err(why) if !matches!(why, keyring::Error::NoDefaultStore) => {
                format!("no OS keychain is available ({why})")
            }
            _ => "no OS keychain is available".to_owned(),
        },
        other => other.to_string(),
    };
    KeychainError::Store {
        service: KEYCHAIN_SERVICE,
        user: user.to_owned(),
        message,
    }
}

/// The key stored in the OS keychain for this endpoint, if any.
pub fn load_from_keychain(base_url: &str) -> Result<Option<ApiKey>, KeychainError> {
    let (entry, user) = entry(base_url)?;
    match entry.get_password() {
        Ok(key) => Ok(ApiKey::new(key)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(store_error(&user, &e)),
    }
}

/// Stores the key in the OS keychain for this endpoint.
pub fn save_to_keychain(base_url: &str, key: &ApiKey) -> Result<(), KeychainError> {
    let (entry, user) = entry(base_url)?;
    entry
        .set_password(key.expose_secret())
        .map_err(|e| store_error(&user, &e))
}

/// Removes this endpoint's key from the OS keychain (no error when there was none).
pub fn delete_from_keychain(base_url: &str) -> Result<(), KeychainError> {
    let (entry, user) = entry(base_url)?;
    match entry.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(store_error(&user, &e)),
    }
}

/// Finds the key for an endpoint: the OS keychain first, then `HEARTH_CLOUD_API_KEY`, then the
/// key the caller holds in memory. A failing keychain is reported, not fatal.
pub fn resolve_api_key(base_url: &str, in_memory: Option<ApiKey>) -> KeyLookup {
    resolve_with(
        || load_from_keychain(base_url),
        std::env::var(API_KEY_ENV).ok(),
        in_memory,
    )
}

/// [`resolve_api_key`] with its sources passed in (so tests need no keychain and no env).
pub(crate) fn resolve_with(
    keychain: impl FnOnce() -> Result<Option<ApiKey>, KeychainError>,
    env: Option<String>,
    in_memory: Option<ApiKey>,
) -> KeyLookup {
    let (from_keychain, keychain_error) = match keychain() {
        Ok(key) => (key, None),
        Err(e) => (None, Some(e)),
    };
    let resolved = from_keychain
        .map(|key| (key, KeySource::Keychain))
        .or_else(|| {
            env.and_then(ApiKey::new)
                .map(|k| (k, KeySource::Environment))
        })
        .or_else(|| in_memory.map(|k| (k, KeySource::Memory)))
        .map(|(key, source)| ResolvedKey { key, source });
    KeyLookup {
        resolved,
        keychain_error,
    }
}

/// A warning when a key sent to `base_url` would travel unencrypted: plain `http://` to a host
/// that is not loopback (127.0.0.0/8, ::1, `localhost`). `None` when it is safe.
pub fn plain_http_warning(base_url: &str) -> Option<String> {
    let url = Url::parse(base_url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    if is_loopback_host(&url) {
        return None;
    }
    Some(format!(
        "the API key would be sent unencrypted over plain http to {host}; use https:// for this \
         endpoint"
    ))
}

/// Whether the URL's host is this machine: 127.0.0.0/8, ::1 (also IPv4-mapped), `localhost`.
pub(crate) fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed: `[::1]`.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}
