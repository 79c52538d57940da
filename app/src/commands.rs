//! The command-line tools: `inspect`, `tokenize`, `fetch`, `devices`; exit codes.

use std::path::Path;

use anyhow::{Context, Result};
use hearth_engine::gguf::{GgufError, GgufFile, Summary};
use hearth_engine::source;
use hearth_engine::tokenizer::Tokenizer;

use crate::format;
use hearth_engine::model::ModelError;

/// Exit status for an error: 2 when the input (a model file, a name) cannot be used, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let bad_input = e.chain().any(|c| {
        c.is::<GgufError>()
            || c.is::<hearth_engine::tokenizer::TokenizerError>()
            || c.is::<BadInput>()
            || c.downcast_ref::<hearth_engine::model::ModelError>()
                .is_some_and(|e| !matches!(e, ModelError::Backend { .. } | ModelError::Run(_)))
    });
    if bad_input { 2 } else { 1 }
}

/// An error in what the user asked for.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::error::Error for BadInput {}

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn inspect(model: &Path, json: bool) -> Result<()> {
    let file = GgufFile::open(model)?;
    let s = Summary::of(&file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_summary(&s);
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    // A reader that stops early (`hearth inspect M | head -3`) is not an error.
    let row = |k: &str, v: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{k:<14}{v}");
    };
    row(
        "file",
        format!(
            "{} ({}, GGUF v{})",
            s.file,
            format::bytes(s.file_bytes),
            s.gguf_version
        ),
    );
    let name = s
        .name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    row("architecture", format!("{}{name}", s.architecture));
    match (s.expert_count, s.expert_used_count) {
        (Some(n), Some(k)) => row(
            "parameters",
            format!(
                "{} ({} active per token: {k} of {n} experts)",
                format::count(s.parameters),
                format::count(s.active_parameters)
            ),
        ),
        _ => row("parameters", format::count(s.parameters)),
    }
    let types: Vec<String> = s
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    row(
        "tensors",
        format!("{}: {}", s.tensor_count, types.join(", ")),
    );
    if !s.unsupported_types.is_empty() {
        row("unsupported", s.unsupported_types.join(", "));
    }
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    row("context", format!("{} tokens", opt(s.context_length)));
    row(
        "shape",
        format!(
            "{} layers, embedding {}, {} heads ({} kv) of {}{}",
            opt(s.block_count),
            opt(s.embedding_length),
            opt(s.head_count),
            opt(s.head_count_kv),
            opt(s.head_dim),
            s.sliding_window
                .map(|w| format!(", sliding window {w}"))
                .unwrap_or_default()
        ),
    );
    if let Some(kinds) = &s.layer_kinds {
        row("layers", kinds.clone());
    }
    let tok = match (&s.tokenizer, &s.tokenizer_pre) {
        (Some(t), Some(p)) => format!("{t} (pre: {p})"),
        (Some(t), None) => t.clone(),
        _ => "none".into(),
    };
    row("tokenizer", format!("{tok}, {} tokens", opt(s.vocab_size)));
    row(
        "chat template",
        if s.chat_template {
            "yes"
        } else {
            "no (built-in by architecture)"
        }
        .into(),
    );
    row(
        "per token",
        format!("reads {} of weights", format::bytes(s.bytes_per_token)),
    );
    for (i, m) in s.memory.iter().enumerate() {
        row(
            if i == 0 { "memory" } else { "" },
            format!(
                "{} at {} tokens (weights {} + KV cache {}, f16)",
                format::bytes(m.total_bytes),
                m.context_tokens,
                format::bytes(m.weights_bytes),
                format::bytes(m.kv_cache_bytes)
            ),
        );
    }
}

pub fn tokenize(model: &Path, text: &str, special: bool) -> Result<()> {
    let file = GgufFile::open(model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(text, special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

pub fn fetch(name: Option<&str>, list: bool) -> Result<()> {
    if list {
        for m in source::CATALOG {
            println!("{:<28}{} ({})", m.name, m.file_name, format::bytes(m.size));
        }
        return Ok(());
    }
    let name = name.unwrap_or_default();
    let model = source::by_name(name).ok_or_else(|| {
        let names: Vec<&str> = source::CATALOG.iter().map(|m| m.name).collect();
        BadInput(format!(
            "no model named '{name}' (known: {})",
            names.join(", ")
        ))
    })?;
    let path = source::fetch(model).with_context(|| format!("fetching {}", model.name))?;
    println!("{}", path.display());
    Ok(())
}

/// `hearth devices`: every GPU adapter, the one the GPU backend would use, and why the others
/// would not be used; the CPU backend's level when there is none.
pub fn devices(allow_software: bool, json: bool) -> Result<()> {
    use hearth_engine::backend::Backend;
    use hearth_engine::backend::gpu::{GpuOptions, survey};
    let opts = GpuOptions {
        allow_software,
        ..GpuOptions::default()
    };
    let found = survey(&opts);
    let chosen = found.iter().position(|(_, why)| why.is_none());
    let cpu = hearth_engine::backend::CpuBackend::new().describe();
    if json {
        let rows: Vec<_> = found
            .iter()
            .enumerate()
            .map(|(i, (info, why))| {
                serde_json::json!({
                    "name": info.name,
                    "api": info.api,
                    "kind": info.kind,
                    "driver": info.driver,
                    "max_binding_bytes": info.max_binding,
                    "max_buffer_bytes": info.max_buffer,
                    "shader_f16": info.f16,
                    "subgroups": info.subgroups,
                    "chosen": Some(i) == chosen,
                    "not_used_because": why,
                })
            })
            .collect();
        let out = serde_json::json!({"adapters": rows, "cpu": cpu});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if found.is_empty() {
        println!(
            "no Vulkan, Metal or DX12 adapter found (is a GPU driver with Vulkan support installed?)"
        );
    }
    for (i, (info, why)) in found.iter().enumerate() {
        let mark = if Some(i) == chosen { "*" } else { " " };
        println!("{mark} {info}");
        println!(
            "    binding {} | buffer {} | shader-f16 {} | subgroups {}",
            crate::format::bytes(info.max_binding),
            crate::format::bytes(info.max_buffer),
            if info.f16 { "yes" } else { "no" },
            if info.subgroups { "yes" } else { "no" }
        );
        match why {
            Some(why) => println!("    not used: {why}"),
            None if Some(i) == chosen => println!("    used by --backend auto and gpu"),
            None => println!("    usable (a better one is chosen)"),
        }
    }
    if chosen.is_none() {
        println!("the model runs on the {cpu}");
    }
    Ok(())
}
