//! `hearth bench --scenario`: the engine runtime measured through its channel API, each figure
//! beside its baseline on the same machine in the same run.
//!
//! - `multi-turn`: a 10-turn chat under a ~300-token system prompt; time to first token of the
//!   last turn with the prefix cache against the same conversation with it off.
//! - `concurrent`: 8 streams of 128 tokens at once; aggregate tokens/s against one stream.
//! - `prompt-lookup`: "copy/extract from this ~1k-token text" prompts; decode tokens/s with
//!   prompt-lookup speculation against without, and whether the greedy texts are identical.
//! - `draft`: the model as its own draft model (a correctness check: identical greedy text,
//!   acceptance rate).
//! - `schema`: constrained decoding's cost, time per token of answers under a JSON schema
//!   against free answers to the same questions.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use hearth_engine::api::{
    self, Constraint, EngineConfig, EngineHandle, GenerateParams, Prompt, Stats,
};
use hearth_engine::model::FinishReason;
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::{ContextPolicy, SchedConfig, Speculation};
use hearth_engine::tokenizer::ChatMessage;
use serde_json::json;

use crate::run::BackendArgs;

/// The scenarios `--scenario` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    MultiTurn,
    Concurrent,
    PromptLookup,
    Draft,
    /// Constrained decoding's cost per token (a JSON schema against free answers).
    Schema,
}

/// One measured figure.
struct Figure {
    scenario: &'static str,
    figure: String,
    value: f64,
    baseline: f64,
    unit: &'static str,
    note: String,
    /// Speculation: whether the text equals the plain greedy text, and the acceptance rate.
    identical: Option<bool>,
    acceptance: Option<f64>,
}

/// A public-domain-style passage long enough for the copy prompts (the GPL's preamble).
const TEXT: &str = include_str!("../../engine/tests/data/gpl-3.txt");

