//! `hearth run` (generate from a prompt, streaming) and `hearth perplexity` (score a text file),
//! on the GPU when a hardware adapter exists and the fast CPU backend otherwise (the choice and
//! the reason go to stderr); `--backend` picks one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use hearth_engine::api::{
    self, BackendKind as EngineBackend, Constraint, EngineConfig, EngineHandle, ErrorKind, Event,
    GenerateParams, LoadFailure, ModelInfo, Prompt, TextKind,
};
use hearth_engine::backend::gpu::GpuOptions;
use hearth_engine::backend::{self, Backend, OnBackend, OpenOptions, Opened};
use hearth_engine::model::{FinishReason, Model, ModelError, perplexity};
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::ContextPolicy;
use hearth_engine::tokenizer::{ChatMessage, Tokenizer};
use serde_json::json;

use crate::commands::BadInput;
use crate::routed::Route;

/// Which compute backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The GPU when a hardware adapter exists, else the CPU (the reason is printed).
    Auto,
    /// WGSL compute shaders on the GPU through wgpu (Vulkan, Metal, DX12).
    Gpu,
    /// The fast CPU backend (SIMD kernels chosen at run time, all physical cores).
    Cpu,
    /// The scalar reference backend (slow; the oracle the others are tested against).
    Reference,
}

/// The backend options every model command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// CPU threads (default: one per physical core).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// Let the GPU backend use a software adapter (lavapipe, WARP); slower than the CPU, for
    /// testing.
    #[arg(long)]
    pub gpu_allow_software: bool,
    /// Use the GPU adapter whose name contains this text.
    #[arg(long, value_name = "NAME")]
    pub gpu_adapter: Option<String>,
    /// Use the adapter's f16 shader arithmetic for prompts: f16 tiles in the prompt matmul (a
    /// little further from llama.cpp's results).
    #[arg(long)]
    pub gpu_f16: bool,
    /// Do not use the adapter's subgroup operations (for drivers that get them wrong).
    #[arg(long)]
    pub gpu_no_subgroups: bool,
    /// Multiply a decode row by a workgroup per weight row, as on a GPU, even on a software
    /// adapter (which takes an invocation per row): to count a GPU's dispatches on lavapipe.
    #[arg(long)]
    pub gpu_workgroup_rows: bool,
}

/// What `hearth run` was asked to do.
#[derive(Debug)]
pub struct RunArgs {
    pub model: PathBuf,
    pub prompt: Option<String>,
    pub prompt_ids: Option<Vec<u32>>,
    pub chat: bool,
    pub system: Option<String>,
    pub n_predict: usize,
    pub ctx: Option<usize>,
    pub sampler: SamplerConfig,
    pub json: bool,
    /// What the answer must match: `--json-schema`, `--grammar` (a file or the text).
    pub json_schema: Option<String>,
    pub grammar: Option<String>,
    /// `--think on|off`.
    pub enable_thinking: Option<bool>,
    pub backend: BackendArgs,
    pub route: crate::routed::RouteArgs,
}

/// `--json-schema` / `--grammar`: a file's text, or the text given; a schema must be JSON.
pub fn constraint(schema: Option<&str>, grammar: Option<&str>) -> Result<Option<Constraint>> {
    let read = |arg: &str| -> Result<String> {
        let path = std::path::Path::new(arg);
        if path.is_file() {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        } else {
            Ok(arg.to_string())
        }
    };
    if let Some(s) = schema {
        let text = read(s)?;
        let schema: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            BadInput(format!(
                "--json-schema: neither a file nor a JSON schema: {e}"
            ))
        })?;
        return Ok(Some(Constraint::JsonSchema(schema)));
    }
    Ok(grammar.map(read).transpose()?.map(Constraint::Lark))
}

impl BackendArgs {
    pub fn threads(&self) -> Result<usize> {
        match self.threads {
            Some(0) => Err(BadInput("--threads must be at least 1".into()).into()),
            Some(t) => Ok(t),
            None => Ok(hearth_engine::backend::cpu::default_threads()),
        }
    }

    pub fn gpu_options(&self) -> GpuOptions {
        self.gpu_options_over(GpuOptions::default())
    }

