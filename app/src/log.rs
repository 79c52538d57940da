//! Diagnostics: the `tracing` subscriber every command installs. `HEARTH_LOG` picks what is
//! written to stderr (`RUST_LOG` syntax: `debug`, `hearth_engine=info`, `trace`, …); by default
//! the app logs at `info` and the engine and every other crate at `warn`. What a command prints for its
//! user (answers, stats, prompts) is its output, not a diagnostic, and does not go through here.
//! Nothing logs the cloud API key: `ApiKey`'s `Debug` is redacted and no event records it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when `HEARTH_LOG` is unset.
pub const DEFAULT_FILTER: &str = "warn,hearth=info,hearth_engine=warn";

/// Installs the stderr subscriber. A `HEARTH_LOG` that does not parse is reported and the default
/// used, so a typo never silences the diagnostics.
pub fn init() {
    let (filter, problem) = match std::env::var("HEARTH_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "HEARTH_LOG={spec:?} is not a log filter ({e}); using {DEFAULT_FILTER}"
                )),
            ),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init()
        .is_ok();
    if let (true, Some(problem)) = (installed, problem) {
        tracing::warn!("{problem}");
    }
}
