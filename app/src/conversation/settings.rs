//! The persisted settings: `settings.json` in the config folder ([`super::DataDirs::config`]).
//!
//! Every field has a default (`#[serde(default)]`), so an older or partial file loads and
//! unknown fields are ignored. A file that does not parse is reported, moved aside to
//! `settings.json.corrupt` (never lost) and the defaults are used. Writes are atomic
//! ([`super::store::atomic_write`]). The cloud API key is never here: it lives in the OS keychain
//! (`hearth_engine::route::cloud::key`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hearth_engine::api::{BackendKind, ChatOptions, EngineConfig, GenerateParams};
use hearth_engine::route::RouteMode;
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::{ContextPolicy, Speculation};
use serde::{Deserialize, Serialize};

use super::store::{Problem, StoreError, atomic_write};

/// The settings file format version this code writes.
pub const SETTINGS_VERSION: u32 = 1;

/// The text size range the app offers.
pub const TEXT_SCALE_RANGE: std::ops::RangeInclusive<f32> = 0.5..=3.0;

/// Which compute backend runs the local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendPreference {
    /// The GPU when there is a hardware adapter, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl BackendPreference {
    pub fn kind(self) -> BackendKind {
        match self {
            BackendPreference::Auto => BackendKind::Auto,
            BackendPreference::Cpu => BackendKind::Cpu,
            BackendPreference::Gpu => BackendKind::Gpu,
        }
    }
}

/// The app's colors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Follow the operating system.
    #[default]
    System,
    Light,
    Dark,
}

/// How hard gpt-oss thinks (its template's `reasoning_effort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

/// How answers are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    /// `None`: a new seed for every answer.
    pub seed: Option<u64>,
    /// The most tokens of one answer.
    pub max_tokens: usize,
}

impl Default for Sampling {
    /// llama.cpp's sampling defaults ([`SamplerConfig::default`]), answers up to 2048 tokens.
    fn default() -> Self {
        let s = SamplerConfig::default();
        Sampling {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            seed: None,
            max_tokens: 2048,
        }
    }
}

impl Sampling {
    /// The engine's sampler settings (a random seed when none is set).
    pub fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed.unwrap_or_else(|| fastrand::u64(..)),
            ..SamplerConfig::default()
        }
    }
}

/// Everything the app remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub version: u32,
    /// For conversations without their own.
    pub system_prompt: String,
    pub sampling: Sampling,
    /// What a conversation longer than the context becomes.
    pub context: ContextPolicy,
    pub speculative: bool,
    /// Whether reasoning models think before they answer (off: templates that read
    /// `enable_thinking` are told not to; gpt-oss, which always thinks, is asked for low effort).
    pub thinking: bool,
    /// gpt-oss's reasoning effort while thinking is on (`None`: the template's default).
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Compute threads (`None`: the backend's default).
    pub threads: Option<usize>,
    pub backend: BackendPreference,
    pub route: RouteMode,
    /// An OpenAI-compatible endpoint, e.g. `https://api.openai.com/v1`.
    pub cloud_url: Option<String>,
    pub cloud_model: Option<String>,
    pub theme: Theme,
    /// Text size, 1 = normal ([`TEXT_SCALE_RANGE`]).
    pub text_scale: f32,
    /// The model opened last, opened again on start.
    pub last_model: Option<PathBuf>,
    /// Where to look for models (`None`: the default models folder).
    pub models_dir: Option<PathBuf>,
}

impl Settings {
    /// How an answer is generated under these settings: the one place the window and `hearth
    /// chat` take their request parameters from (sampling, answer length, context policy,
    /// speculation, route, thinking).
    pub fn generate_params(&self) -> GenerateParams {
        GenerateParams {
            speculation: if self.speculative {
                Speculation::PROMPT_LOOKUP
            } else {
                Speculation::Off
            },
            max_tokens: self.sampling.max_tokens.max(1),
            sampler: self.sampling.sampler_config(),
            context: self.context,
            route: self.route,
            chat: self.chat_options(),
            ..GenerateParams::default()
        }
    }

