//! The `hearth` binary: command-line dispatch. `hearth [MODEL]` opens the desktop app (with MODEL
//! loading); the subcommands are tools for users and scripts.

// On Windows the binary is a GUI program, so a double-click opens no console window; the
// subcommands attach to the console of the terminal that started them (`attach_console`).
#![cfg_attr(windows, windows_subsystem = "windows")]

mod bench;
mod chat;
mod commands;
mod conversation;
mod format;
mod gui;
mod library;
mod log;
mod logits;
mod routed;
mod router;
mod run;
mod scenario;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Chat with language models on your own machine.
#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// A GGUF model file to open in the window.
    model: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the GPU adapters wgpu finds, which one the GPU backend would use, and why the others
    /// would not be used.
    Devices {
        /// Count software adapters (lavapipe, WARP) as usable.
        #[arg(long)]
        gpu_allow_software: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a model file's architecture, size, quant types, tokenizer and memory estimate.
    Inspect {
        /// The GGUF model file.
        model: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of TEXT as a JSON array.
    Tokenize {
        /// The GGUF model file whose tokenizer to use.
        #[arg(long, short)]
        model: PathBuf,
        /// Tokenize as a prompt: add BOS where the model does and parse special tokens.
        #[arg(long)]
        special: bool,
        /// The text to tokenize.
        text: String,
    },
    /// Generate text from a prompt, streaming it to stdout; stats go to stderr.
    Run {
        /// The GGUF model file.
        #[arg(long, short)]
        model: PathBuf,
        /// The prompt text.
        #[arg(
            long,
            short,
            required_unless_present = "prompt_ids",
            conflicts_with = "prompt_ids"
        )]
        prompt: Option<String>,
        /// Exact prompt token ids, comma-separated (instead of --prompt).
        #[arg(long, value_parser = run::parse_ids)]
        prompt_ids: Option<run::TokenIds>,
        /// Apply the model's chat template and stop at the end of the turn.
        #[arg(long)]
        chat: bool,
        /// A system message (with --chat).
        #[arg(long)]
        system: Option<String>,
        /// Tokens to generate at most.
        #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
        n_predict: usize,
        /// Context size in tokens (default: prompt + n, up to the model's context).
        #[arg(long)]
        ctx: Option<usize>,
        /// Sampling temperature; 0 picks the most likely token every time.
        #[arg(long, default_value_t = 0.8)]
        temp: f32,
        /// Sample from the K most likely tokens (0 = all).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Sample from the smallest set of tokens whose probability reaches P.
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        /// Drop tokens less likely than P times the most likely one (0 = off).
        #[arg(long, default_value_t = 0.05)]
        min_p: f32,
        /// Penalize tokens seen in the last 64: divide a positive logit by this, multiply a
        /// negative one (1 = off).
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        /// Random seed (default: a new one each run).
        #[arg(long)]
        seed: Option<u64>,
        /// Print one JSON object (text, token_ids, stats) instead of streaming.
        #[arg(long)]
        json: bool,
        /// Constrain the answer to JSON matching this schema (a file, or the schema itself).
        #[arg(long, value_name = "FILE|JSON", conflicts_with = "grammar")]
        json_schema: Option<String>,
        /// Constrain the answer to this Lark grammar (llguidance's dialect; a file or the text).
        #[arg(long, value_name = "FILE|LARK")]
        grammar: Option<String>,
        /// With --chat: let a reasoning model think (`on`) or not (`off`), for templates that
        /// read `enable_thinking` (default: the template's own).
        #[arg(long, value_parser = ["on", "off"])]
        think: Option<String>,
        #[command(flatten)]
        backend: run::BackendArgs,
        #[command(flatten)]
        route: routed::RouteArgs,
    },
    /// The logits of every position of a token sequence, from an empty cache (for comparing the
    /// forward pass with llama.cpp's).
    Logits {
        /// The GGUF model file.
        #[arg(long, short)]
        model: PathBuf,
        /// The token ids, e.g. 1,2,3.
        #[arg(long, value_parser = run::parse_ids)]
        ids: run::TokenIds,
        /// Print {"logits": [[...], ...]}, one row per position.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: run::BackendArgs,
    },
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity {
        /// The GGUF model file.
        #[arg(long, short)]
        model: PathBuf,
        /// The text file to score.
        #[arg(long, short)]
        file: PathBuf,
        /// Tokens per chunk; the second half of each chunk is scored.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Print JSON (ppl, stderr, chunks, token counts).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: run::BackendArgs,
    },
    /// Measure speed like llama-bench: prompt processing (pp) and generation (tg) in tokens/s,
    /// mean ± sd over repetitions; with --kernels, matvec throughput in GB/s of weights read.
    Bench {
        /// The GGUF model file.
        #[arg(long, short)]
        model: PathBuf,
        #[command(flatten)]
        backend: run::BackendArgs,
        /// Prompt tokens of the pp test (0 skips it).
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        prompt: usize,
        /// Generated tokens of the tg test (0 skips it).
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        gen_tokens: usize,
        /// Tokens already in the cache when each test starts (llama-bench's `-d`): what
        /// attention costs deep in a conversation.
        #[arg(short = 'd', long, default_value_t = 0)]
        depth: usize,
        /// Timed repetitions of each test (after one warm-up run).
        #[arg(short = 'r', long, default_value_t = 5)]
        reps: usize,
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure the matvec kernels per quant type and dispatch level instead of the model.
        #[arg(long)]
        kernels: bool,
        /// Measure an engine runtime scenario (through the engine's channel API) instead.
        #[arg(long, value_enum, conflicts_with = "kernels")]
        scenario: Option<scenario::Scenario>,
    },
    /// Measure the window's frame time (UI thread, no GPU) while an answer streams into a long
    /// conversation.
    BenchUi {
        /// Messages in the conversation.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Frames measured.
        #[arg(long, default_value_t = 600)]
        frames: usize,
        /// The answer's speed.
        #[arg(long, default_value_t = 150.0)]
        tokens_per_s: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fit the router's probe for a model: answer the training questions locally, grade them,
    /// and learn which prompts the model gets wrong from its hidden state; writes the probe.
    FitRouter {
        #[command(flatten)]
        args: router::RouterArgs,
        /// The training set (JSONL; default: the bundled router-train.jsonl).
        #[arg(long)]
        train: Option<PathBuf>,
        /// Where to write the probe (JSON).
        #[arg(long, short, default_value = "router-probe.json")]
        output: PathBuf,
    },
    /// Measure the router on a graded set: AUROC of its signal for a wrong local answer, hybrid
    /// accuracy against the cloud share, and the share of a perfect router's gain it captures.
    EvalRouter {
        #[command(flatten)]
        args: router::RouterArgs,
        /// The evaluation set (JSONL; default: the bundled router-eval.jsonl).
        #[arg(long)]
        set: Option<PathBuf>,
        /// A probe from `hearth fit-router` (default: the one Hearth ships for the model).
        #[arg(long)]
        probe: Option<PathBuf>,
        /// Write the accuracy curve as an SVG image.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Print JSON (keys include auroc and gain_share_at_30).
        #[arg(long)]
        json: bool,
    },
    /// Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,
    /// /v1/models, /health).
    Serve(serve::ServeArgs),
    /// Chat in the terminal: the desktop app's conversations, for machines without a display
    /// (lines from stdin are messages; `/help` lists the commands).
    Chat(chat::ChatArgs),
    /// Fetch a published model into the models directory and verify it (`--list` shows names).
    Fetch {
        /// Catalog name of the model.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the models that can be fetched.
        #[arg(long)]
        list: bool,
    },
}

