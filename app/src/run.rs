//! `hearth run` (generate from a prompt, streaming) and `hearth perplexity` (score a text file),
//! on the GPU when a hardware adapter exists and the fast CPU backend otherwise (the choice and
//! the reason go to stderr); `--backend` picks one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use hearth_engine::api::{
    self, BackendKind as EngineBackend, EngineConfig, EngineHandle, ErrorKind, Event, LoadFailure,
    ModelInfo,
};
use hearth_engine::backend::gpu::GpuOptions;
use hearth_engine::backend::{Backend, CpuBackend, GpuBackend, ReferenceBackend};
use hearth_engine::model::{
    FinishReason, GenerateOptions, Model, ModelError, generate, perplexity,
};
use hearth_engine::sample::SamplerConfig;
use hearth_engine::tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::json;

use crate::commands::BadInput;

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
    pub backend: BackendArgs,
    pub route: crate::routed::RouteArgs,
}

/// The backend a command resolved to.
pub enum Chosen {
    Gpu(GpuBackend),
    Cpu(CpuBackend),
    Reference(ReferenceBackend),
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
            ..base
        }
    }

    /// The engine settings these arguments choose (backend, GPU options, threads), with the
    /// scheduler's defaults.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            backend: match self.backend {
                BackendKind::Auto => EngineBackend::Auto,
                BackendKind::Gpu => EngineBackend::Gpu,
                BackendKind::Cpu => EngineBackend::Cpu,
                BackendKind::Reference => EngineBackend::Reference,
            },
            gpu: self.gpu_options(),
            threads: self.threads,
            ..EngineConfig::default()
        }
    }

    /// Opens the chosen backend. With `auto`, a missing GPU falls back to the CPU and says why on
    /// stderr; with `gpu` it is an error.
    pub fn choose(&self) -> Result<Chosen> {
        self.choose_with(GpuOptions::default())
    }

    /// [`BackendArgs::choose`], with `extra`'s profiling and tuning options for the GPU.
    pub fn choose_with(&self, extra: GpuOptions) -> Result<Chosen> {
        let gpu_options = || self.gpu_options_over(extra.clone());
        let threads = self.threads()?;
        Ok(match self.backend {
            BackendKind::Auto => match GpuBackend::new(&gpu_options()) {
                Ok(gpu) => {
                    eprintln!("hearth: computing on the {}", gpu.describe());
                    Chosen::Gpu(gpu)
                }
                Err(e) => {
                    let cpu = CpuBackend::with_threads(threads);
                    eprintln!("hearth: computing on the {}; no GPU: {e}", cpu.describe());
                    Chosen::Cpu(cpu)
                }
            },
            BackendKind::Gpu => {
                let gpu = GpuBackend::new(&gpu_options())
                    .map_err(|e| anyhow::anyhow!("--backend gpu: {e}"))?;
                eprintln!("hearth: computing on the {}", gpu.describe());
                Chosen::Gpu(gpu)
            }
            BackendKind::Cpu => Chosen::Cpu(CpuBackend::with_threads(threads)),
            BackendKind::Reference => Chosen::Reference(ReferenceBackend::with_threads(threads)),
        })
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

/// Calls `$body` with `$backend` bound to the chosen backend.
macro_rules! with_backend {
    ($args:expr, |$backend:ident| $body:expr) => {{
        match $args.choose()? {
            Chosen::Gpu($backend) => $body,
            Chosen::Cpu($backend) => $body,
            Chosen::Reference($backend) => $body,
        }
    }};
}

fn open_model<B: Backend>(path: &Path, backend: B) -> Result<(Model<B>, Tokenizer)> {
    let model = Model::open(path, backend)?;
    let tokenizer = Tokenizer::from_gguf(model.file())?;
    Ok((model, tokenizer))
}

/// The prompt's token ids, from `--prompt-ids`, `--chat` or plain `--prompt`.
fn prompt_tokens<B: Backend>(
    args: &RunArgs,
    model: &Model<B>,
    tok: &Tokenizer,
) -> Result<Vec<u32>> {
    if args.system.is_some() && !args.chat {
        return Err(BadInput("--system needs --chat".into()).into());
    }
    if let Some(ids) = &args.prompt_ids {
        if args.chat {
            return Err(BadInput(
                "--prompt-ids gives exact tokens; it cannot be combined with --chat".into(),
            )
            .into());
        }
        let vocab = model.config().vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(BadInput(format!(
                "--prompt-ids: token id {id} is outside the vocabulary ({vocab} tokens)"
            ))
            .into());
        }
        return Ok(ids.clone());
    }
    let text = args.prompt.as_deref().unwrap_or_default();
    let ids = if args.chat {
        let template = ChatTemplate::from_gguf(model.file())?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(text));
        let rendered = template.render(&messages, true)?;
        tok.encode_chat(&rendered)?
    } else {
        tok.encode(text, true)?
    };
    if ids.is_empty() {
        return Err(
            BadInput("the prompt is empty (give --prompt TEXT or --prompt-ids)".into()).into(),
        );
    }
    Ok(ids)
}

