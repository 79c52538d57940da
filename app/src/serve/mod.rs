//! `hearth serve`: an OpenAI-compatible HTTP server on the engine API (axum on a small tokio
//! runtime; the engine runs on its own thread, and every request is one engine `generate`, so
//! concurrent requests share its continuous batching).
//!
//! Start-up: the address is checked (anything but loopback needs an API key), the socket is
//! bound and the `listening on` line is printed, then the model loads while the server already
//! answers: `/health` says `loading` (503) until it is ready, `ok` after; a model that cannot be
//! loaded ends the process (exit status 2).
//!
//! - `handlers.rs`: the endpoints, the key, origin and queue checks, streaming.
//! - `openai.rs`: the wire format (requests to engine parameters, response objects);
//!   `error.rs`: errors in OpenAI's shape.
//! - `bridge.rs`: the engine's blocking reply channels into async handlers, with cancellation.

mod bridge;
mod chat;
mod error;
mod handlers;
mod openai;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use hearth_engine::api::{EngineConfig, EngineHandle, RouteMode};
use hearth_engine::route::cloud::ApiKey;
use tokio::sync::Semaphore;

use crate::commands::BadInput;
use crate::routed::RouteArgs;
use crate::run::BackendArgs;
use openai::{ApiError, Limits};

/// What `hearth serve` takes.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The GGUF model file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// The address to listen on. Anything but a loopback address needs --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port (0 picks a free one; the line printed at start says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// A key every /v1 request must send as `Authorization: Bearer KEY` (required off loopback).
    /// Prefer the environment variable: a command line is visible to other users.
    #[arg(long, env = "HEARTH_API_KEY", hide_env_values = true, value_parser = parse_key)]
    pub api_key: Option<ApiKey>,
    /// Context size per request in tokens, prompt and answer (default: the model's).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Requests in flight at most (generating or waiting); more are answered 503 with
    /// Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// The largest request body in bytes; larger ones are answered 413.
    #[arg(long, default_value_t = 4 << 20)]
    pub body_limit: usize,
    /// The model id /v1/models reports and responses carry (default: the file name without its
    /// extension).
    #[arg(long, value_name = "NAME")]
    pub model_alias: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub route: RouteArgs,
}

fn parse_key(key: &str) -> Result<ApiKey, String> {
    ApiKey::new(key).ok_or_else(|| "the API key must not be empty".to_string())
}

/// What the handlers share.
pub struct AppState {
    alias: String,
    /// The model file's modification time (Unix seconds), reported as `created`.
    created: u64,
    api_key: Option<ApiKey>,
    queue: Arc<Semaphore>,
    max_queue: usize,
    body_limit: usize,
    /// Set once the model is loaded.
    ready: OnceLock<Ready>,
}

/// The loaded engine.
#[derive(Debug, Clone)]
pub struct Ready {
    engine: Arc<EngineHandle>,
    /// Tokens of context per request: `--ctx`, the model's and the KV cache's, whichever is
    /// smallest.
    context: usize,
    route: RouteMode,
}

impl Ready {
    fn limits(&self) -> Limits {
        Limits {
            context: self.context,
            route: self.route,
        }
    }
}

impl AppState {
    fn ready(&self) -> Result<Ready, ApiError> {
        self.ready.get().cloned().ok_or_else(|| {
            ApiError::unavailable("the model is still loading; retry shortly", "model_loading")
        })
    }

    fn body_error(&self, e: &BytesRejection) -> ApiError {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(self.body_limit)
        } else {
            ApiError::invalid(format!("cannot read the request body: {}", e.body_text()))
        }
    }
}

/// The routes, their checks and limits.
fn router(state: Arc<AppState>) -> Router {
    let generation = Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            handlers::admit,
        ));
    let api = Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{id}", get(handlers::model))
        .merge(generation)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            handlers::auth,
        ));
    Router::new()
        .route("/health", get(handlers::health))
        .merge(api)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn(handlers::origin))
        .with_state(state)
}

/// Runs the server until interrupted.
pub fn serve(args: ServeArgs) -> Result<()> {
    if args.max_queue == 0 {
        return Err(BadInput("--max-queue must be at least 1".into()).into());
    }
    if args.ctx.is_some_and(|c| c < 2) {
        return Err(BadInput("--ctx must be at least 2 tokens".into()).into());
    }
    let addrs: Vec<SocketAddr> = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| BadInput(format!("--host {}: {e}", args.host)))?
        .collect();
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    if !loopback && args.api_key.is_none() {
        return Err(BadInput(format!(
            "--host {} is not a loopback address: anyone who can reach it could use the model, so \
             an API key is required (--api-key KEY or the HEARTH_API_KEY environment variable)",
            args.host
        ))
        .into());
    }
    let mut config = args.backend.engine_config();
    config.cloud = args.route.cloud_client()?;
    config.probe = args.route.probe()?;
    let meta = std::fs::metadata(&args.model)
        .map_err(|e| BadInput(format!("{}: {e}", args.model.display())))?;
    let alias = args.model_alias.clone().unwrap_or_else(|| {
        args.model
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    });
    let created = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(openai::unix_now, |d| d.as_secs());
    let listener = std::net::TcpListener::bind(addrs.as_slice())
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let state = Arc::new(AppState {
        alias,
        created,
        api_key: args.api_key.clone(),
        queue: Arc::new(Semaphore::new(args.max_queue)),
        max_queue: args.max_queue,
        body_limit: args.body_limit,
        ready: OnceLock::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hearth-serve")
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    let result = runtime.block_on(run(state.clone(), listener, local, args, config));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    local: SocketAddr,
    args: ServeArgs,
    config: EngineConfig,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "hearth serve: listening on http://{local} (model {})",
        state.alias
    );
    std::io::stdout().flush()?;

    let model = args.model.clone();
    let (engine, info) =
        tokio::task::spawn_blocking(move || crate::run::load_engine(config, &model, None))
            .await
            .context("the model loader stopped")??;
    if let Some(why) = &info.fallback {
        tracing::warn!("not on the GPU: {why}");
    }
    let model_context = info.context_length;
    let pool = info.kv_blocks * info.kv_block_size;
    let context = args
        .ctx
        .unwrap_or(model_context)
        .min(model_context)
        .min(pool.max(1));
    if args.ctx.is_some_and(|c| c > context) {
        tracing::warn!(
            "--ctx {} is more than the model ({model_context}) and the cache \
             ({pool} positions) allow; using {context}",
            args.ctx.unwrap_or(0)
        );
    }
    tracing::info!(
        "{} ready on the {}; context {context} tokens per request",
        info.name,
        info.compute
    );
    let _ = state.ready.set(Ready {
        engine: Arc::new(engine),
        context,
        route: args.route.mode(),
    });
    tokio::select! {
        r = server => r.context("the server stopped")?.context("the server failed")?,
        r = tokio::signal::ctrl_c() => {
            r.context("cannot wait for Ctrl-C")?;
            tracing::info!("shutting down");
        }
    }
    Ok(())
}