pub fn run(model: &Path, args: &BackendArgs, scenario: Scenario, json: bool) -> Result<()> {
    let backend = &args.engine_config();
    let figures = match scenario {
        Scenario::MultiTurn => multi_turn(model, backend)?,
        Scenario::Concurrent => concurrent(model, backend)?,
        Scenario::PromptLookup => prompt_lookup(model, backend)?,
        Scenario::Draft => draft(model, backend)?,
        Scenario::Schema => schema(model, backend)?,
    };
    let ratio = |f: &Figure| {
        if f.baseline > 0.0 {
            f.value / f.baseline
        } else {
            0.0
        }
    };
    if json {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({
                    "scenario": f.scenario,
                    "figure": f.figure,
                    "value": f.value,
                    "baseline": f.baseline,
                    "ratio": ratio(f),
                    "unit": f.unit,
                    "note": f.note,
                    "identical_text": f.identical,
                    "acceptance": f.acceptance,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for f in &figures {
        let ratio = ratio(f);
        {
            println!(
                "{:<14} {:<44} {:>10.2} {:<6} baseline {:>10.2}  ratio {:>6.3}  {}",
                f.scenario, f.figure, f.value, f.unit, f.baseline, ratio, f.note
            );
        }
    }
    Ok(())
}

fn engine(
    model: &Path,
    draft: Option<&Path>,
    backend: &EngineConfig,
    sched: SchedConfig,
) -> Result<EngineHandle> {
    let config = EngineConfig {
        sched,
        ..backend.clone()
    };
    Ok(crate::run::load_engine(config, model, draft)?.0)
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        context: ContextPolicy::Stop,
        ..GenerateParams::default()
    }
}

fn generate(
    e: &EngineHandle,
    prompt: Prompt,
    params: GenerateParams,
) -> Result<(String, FinishReason, Stats)> {
    let (_, rx) = e.generate(prompt, params);
    api::wait_done(&rx, api::DEFAULT_WAIT).map_err(|m| anyhow!(m))
}

/// A system prompt of about 300 tokens.
fn system_prompt() -> String {
    let rules = [
        "You are Hearth, a helpful assistant running on the user's own computer.",
        "Answer briefly and precisely, in plain language, and say so when you are not sure.",
        "Prefer short paragraphs; use a list only when the user asks for steps.",
        "Never invent facts, names, numbers or quotations; if you do not know, say that you do not know.",
        "When the user asks for code, give a complete, runnable example and explain it in one or two sentences.",
        "Keep the conversation friendly and respectful, and do not lecture the user.",
        "If a question is ambiguous, answer the most likely reading and mention the other one.",
        "Measurements use metric units unless the user uses other units first.",
        "Dates are written as day, month name and year, for example 3 March 2024.",
        "When summarizing a text, keep its structure and its most important numbers.",
        "When translating, keep the tone of the original and do not add explanations.",
        "Do not mention these instructions unless the user asks about them.",
    ];
    rules.join(" ").repeat(2)
}

const QUESTIONS: [&str; 10] = [
    "What is a good way to start learning to cook?",
    "Which vegetables are easiest to grow on a balcony?",
    "How often should I water tomatoes in summer?",
    "Can you suggest a simple pasta recipe?",
    "How do I keep basil fresh for longer?",
    "What is the difference between baking soda and baking powder?",
    "How long should I boil an egg for a soft yolk?",
    "What spices go well with roasted carrots?",
    "How do I sharpen a kitchen knife safely?",
    "Can you summarize what we talked about?",
];

/// Runs the 10-turn chat; returns each turn's time to first token and reused tokens.
fn chat_turns(e: &EngineHandle) -> Result<Vec<(Duration, usize, usize)>> {
    let mut messages = vec![ChatMessage::system(system_prompt())];
    let mut out = Vec::new();
    for q in QUESTIONS {
        messages.push(ChatMessage::user(q));
        let (text, _, stats) = generate(e, Prompt::Chat(messages.clone()), greedy(48))?;
        out.push((
            stats.time_to_first_token,
            stats.prompt_tokens,
            stats.reused_tokens,
        ));
        messages.push(ChatMessage::assistant(text));
    }
    Ok(out)
}

fn multi_turn(model: &Path, backend: &EngineConfig) -> Result<Vec<Figure>> {
    let with = chat_turns(&engine(model, None, backend, SchedConfig::default())?)?;
    let without = chat_turns(&engine(
        model,
        None,
        backend,
        SchedConfig {
            prefix_cache: false,
            ..SchedConfig::default()
        },
    )?)?;
    let mut figures = Vec::new();
    for (i, (w, wo)) in with.iter().zip(&without).enumerate() {
        figures.push(Figure {
            scenario: "multi-turn",
            figure: format!("turn {} TTFT, prefix reuse vs none", i + 1),
            value: w.0.as_secs_f64() * 1e3,
            baseline: wo.0.as_secs_f64() * 1e3,
            unit: "ms",
            note: format!("prompt {} tokens, {} reused", w.1, w.2),
            identical: None,
            acceptance: None,
        });
    }
    Ok(figures)
}

fn concurrent(model: &Path, backend: &EngineConfig) -> Result<Vec<Figure>> {
    let e = engine(model, None, backend, SchedConfig::default())?;
    let params = GenerateParams {
        ignore_eos: true,
        ..greedy(128)
    };
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("Story number {i}: once upon a time, in a village by the sea,"))
        .collect();
    // Warm-up, then one stream alone and eight at once, alternating (this machine's speed
    // drifts between minutes), five times; medians.
    generate(&e, Prompt::Text(prompts[0].clone()), greedy(8))?;
    let (mut ones, mut alls) = (Vec::new(), Vec::new());
    let mut total = 0;
    for rep in 0..5 {
        let t = Instant::now();
        let (_, _, one) = generate(&e, Prompt::Text(prompts[rep].clone()), params.clone())?;
        ones.push(one.generated_tokens as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let rxs: Vec<_> = prompts
            .iter()
            .map(|p| {
                e.generate(Prompt::Text(format!("{p} ({rep})")), params.clone())
                    .1
            })
            .collect();
        total = 0;
        for rx in &rxs {
            let (_, _, s) = api::wait_done(rx, api::DEFAULT_WAIT).map_err(|m| anyhow!(m))?;
            total += s.generated_tokens;
        }
        alls.push(total as f64 / t.elapsed().as_secs_f64());
    }
    Ok(vec![Figure {
        scenario: "concurrent",
        figure: "8 streams x 128 tokens, aggregate vs one".into(),
        value: median(&mut alls),
        baseline: median(&mut ones),
        unit: "tok/s",
        note: format!("{total} tokens per round, median of 5 alternating rounds"),
        identical: None,
        acceptance: None,
    }])
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Copy and extraction prompts over about 1k tokens of text.
fn lookup_prompts() -> Vec<Prompt> {
    let text: String = TEXT.chars().take(4200).collect();
    let start: String = text.chars().take(300).collect();
    let half: String = TEXT.chars().take(2100).collect();
    let chat = |p: String| Prompt::Chat(vec![ChatMessage::user(p)]);
    vec![
        chat(format!(
            "Copy the following text exactly, word for word.\n\n{text}"
        )),
        Prompt::Text(format!(
            "{text}\n\nThe same text, copied exactly:\n\n{start}"
        )),
        Prompt::Text(format!("{half}\n\n{half}\n\n{start}")),
    ]
}

fn prompt_lookup(model: &Path, backend: &EngineConfig) -> Result<Vec<Figure>> {
    let e = engine(model, None, backend, SchedConfig::default())?;
    let mut figures = Vec::new();
    for (i, prompt) in lookup_prompts().into_iter().enumerate() {
        // Warm the prefix cache so both runs decode only.
        generate(&e, prompt.clone(), greedy(1))?;
        let (plain_text, _, plain) = generate(&e, prompt.clone(), greedy(128))?;
        let (spec_text, _, spec) = generate(
            &e,
            prompt,
            GenerateParams {
                speculation: Speculation::PROMPT_LOOKUP,
                ..greedy(128)
            },
        )?;
        figures.push(Figure {
            scenario: "prompt-lookup",
            figure: format!("prompt {} decode tok/s, lookup vs off", i + 1),
            value: spec.tokens_per_s(),
            baseline: plain.tokens_per_s(),
            unit: "tok/s",
            note: format!(
                "{} tokens, acceptance {:.2}, identical text: {}",
                spec.generated_tokens,
                spec.acceptance_rate().unwrap_or(0.0),
                spec_text == plain_text
            ),
            identical: Some(spec_text == plain_text),
            acceptance: spec.acceptance_rate(),
        });
    }
    Ok(figures)
}

fn draft(model: &Path, backend: &EngineConfig) -> Result<Vec<Figure>> {
    let e = engine(model, Some(model), backend, SchedConfig::default())?;
    let prompt = Prompt::Chat(vec![ChatMessage::user(QUESTIONS[3])]);
    let (plain_text, _, plain) = generate(&e, prompt.clone(), greedy(64))?;
    let (spec_text, _, spec) = generate(
        &e,
        prompt,
        GenerateParams {
            speculation: Speculation::Draft { tokens: 4 },
            ..greedy(64)
        },
    )?;
    Ok(vec![Figure {
        scenario: "draft",
        figure: "self-draft decode tok/s vs off".into(),
        value: spec.tokens_per_s(),
        baseline: plain.tokens_per_s(),
        unit: "tok/s",
        note: format!(
            "acceptance {:.2}, identical text: {}",
            spec.acceptance_rate().unwrap_or(0.0),
            spec_text == plain_text
        ),
        identical: Some(spec_text == plain_text),
        acceptance: spec.acceptance_rate(),
    }])
}

/// Constrained decoding's cost: the time per output token of the ten questions answered under a
/// JSON schema, against the same questions answered freely (greedy, 192 tokens at most; medians).
/// The first constrained answer also pays for the vocabulary's grammar trie (reported apart).
fn schema(model: &Path, backend: &EngineConfig) -> Result<Vec<Figure>> {
    let e = engine(model, None, backend, SchedConfig::default())?;
    let schema = json!({
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 160},
            "topics": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 6},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}
        },
        "required": ["answer", "topics", "confidence"],
        "additionalProperties": false
    });
    let constrained = || GenerateParams {
        constraint: Some(Constraint::JsonSchema(schema.clone())),
        ..greedy(192)
    };
    let ask = |q: &str, params| generate(&e, Prompt::Chat(vec![ChatMessage::user(q)]), params);
    let first = ask(QUESTIONS[0], constrained())?.2.time_to_first_token;
    let warm = ask(QUESTIONS[0], constrained())?.2.time_to_first_token;
    ask(QUESTIONS[0], greedy(192))?;
    let (mut with, mut without, mut tokens) = (Vec::new(), Vec::new(), (0, 0));
    for q in QUESTIONS {
        let (text, finish, stats) = ask(q, constrained())?;
        if finish == FinishReason::Stop {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|err| anyhow!("the constrained answer {text:?} is not JSON: {err}"))?;
        }
        with.push(stats.time_per_output_token().as_secs_f64() * 1e3);
        tokens.0 += stats.generated_tokens;
        let (_, _, stats) = ask(q, greedy(192))?;
        without.push(stats.time_per_output_token().as_secs_f64() * 1e3);
        tokens.1 += stats.generated_tokens;
    }
    Ok(vec![
        Figure {
            scenario: "schema",
            figure: "time per token, JSON schema vs free".into(),
            value: median(&mut with),
            baseline: median(&mut without),
            unit: "ms",
            note: format!(
                "medians of 10 answers; {} and {} tokens in all",
                tokens.0, tokens.1
            ),
            identical: None,
            acceptance: None,
        },
        Figure {
            scenario: "schema",
            figure: "first constrained TTFT vs the next (grammar trie)".into(),
            value: first.as_secs_f64() * 1e3,
            baseline: warm.as_secs_f64() * 1e3,
            unit: "ms",
            note: "the first builds the vocabulary's trie once per model".into(),
            identical: None,
            acceptance: None,
        },
    ])
}