    /// `base` with the GPU choices of these arguments.
    fn gpu_options_over(&self, base: GpuOptions) -> GpuOptions {
        let off = |no: bool| if no { Some(false) } else { None };
        GpuOptions {
            allow_software: self.gpu_allow_software,
            adapter: self.gpu_adapter.clone(),
            f16: self.gpu_f16 || base.f16,
            subgroups: off(self.gpu_no_subgroups).or(base.subgroups),
            lane_matmul: off(self.gpu_workgroup_rows).or(base.lane_matmul),
            ..base
        }
    }

    /// The engine settings these arguments choose (backend, GPU options, threads), with the
    /// scheduler's defaults.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            backend: self.kind(),
            gpu: self.gpu_options(),
            threads: self.threads,
            ..EngineConfig::default()
        }
    }

    fn kind(&self) -> EngineBackend {
        match self.backend {
            BackendKind::Auto => EngineBackend::Auto,
            BackendKind::Gpu => EngineBackend::Gpu,
            BackendKind::Cpu => EngineBackend::Cpu,
            BackendKind::Reference => EngineBackend::Reference,
        }
    }

    /// Opens the chosen backend ([`backend::open`], with `extra`'s profiling and tuning options
    /// for the GPU) and says on stderr what computes and, where `auto` took the CPU, why; `gpu`
    /// without a usable adapter is an error.
    pub fn open(&self, extra: GpuOptions) -> Result<Opened> {
        let options = OpenOptions {
            gpu: self.gpu_options_over(extra),
            threads: Some(self.threads()?),
        };
        let (opened, fallback) =
            backend::open(self.kind(), &options).map_err(|e| match self.backend {
                BackendKind::Gpu => anyhow!("--backend gpu: {e}"),
                _ => e.into(),
            })?;
        match (&opened, fallback) {
            (_, Some(why)) => eprintln!(
                "hearth: computing on the {}; not on the GPU: {why}",
                opened.describe()
            ),
            (Opened::Gpu(_), None) => eprintln!("hearth: computing on the {}", opened.describe()),
            _ => {}
        }
        Ok(opened)
    }
}

/// Starts an engine thread with `config` and loads `model` (and a draft model) into it, waiting
/// for the load to finish. A file that cannot be read, is not a usable model or is one Hearth
/// cannot run is bad input (exit status 2); the engine's own failures (the GPU, a bug) exit 1.
pub fn load_engine(
    config: EngineConfig,
    model: &Path,
    draft: Option<&Path>,
) -> Result<(EngineHandle, ModelInfo)> {
    let handle = api::spawn(config)?;
    let rx = handle.load(model, draft.map(PathBuf::from));
    loop {
        match rx.recv().context("the engine stopped while loading")? {
            Event::Ready(info) => return Ok((handle, info)),
            Event::Error {
                kind: ErrorKind::LoadFailed(LoadFailure::Backend),
                message,
                ..
            } => return Err(anyhow::anyhow!(message)),
            Event::Error {
                kind: ErrorKind::LoadFailed(_),
                message,
                ..
            } => return Err(BadInput(message).into()),
            Event::Error { message, .. } => return Err(anyhow::anyhow!(message)),
            _ => {}
        }
    }
}

fn open_model<B: Backend>(path: &Path, backend: B) -> Result<(Model<B>, Tokenizer)> {
    let model = Model::open(path, backend)?;
    let tokenizer = Tokenizer::from_gguf(model.file())?;
    Ok((model, tokenizer))
}