pub fn run(args: &RunArgs) -> Result<()> {
    if args.route.route != crate::routed::Route::Local {
        return crate::routed::run(args, &args.route);
    }
    with_backend!(args.backend, |backend| run_on(args, backend))
}

fn run_on<B: Backend>(args: &RunArgs, backend: B) -> Result<()> {
    if args.n_predict == 0 {
        return Err(
            BadInput("-n must be at least 1 (the number of tokens to generate)".into()).into(),
        );
    }
    let (model, tok) = open_model(&args.model, backend)?;
    let prompt = prompt_tokens(args, &model, &tok)?;
    let trained = model.config().context_length;
    let ctx = match args.ctx {
        Some(0) => return Err(BadInput("--ctx must be at least 1".into()).into()),
        Some(c) if c > trained => {
            return Err(BadInput(format!(
                "--ctx {c} exceeds the model's context of {trained} tokens"
            ))
            .into());
        }
        Some(c) => c,
        // Only as much cache as this run can use.
        None => (prompt.len() + args.n_predict).min(trained),
    };
    if prompt.len() > ctx {
        let err = ModelError::PromptTooLong {
            prompt: prompt.len(),
            context: ctx,
        };
        let hint = if args.ctx.is_some() && ctx < trained {
            format!("raise --ctx, up to {trained}, or shorten the prompt")
        } else {
            "shorten the prompt".to_string()
        };
        return Err(BadInput(format!("{err}: {hint}")).into());
    }
    let mut kv = model.kv_cache(ctx)?;
    let options = GenerateOptions {
        max_tokens: args.n_predict,
        sampler: args.sampler.clone(),
        stop_ids: tok.eog_ids().to_vec(),
    };
    let mut decoder = tok.stream_decoder(args.chat);
    let mut stdout = std::io::stdout().lock();
    let mut text = String::new();
    let mut write_error = None;
    let generation = generate(&model, &mut kv, &prompt, &options, |id| {
        let piece = decoder.step(id);
        text.push_str(&piece);
        let written = if args.json || piece.is_empty() {
            Ok(())
        } else {
            stdout
                .write_all(piece.as_bytes())
                .and_then(|()| stdout.flush())
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false // stdout closed (a pipe's reader went away): stop generating
            }
        }
    })?;
    // An answer cut by -n inside a character leaves that character out (no U+FFFD at the end).
    let rest = match generation.finish {
        FinishReason::Stop => decoder.finish(),
        _ => decoder.finish_cut(),
    };
    text.push_str(&rest);
    if let Some(e) = write_error {
        return Err(e).context("writing to stdout");
    }
    let s = &generation.stats;
    if args.json {
        let out = json!({
            "text": text,
            "token_ids": generation.token_ids,
            "prompt_tokens": s.prompt_tokens,
            "generated_tokens": s.generated_tokens,
            "finish_reason": generation.finish.as_str(),
            "time_to_first_token_ms": s.time_to_first_token.as_secs_f64() * 1e3,
            "prompt_tokens_per_s": s.prompt_tokens_per_s(),
            "decode_tokens_per_s": s.decode_tokens_per_s(),
            "backend": model.backend().name(),
            "compute": model.backend().describe(),
            "context": ctx,
        });
        writeln!(stdout, "{out}")?;
    } else {
        write!(stdout, "{rest}")?;
        writeln!(stdout)?;
        stdout.flush()?;
        eprintln!(
            "\nprompt {} tokens ({:.1} tok/s) | generated {} tokens ({:.1} tok/s) | time to first token {:.0} ms | finish: {} | backend {}",
            s.prompt_tokens,
            s.prompt_tokens_per_s(),
            s.generated_tokens,
            s.decode_tokens_per_s(),
            s.time_to_first_token.as_secs_f64() * 1e3,
            generation.finish.as_str(),
            model.backend().name(),
        );
    }
    Ok(())
}

pub fn perplexity_cmd(
    model_path: &Path,
    file: &Path,
    n_ctx: usize,
    json: bool,
    backend: &BackendArgs,
) -> Result<()> {
    with_backend!(backend, |backend| perplexity_on(
        model_path, file, n_ctx, json, backend
    ))
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

/// Whether a model error is the user's input (exit status 2) rather than a failure of Hearth.
pub fn is_bad_input(e: &ModelError) -> bool {
    !matches!(e, ModelError::Backend { .. } | ModelError::Run(_))
}