/// Windows: a GUI-subsystem program has no console, so `hearth --help`, `hearth chat` and
/// `hearth serve` attach to the one of the terminal they were started from (if any) before
/// printing. Elsewhere there is nothing to do.
#[cfg(windows)]
fn attach_console() {
    use windows_sys::Win32::System::Console::{ATTACH_PARENT_PROCESS, AttachConsole};
    // SAFETY: AttachConsole takes a process id and touches no memory of ours; failure (no parent
    // console, e.g. started from Explorer) leaves the process without one, which is what a
    // double-click wants.
    unsafe {
        AttachConsole(ATTACH_PARENT_PROCESS);
    }
}

#[cfg(not(windows))]
fn attach_console() {}

fn main() -> ExitCode {
    attach_console();
    log::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Inspect { model, json }) => commands::inspect(&model, json),
        Some(Cmd::Devices {
            gpu_allow_software,
            json,
        }) => commands::devices(gpu_allow_software, json),
        Some(Cmd::Tokenize {
            model,
            special,
            text,
        }) => commands::tokenize(&model, &text, special),
        Some(Cmd::Fetch { name, list }) => commands::fetch(name.as_deref(), list),
        Some(Cmd::Serve(args)) => serve::serve(args),
        Some(Cmd::BenchUi {
            messages,
            frames,
            tokens_per_s,
            json,
        }) => gui::bench::run(messages, frames, tokens_per_s, json),
        Some(Cmd::Chat(args)) => chat::chat(args),
        Some(Cmd::FitRouter {
            args,
            train,
            output,
        }) => router::fit(&args, train.as_deref(), &output),
        Some(Cmd::EvalRouter {
            args,
            set,
            probe,
            plot,
            json,
        }) => router::evaluate(
            &args,
            set.as_deref(),
            probe.as_deref(),
            plot.as_deref(),
            json,
        ),
        Some(Cmd::Run {
            model,
            prompt,
            prompt_ids,
            chat,
            system,
            n_predict,
            ctx,
            temp,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            json,
            json_schema,
            grammar,
            think,
            backend,
            route,
        }) => run::run(&run::RunArgs {
            model,
            prompt,
            prompt_ids: prompt_ids.map(|ids| ids.0),
            chat,
            system,
            n_predict,
            ctx,
            sampler: hearth_engine::sample::SamplerConfig {
                temperature: temp,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                seed: seed.unwrap_or_else(|| fastrand::u64(..)),
                ..Default::default()
            },
            json,
            json_schema,
            grammar,
            enable_thinking: think.map(|t| t == "on"),
            backend,
            route,
        }),
        Some(Cmd::Bench {
            model,
            backend,
            json,
            scenario: Some(scenario),
            ..
        }) => scenario::run(&model, &backend, scenario, json),
        Some(Cmd::Bench {
            model,
            backend,
            prompt,
            gen_tokens,
            depth,
            reps,
            json,
            kernels,
            scenario: None,
        }) => bench::bench(&bench::BenchArgs {
            model,
            backend,
            prompt,
            n_gen: gen_tokens,
            depth,
            reps,
            json,
            kernels,
        }),
        Some(Cmd::Logits {
            model,
            ids,
            json,
            backend,
        }) => logits::logits(&model, &ids.0, json, &backend),
        Some(Cmd::Perplexity {
            model,
            file,
            ctx,
            json,
            backend,
        }) => run::perplexity_cmd(&model, &file, ctx, json, &backend),
        None => gui::run(cli.model),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