/// `hearth run`: one answer through the engine API, like every other front end (the window,
/// `hearth chat`, `hearth serve`), so there is one generation loop. `--route local` (the default)
/// never touches the network; `auto` and `cloud` let the engine route the question.
pub fn run(args: &RunArgs) -> Result<()> {
    if args.n_predict == 0 {
        return Err(
            BadInput("-n must be at least 1 (the number of tokens to generate)".into()).into(),
        );
    }
    if args.system.is_some() && !args.chat {
        return Err(BadInput("--system needs --chat".into()).into());
    }
    if args.ctx == Some(0) {
        return Err(BadInput("--ctx must be at least 1".into()).into());
    }
    let route = &args.route;
    if let Some(ids) = &args.prompt_ids {
        if args.chat {
            return Err(BadInput(
                "--prompt-ids gives exact tokens; it cannot be combined with --chat".into(),
            )
            .into());
        }
        if route.route != Route::Local {
            return Err(BadInput("--prompt-ids cannot be routed; give --prompt".into()).into());
        }
        if ids.is_empty() {
            return Err(BadInput("--prompt-ids: no token ids given".into()).into());
        }
    }
    let text = args.prompt.clone().unwrap_or_default();
    if args.prompt_ids.is_none() && text.is_empty() {
        return Err(
            BadInput("the prompt is empty (give --prompt TEXT or --prompt-ids)".into()).into(),
        );
    }
    args.backend.threads()?;
    let mut config = args.backend.engine_config();
    config.cloud = route.cloud_client()?;
    config.probe = route.probe()?;
    let (engine, info) = load_engine(config, &args.model, None)?;
    match &info.fallback {
        Some(why) => eprintln!(
            "hearth: computing on the {}; not on the GPU: {why}",
            info.compute
        ),
        None => eprintln!("hearth: computing on the {}", info.compute),
    }
    let trained = info.context_length;
    if let Some(c) = args.ctx.filter(|&c| c > trained) {
        return Err(BadInput(format!(
            "--ctx {c} exceeds the model's context of {trained} tokens"
        ))
        .into());
    }
    let prompt = match &args.prompt_ids {
        Some(ids) => {
            let vocab = info.vocab_size;
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(BadInput(format!(
                    "--prompt-ids: token id {id} is outside the vocabulary ({vocab} tokens)"
                ))
                .into());
            }
            Prompt::Tokens(ids.clone())
        }
        None if args.chat => {
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(ChatMessage::system(system.clone()));
            }
            messages.push(ChatMessage::user(text));
            Prompt::Chat(messages)
        }
        None => Prompt::Text(text),
    };
    let params = GenerateParams {
        max_tokens: args.n_predict,
        sampler: args.sampler.clone(),
        context: ContextPolicy::Stop,
        max_context: args.ctx,
        route: route.mode(),
        constraint: constraint(args.json_schema.as_deref(), args.grammar.as_deref())?,
        chat: hearth_engine::api::ChatOptions {
            enable_thinking: args.enable_thinking,
            ..Default::default()
        },
        ..GenerateParams::default()
    };
    let context = args
        .ctx
        .unwrap_or(trained)
        .min(trained)
        .min(info.kv_blocks * info.kv_block_size);
    let too_long = |prompt: usize| {
        let err = ModelError::PromptTooLong { prompt, context };
        let hint = if args.ctx.is_some_and(|c| c < trained) {
            format!("raise --ctx, up to {trained}, or shorten the prompt")
        } else {
            "shorten the prompt".to_string()
        };
        anyhow::Error::from(BadInput(format!("{err}: {hint}")))
    };
    let (_, rx) = engine.generate(prompt, params);
    let mut stdout = std::io::stdout().lock();
    loop {
        let event = rx
            .recv_timeout(api::DEFAULT_WAIT)
            .context("no answer from the engine")?;
        match event {
            // Reasoning goes to stderr, so stdout holds the answer alone.
            Event::Token {
                text,
                kind: TextKind::Reasoning,
                ..
            } if !args.json => eprint!("{text}"),
            Event::Token { text, .. } if !args.json => {
                // A closed stdout (a pipe's reader went away) ends the run; dropping the
                // receiver cancels the request.
                stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush())
                    .context("writing to stdout")?;
            }
            // A prompt that does not fit ends at once, with nothing generated.
            Event::Done {
                finish: FinishReason::ContextFull,
                stats,
                ..
            } if stats.generated_tokens == 0 => return Err(too_long(stats.prompt_tokens)),
            Event::Done {
                finish,
                stats,
                text,
                reasoning,
                route,
                tokens,
                ..
            } => {
                let s = &stats;
                if args.json {
                    let mut out = json!({
                        "text": text,
                        "reasoning": reasoning,
                        "reasoning_tokens": s.reasoning_tokens,
                        "token_ids": tokens,
                        "prompt_tokens": s.prompt_tokens,
                        "generated_tokens": s.generated_tokens,
                        "finish_reason": finish.as_str(),
                        "time_to_first_token_ms": s.time_to_first_token.as_secs_f64() * 1e3,
                        "prompt_tokens_per_s": s.prompt_tokens_per_s(),
                        "decode_tokens_per_s": s.tokens_per_s(),
                        "backend": info.backend,
                        "compute": info.compute,
                        "context": context,
                    });
                    if args.route.route != Route::Local {
                        out["route"] = json!(route.target);
                        out["route_reason"] = json!(route.reason);
                        out["router_risk"] = json!(route.risk);
                    }
                    writeln!(stdout, "{out}")?;
                } else {
                    writeln!(stdout)?;
                    stdout.flush()?;
                    let routed = if args.route.route == Route::Local {
                        String::new()
                    } else {
                        format!("route {} | ", route.reason)
                    };
                    eprintln!(
                        "\n{routed}prompt {} tokens ({:.1} tok/s) | generated {} tokens ({:.1} tok/s) | time to first token {:.0} ms | finish: {} | backend {}",
                        s.prompt_tokens,
                        s.prompt_tokens_per_s(),
                        s.generated_tokens,
                        s.tokens_per_s(),
                        s.time_to_first_token.as_secs_f64() * 1e3,
                        finish.as_str(),
                        info.backend,
                    );
                }
                return Ok(());
            }
            Event::Error {
                kind: ErrorKind::BadRequest | ErrorKind::PromptTooLong,
                message,
                ..
            } => return Err(BadInput(message).into()),
            Event::Error { message, .. } => return Err(anyhow!(message)),
            _ => {}
        }
    }
}

