//! Where an answer runs: on the local model or on a cloud endpoint.
//!
//! - [`RouteMode`] is the user's toggle: `Local` never contacts the network, `Cloud` always asks
//!   the configured endpoint, `Auto` decides per question. Every answer records its [`Route`]:
//!   where it ran and why, in words ("cloud: local model unsure (risk 0.82 >= 0.61)").
//! - `Auto` uses signals that cost nothing extra: no local model loaded, a prompt longer than
//!   the local context, and the local model's own uncertainty, read by a [`probe`] from the
//!   hidden state prefill computes anyway. If the cloud fails before its first token, the
//!   answer falls back to the local model with the reason shown. The decisions run on the engine
//!   thread (`api::worker`), so the app, `hearth run` and `hearth serve` route alike.
//! - [`cloud`] is the client for OpenAI-compatible endpoints; [`eval`] measures a router on
//!   graded question sets (`hearth eval-router`), and [`probe`] fits and holds its signal
//!   (`hearth fit-router`).

pub mod cloud;
pub mod decide;
pub mod eval;
pub mod probe;

/// The routing toggle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// Only the local model; never contacts the network.
    #[default]
    Local,
    /// Per question: local when the local model is confident, else the cloud.
    Auto,
    /// Only the cloud endpoint.
    Cloud,
}

impl RouteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::Local => "local",
            RouteMode::Auto => "auto",
            RouteMode::Cloud => "cloud",
        }
    }
}

/// Where an answer ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Local,
    Cloud,
}

/// Where an answer ran and why.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub target: Target,
    /// Starts with "local: " or "cloud: ".
    pub reason: String,
    /// The router's risk score for the question (probability of a wrong local answer), when the
    /// probe ran.
    pub risk: Option<f64>,
}

impl Route {
    pub fn local(reason: impl Into<String>) -> Route {
        Route {
            target: Target::Local,
            reason: format!("local: {}", reason.into()),
            risk: None,
        }
    }

    pub fn cloud(reason: impl Into<String>) -> Route {
        Route {
            target: Target::Cloud,
            reason: format!("cloud: {}", reason.into()),
            risk: None,
        }
    }
}
