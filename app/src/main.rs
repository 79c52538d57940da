//! The `hearth` binary: command-line dispatch. Until the desktop app lands, `hearth MODEL` opens a
//! model and reports what it is; the subcommands are tools for users and scripts.

mod commands;
mod format;

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
    /// A GGUF model file to open.
    model: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Inspect { model, json }) => commands::inspect(&model, json),
        Some(Cmd::Tokenize {
            model,
            special,
            text,
        }) => commands::tokenize(&model, &text, special),
        Some(Cmd::Fetch { name, list }) => commands::fetch(name.as_deref(), list),
        None => match cli.model {
            Some(model) => commands::open(&model),
            None => {
                eprintln!(
                    "hearth: the desktop app is not built yet; give a model file: hearth MODEL.gguf (see hearth --help)"
                );
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