pub fn perplexity_cmd(
    model_path: &Path,
    file: &Path,
    n_ctx: usize,
    json: bool,
    backend: &BackendArgs,
) -> Result<()> {
    backend.open(GpuOptions::default())?.run(Perplexity {
        model_path,
        file,
        n_ctx,
        json,
    })
}

/// `hearth perplexity` on the opened backend.
struct Perplexity<'a> {
    model_path: &'a Path,
    file: &'a Path,
    n_ctx: usize,
    json: bool,
}

impl OnBackend for Perplexity<'_> {
    type Output = Result<()>;

    fn on<B: Backend + 'static>(self, backend: &dyn Fn() -> B) -> Result<()> {
        let Perplexity {
            model_path,
            file,
            n_ctx,
            json,
        } = self;
        perplexity_on(model_path, file, n_ctx, json, backend())
    }
}

fn perplexity_on<B: Backend>(
    model_path: &Path,
    file: &Path,
    n_ctx: usize,
    json: bool,
    backend: B,
) -> Result<()> {
    let bytes = std::fs::read(file)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", file.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| BadInput(format!("{}: not UTF-8 text ({e})", file.display())))?;
    let (model, tok) = open_model(model_path, backend)?;
    let tokens = tok.encode(&text, true)?;
    let bos = if tok.adds_bos() { tok.bos_id() } else { None };
    let t0 = Instant::now();
    let quiet = json;
    let p = perplexity(&model, &tokens, n_ctx, bos, |done, total| {
        if !quiet {
            eprint!("\rchunk {done}/{total}");
        }
    })?;
    let secs = t0.elapsed().as_secs_f64();
    if json {
        let out = json!({
            "ppl": p.ppl,
            "stderr": p.stderr,
            "chunks": p.chunks,
            "n_ctx": p.n_ctx,
            "scored_tokens": p.scored_tokens,
            "text_tokens": p.text_tokens,
            "seconds": secs,
            "backend": model.backend().name(),
            "compute": model.backend().describe(),
        });
        println!("{out}");
    } else {
        eprintln!();
        println!(
            "PPL = {:.4} +/- {:.4} ({} chunks of {} tokens, {} tokens scored, {:.1} s, {:.1} tok/s)",
            p.ppl,
            p.stderr,
            p.chunks,
            p.n_ctx,
            p.scored_tokens,
            secs,
            (p.chunks * p.n_ctx) as f64 / secs,
        );
    }
    Ok(())
}

/// Token ids given on the command line.
#[derive(Debug, Clone)]
pub struct TokenIds(pub Vec<u32>);

/// Parses `--prompt-ids 1,2,3`.
pub fn parse_ids(s: &str) -> Result<TokenIds, String> {
    let ids: Result<Vec<u32>, _> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| format!("'{t}' is not a token id"))
        })
        .collect();
    match ids {
        Ok(ids) if ids.is_empty() => Err("no token ids given".into()),
        other => other.map(TokenIds),
    }
}
