//! `hearth run --route auto|cloud`: one answer through the engine API, which routes it (local
//! model or cloud endpoint) and says where it ran and why. `--route local` (the default) keeps
//! the direct path of [`crate::run`], which never touches the network.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use hearth_engine::api::{self, Event, GenerateParams, Prompt, RouteMode};
use hearth_engine::route::cloud::{self, CloudClient, CloudConfig};
use hearth_engine::route::probe::Probe;
use hearth_engine::sched::ContextPolicy;
use hearth_engine::tokenizer::ChatMessage;
use serde_json::json;

use crate::commands::BadInput;
use crate::run::RunArgs;

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
                    eprintln!("hearth: no --cloud-url: auto answers everything locally");
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
            eprintln!("hearth: the OS keychain was not available ({e}); using the environment");
        }
        let config = CloudConfig {
            api_key: lookup.resolved.map(|r| r.key),
            ..CloudConfig::new(url.clone(), self.cloud_model.clone())
        };
        let client = CloudClient::new(config).map_err(|e| BadInput(e.to_string()))?;
        if let Some(warning) = client.key_warning() {
            eprintln!("hearth: warning: {warning}");
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

/// `hearth run` with `--route auto` or `--route cloud`.
pub fn run(args: &RunArgs, route: &RouteArgs) -> Result<()> {
    if args.n_predict == 0 {
        return Err(
            BadInput("-n must be at least 1 (the number of tokens to generate)".into()).into(),
        );
    }
    if args.prompt_ids.is_some() {
        return Err(BadInput("--prompt-ids cannot be routed; give --prompt".into()).into());
    }
    let text = args.prompt.clone().unwrap_or_default();
    if text.is_empty() {
        return Err(BadInput("the prompt is empty (give --prompt TEXT)".into()).into());
    }
    let mut config = args.backend.engine_config();
    config.cloud = route.cloud_client()?;
    config.probe = route.probe()?;
    let (engine, _info) = crate::run::load_engine(config, &args.model, None)?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(text));
        Prompt::Chat(messages)
    } else {
        Prompt::Text(text)
    };
    let params = GenerateParams {
        max_tokens: args.n_predict,
        sampler: args.sampler.clone(),
        context: ContextPolicy::Stop,
        max_context: args.ctx,
        route: route.mode(),
        ..GenerateParams::default()
    };
    let (_, rx) = engine.generate(prompt, params);
    let mut stdout = std::io::stdout().lock();
    loop {
        match rx.recv_timeout(api::DEFAULT_WAIT) {
            Ok(Event::Token { text, .. }) if !args.json => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            Ok(Event::Done {
                finish,
                stats,
                text,
                route,
                ..
            }) => {
                if args.json {
                    let out = json!({
                        "text": text,
                        "prompt_tokens": stats.prompt_tokens,
                        "generated_tokens": stats.generated_tokens,
                        "finish_reason": finish.as_str(),
                        "time_to_first_token_ms": stats.time_to_first_token.as_secs_f64() * 1e3,
                        "decode_tokens_per_s": stats.tokens_per_s(),
                        "route": route.target,
                        "route_reason": route.reason,
                        "router_risk": route.risk,
                    });
                    writeln!(stdout, "{out}")?;
                } else {
                    writeln!(stdout)?;
                    stdout.flush()?;
                    eprintln!(
                        "\nroute {} | prompt {} tokens | generated {} tokens ({:.1} tok/s) | time to first token {:.0} ms | finish: {}",
                        route.reason,
                        stats.prompt_tokens,
                        stats.generated_tokens,
                        stats.tokens_per_s(),
                        stats.time_to_first_token.as_secs_f64() * 1e3,
                        finish.as_str()
                    );
                }
                return Ok(());
            }
            Ok(Event::Error { message, .. }) => return Err(anyhow!(message)),
            Ok(_) => {}
            Err(e) => return Err(e).context("no answer from the engine"),
        }
    }
}