    /// Thinking on or off: on leaves the template's default (`enable_thinking: None`), off sends
    /// `Some(false)` and asks gpt-oss for its lowest effort.
    pub fn chat_options(&self) -> ChatOptions {
        let effort = if self.thinking {
            self.reasoning_effort
        } else {
            Some(ReasoningEffort::Low)
        };
        ChatOptions {
            enable_thinking: (!self.thinking).then_some(false),
            reasoning_effort: effort.map(|e| e.as_str().to_string()),
            ..ChatOptions::default()
        }
    }

    /// The engine these settings ask for (backend and threads; the cloud client is added by the
    /// caller, which may have to ask the keychain): the window's one place, at start and on
    /// "Reload model".
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            backend: self.backend.kind(),
            threads: self.threads,
            ..EngineConfig::default()
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            version: SETTINGS_VERSION,
            system_prompt: "You are a helpful assistant.".to_string(),
            sampling: Sampling::default(),
            context: ContextPolicy::DropMiddle,
            speculative: false,
            thinking: true,
            reasoning_effort: None,
            threads: None,
            backend: BackendPreference::Auto,
            route: RouteMode::Local,
            cloud_url: None,
            cloud_model: None,
            theme: Theme::System,
            text_scale: 1.0,
            last_model: None,
            models_dir: None,
        }
    }
}

impl Settings {
    /// The settings in `path`: the defaults when there is no file; when it cannot be read or
    /// parsed, the defaults and a [`Problem`] (a file that does not parse is first moved to
    /// `<path>.corrupt`, or `<path>.corrupt-<unix ms>` if that exists).
    pub fn load(path: &Path) -> (Settings, Option<Problem>) {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (Settings::default(), None),
            Err(source) => {
                let error = StoreError::Io {
                    what: "read",
                    path: path.to_path_buf(),
                    source,
                };
                return (Settings::default(), Some(problem(path, error.to_string())));
            }
        };
        let error = match serde_json::from_slice::<Settings>(&bytes) {
            Ok(settings) if settings.version <= SETTINGS_VERSION => {
                return (settings.normalized(), None);
            }
            Ok(settings) => StoreError::Version {
                path: path.to_path_buf(),
                found: Some(u64::from(settings.version)),
            },
            Err(source) => StoreError::Parse {
                path: path.to_path_buf(),
                source,
            },
        };
        let message = match set_aside(path) {
            Ok(kept) => format!(
                "{error}; kept it as {} and used the defaults",
                kept.display()
            ),
            Err(e) => format!("{error}; using the defaults ({e})"),
        };
        (Settings::default(), Some(problem(path, message)))
    }

    /// Writes the settings to `path` atomically (creating its folder).
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                what: "create the folder",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| StoreError::Io {
            what: "encode",
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        json.push(b'\n');
        atomic_write(path, &json)
    }

    /// Values the app cannot use replaced: a text scale out of range or not a number, sampling
    /// numbers that are not numbers, zero tokens or threads.
    pub fn normalized(mut self) -> Settings {
        let defaults = Settings::default();
        self.version = SETTINGS_VERSION;
        if !self.text_scale.is_finite() {
            self.text_scale = defaults.text_scale;
        }
        self.text_scale = self
            .text_scale
            .clamp(*TEXT_SCALE_RANGE.start(), *TEXT_SCALE_RANGE.end());
        let s = &mut self.sampling;
        let d = &defaults.sampling;
        for (value, default) in [
            (&mut s.temperature, d.temperature),
            (&mut s.top_p, d.top_p),
            (&mut s.min_p, d.min_p),
            (&mut s.repeat_penalty, d.repeat_penalty),
        ] {
            if !value.is_finite() {
                *value = default;
            }
        }
        if s.max_tokens == 0 {
            s.max_tokens = d.max_tokens;
        }
        if self.threads == Some(0) {
            self.threads = None;
        }
        self
    }
}

fn problem(path: &Path, message: String) -> Problem {
    Problem {
        path: path.to_path_buf(),
        message,
    }
}

/// Moves a settings file that does not parse out of the way, never over another file.
fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let mut kept = path.as_os_str().to_owned();
    kept.push(".corrupt");
    let mut kept = PathBuf::from(kept);
    if kept.exists() {
        let mut unique = kept.clone().into_os_string();
        unique.push(format!("-{}", super::now_ms()));
        kept = PathBuf::from(unique);
    }
    if kept.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", kept.display()),
        ));
    }
    fs::rename(path, &kept)?;
    Ok(kept)
}
