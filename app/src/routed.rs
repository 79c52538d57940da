//! The route options every answering command takes (`--route local|auto|cloud`, the cloud
//! endpoint, the router probe) and the cloud client and probe they name.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use hearth_engine::api::RouteMode;
use hearth_engine::route::cloud::{self, CloudClient, CloudConfig};
use hearth_engine::route::probe::Probe;

use crate::commands::BadInput;

/// The route options of `hearth run` (and the others that answer questions).
#[derive(Debug, Clone, clap::Args)]
pub struct RouteArgs {
    /// Where answers run: `local` never contacts the network; `cloud` asks the endpoint;
    /// `auto` asks it only when the local model is unsure (or cannot take the prompt).
    #[arg(long, value_enum, default_value_t = Route::Local)]
    pub route: Route,
    /// The OpenAI-compatible endpoint's base URL (e.g. https://api.openai.com/v1). The API key
    /// comes from the OS keychain or HEARTH_CLOUD_API_KEY.
    #[arg(long, env = "HEARTH_CLOUD_URL")]
    pub cloud_url: Option<String>,
    /// The model name at the endpoint.
    #[arg(long, env = "HEARTH_CLOUD_MODEL", default_value = "gpt-4o-mini")]
    pub cloud_model: String,
    /// A router probe from `hearth fit-router` (default: the one Hearth ships for the model).
    #[arg(long)]
    pub router_probe: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Route {
    Local,
    Auto,
    Cloud,
}

impl RouteArgs {
    pub fn mode(&self) -> RouteMode {
        match self.route {
            Route::Local => RouteMode::Local,
            Route::Auto => RouteMode::Auto,
            Route::Cloud => RouteMode::Cloud,
        }
    }

    /// The cloud client these options name (none with `local`, or without a URL in `auto`).
    pub fn cloud_client(&self) -> Result<Option<Arc<CloudClient>>> {
        let Some(url) = &self.cloud_url else {
            return match self.route {
                Route::Cloud => Err(BadInput(
                    "--route cloud needs --cloud-url (or HEARTH_CLOUD_URL)".into(),
                )
                .into()),
                Route::Auto => {
                    tracing::warn!("no --cloud-url: auto answers everything locally");
                    Ok(None)
                }
                Route::Local => Ok(None),
            };
        };
        if self.route == Route::Local {
            return Ok(None);
        }
        let lookup = cloud::resolve_api_key(url, None);
        if let Some(e) = &lookup.keychain_error {
            tracing::warn!("the OS keychain was not available ({e}); using the environment");
        }
        let config = CloudConfig {
            api_key: lookup.resolved.map(|r| r.key),
            ..CloudConfig::new(url.clone(), self.cloud_model.clone())
        };
        let client = CloudClient::new(config).map_err(|e| BadInput(e.to_string()))?;
        if let Some(warning) = client.key_warning() {
            tracing::warn!("{warning}");
        }
        Ok(Some(Arc::new(client)))
    }

    pub fn probe(&self) -> Result<Option<Probe>> {
        let Some(path) = &self.router_probe else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
        Ok(Some(Probe::from_json(&text).map_err(|e| {
            BadInput(format!("{}: {e}", path.display()))
        })?))
    }
}
