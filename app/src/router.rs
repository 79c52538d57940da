//! `hearth fit-router` and `hearth eval-router`: the router's probe learned and measured on
//! graded question sets (`assets/router/`, built into the binary; any JSONL set of the same
//! shape can be given instead).
//!
//! Both run the local model through the engine API on every question (the chat template, greedy,
//! 48 tokens by default, as the sets' baseline was measured), grade the answer, and read the
//! prompt's final hidden state. `fit-router` fits the probe on those states (cross-validated L2
//! strength, threshold for a target cloud share) and writes it as JSON; `eval-router` scores a
//! set with a probe and reports AUROC, the hybrid accuracy curve (table and SVG plot) and the
//! share of a perfect router's gain captured at a cloud share.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use hearth_engine::api::{self, EngineHandle, Event, GenerateParams, ModelInfo, Prompt};
use hearth_engine::route::eval::{self, EvalItem};
use hearth_engine::route::probe::{self, Probe, Training};
use hearth_engine::sample::SamplerConfig;
use hearth_engine::sched::ContextPolicy;
use hearth_engine::tokenizer::ChatMessage;
use serde_json::json;

use crate::commands::BadInput;
use crate::run::BackendArgs;

/// The bundled training set (1,800 questions) and evaluation set (300), disjoint.
const TRAIN_SET: &str = include_str!("../../assets/router/router-train.jsonl");
const EVAL_SET: &str = include_str!("../../assets/router/router-eval.jsonl");

/// What the local model did with one question.
struct Observed {
    hidden: Vec<f32>,
    wrong: bool,
    prompt_tokens: usize,
}

/// Options shared by both commands.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterArgs {
    /// The GGUF model file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Tokens each local answer may have.
    #[arg(short = 'n', long = "n-predict", default_value_t = 48)]
    pub n_predict: usize,
    /// The cloud share the threshold is set for (0 to 1).
    #[arg(long, default_value_t = 0.3)]
    pub share: f64,
    /// Use only the first N questions of the set.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also write each question's id, grade, prompt length, answer and hidden state as JSONL
    /// (for analysis).
    #[arg(long)]
    pub save_observations: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

fn read_set(path: Option<&Path>, bundled: &str, limit: Option<usize>) -> Result<Vec<EvalItem>> {
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| BadInput(format!("{}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (bundled.to_string(), "the bundled set".to_string()),
    };
    let mut items = eval::parse_set(&text).map_err(|e| BadInput(format!("{name}: {e}")))?;
    if let Some(n) = limit {
        items.truncate(n);
    }
    if items.is_empty() {
        return Err(BadInput(format!("{name}: no questions")).into());
    }
    Ok(items)
}

fn check_share(share: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&share) {
        return Err(BadInput(format!("--share must be between 0 and 1, not {share}")).into());
    }
    Ok(())
}

fn start_engine(args: &RouterArgs) -> Result<(EngineHandle, ModelInfo)> {
    crate::run::load_engine(args.backend.engine_config(), &args.model, None)
}

/// Runs every question through the local model (all queued at once: the engine batches them),
/// with a progress line on stderr.
fn observe(engine: &EngineHandle, items: &[EvalItem], args: &RouterArgs) -> Result<Vec<Observed>> {
    let n_predict = args.n_predict;
    let mut save = match &args.save_observations {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let params = GenerateParams {
        max_tokens: n_predict,
        sampler: SamplerConfig::greedy(),
        context: ContextPolicy::Stop,
        hidden_state: true,
        probe_tokens: if save.is_some() { 16 } else { 0 },
        ..GenerateParams::default()
    };
    let pending: Vec<_> = items
        .iter()
        .map(|it| {
            let prompt = Prompt::Chat(vec![ChatMessage::new("user", it.prompt.clone())]);
            engine.generate(prompt, params.clone()).1
        })
        .collect();
    let start = Instant::now();
    let mut out = Vec::with_capacity(items.len());
    for (i, (item, rx)) in items.iter().zip(pending).enumerate() {
        let mut hidden = None;
        let mut later = Vec::new();
        let mut sure = Vec::new();
        let (text, stats) = loop {
            match rx.recv_timeout(api::DEFAULT_WAIT) {
                Ok(Event::Hidden { values, .. }) if hidden.is_none() => hidden = Some(values),
                Ok(Event::Hidden { values, .. }) => later.push(values),
                Ok(Event::Confidence {
                    logprob, entropy, ..
                }) => sure.push([logprob, entropy]),
                Ok(Event::Done { text, stats, .. }) => break (text, stats),
                Ok(Event::Error { message, .. }) => {
                    return Err(anyhow!("question {}: {message}", item.id));
                }
                Ok(_) => {}
                Err(e) => return Err(anyhow!("question {}: no answer: {e}", item.id)),
            }
        };
        let hidden = hidden.ok_or_else(|| {
            anyhow!(
                "question {}: the engine sent no hidden state (the prompt did not fit?)",
                item.id
            )
        })?;
        if let Some(w) = &mut save {
            let line = json!({
                "id": item.id,
                "source": item.source,
                "wrong": !item.grade(&text),
                "prompt_tokens": stats.prompt_tokens,
                "answer": text,
                "hidden": hidden,
                "token_hidden": later,
                "confidence": sure,
            });
            writeln!(w, "{line}")?;
        }
        out.push(Observed {
            hidden,
            wrong: !item.grade(&text),
            prompt_tokens: stats.prompt_tokens,
        });
        if (i + 1) % 25 == 0 || i + 1 == items.len() {
            eprint!(
                "\rhearth: {}/{} questions answered locally ({:.0} s)",
                i + 1,
                items.len(),
                start.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    eprintln!();
    Ok(out)
}

fn accuracy(obs: &[Observed]) -> f64 {
    obs.iter().filter(|o| !o.wrong).count() as f64 / obs.len().max(1) as f64
}

/// `hearth fit-router`.
pub fn fit(args: &RouterArgs, train: Option<&Path>, out: &Path) -> Result<()> {
    check_share(args.share)?;
    let items = read_set(train, TRAIN_SET, args.limit)?;
    let (engine, info) = start_engine(args)?;
    let obs = observe(&engine, &items, args)?;
    drop(engine);
    let wrong: Vec<bool> = obs.iter().map(|o| o.wrong).collect();
    if wrong.iter().all(|&w| w) || wrong.iter().all(|&w| !w) {
        return Err(BadInput(format!(
            "the local model got {} of {} training questions right: a probe needs both kinds",
            obs.len() - wrong.iter().filter(|&&w| w).count(),
            obs.len()
        ))
        .into());
    }
    let hidden: Vec<Vec<f32>> = obs.into_iter().map(|o| o.hidden).collect();
    let model = info.probe_key();
    let source = train.map_or("router-train.jsonl (bundled)".to_string(), |p| {
        p.display().to_string()
    });
    let right = wrong.iter().filter(|&&w| !w).count();
    let fitted_on = format!(
        "{source}: {} questions, local accuracy {right}/{}, greedy {} tokens",
        wrong.len(),
        wrong.len(),
        args.n_predict
    );
    let t = Instant::now();
    let p = probe::fit(
        model,
        Training {
            hidden: &hidden,
            wrong: &wrong,
        },
        args.share,
        fitted_on,
    );
    std::fs::write(out, p.to_json()).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "hearth: fitted the router probe for {} on {}\n  L2 {} (5-fold cross-validated AUROC {:.3}), threshold {:.4} sends {:.0}% of the training questions to the cloud ({:.1} s)\n  written to {}",
        p.model.name,
        p.fitted_on,
        p.l2,
        p.cv_auroc,
        p.threshold,
        p.target_share * 100.0,
        t.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// `hearth eval-router`.
pub fn evaluate(
    args: &RouterArgs,
    set: Option<&Path>,
    probe_file: Option<&Path>,
    plot: Option<&Path>,
    json_out: bool,
) -> Result<()> {
    check_share(args.share)?;
    let items = read_set(set, EVAL_SET, args.limit)?;
    let (engine, info) = start_engine(args)?;
    let probe = match probe_file {
        Some(p) => Probe::from_json(
            &std::fs::read_to_string(p).map_err(|e| BadInput(format!("{}: {e}", p.display())))?,
        )
        .map_err(|e| BadInput(format!("{}: {e}", p.display())))?,
        None => {
            probe::builtin_for(&info.probe_key()).ok_or_else(|| {
                    BadInput(format!(
                        "Hearth ships no router probe for {}: fit one with `hearth fit-router -m {}` and pass it with --probe",
                        info.name,
                        args.model.display()
                    ))
                })?
        }
    };
    let obs = observe(&engine, &items, args)?;
    drop(engine);
    if !probe.matches(&info.probe_key()) {
        return Err(BadInput(format!(
            "the probe was fitted on {} ({}, width {}), not on this model ({}, {}, width {})",
            probe.model.name,
            probe.model.architecture,
            probe.model.d_model,
            info.name,
            info.architecture,
            info.d_model
        ))
        .into());
    }
    let wrong: Vec<bool> = obs.iter().map(|o| o.wrong).collect();
    let risk: Vec<f64> = obs.iter().map(|o| probe.risk(&o.hidden)).collect();
    let length: Vec<f64> = obs.iter().map(|o| o.prompt_tokens as f64).collect();
    let auroc = eval::auroc(&risk, &wrong);
    let length_auroc = eval::auroc(&length, &wrong);
    let at = eval::at_share(&risk, &wrong, args.share);
    let at30 = eval::at_share(&risk, &wrong, 0.3);
    let shipped_share =
        risk.iter().filter(|&&r| r >= probe.threshold).count() as f64 / risk.len() as f64;
    let curve: Vec<eval::SharePoint> = (0..=20)
        .map(|i| eval::at_share(&risk, &wrong, i as f64 / 20.0))
        .collect();
    let mut by_source: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (it, o) in items.iter().zip(&obs) {
        let e = by_source.entry(it.source.as_str()).or_default();
        e.0 += usize::from(!o.wrong);
        e.1 += 1;
    }
    if let Some(path) = plot {
        write_plot(path, &curve, &info.name, auroc)?;
    }
    if json_out {
        let report = json!({
            "model": info.name,
            "questions": obs.len(),
            "local_accuracy": accuracy(&obs),
            "auroc": auroc,
            "prompt_length_auroc": length_auroc,
            "share": args.share,
            "accuracy_at_share": at.accuracy,
            "random_at_share": at.random,
            "perfect_at_share": at.perfect,
            "gain_share_at_share": at.gain_share(),
            "gain_share_at_30": at30.gain_share(),
            "threshold_for_share": eval::threshold_for_share(&risk, args.share),
            "shipped_threshold": probe.threshold,
            "shipped_threshold_cloud_share": shipped_share,
            "by_source": by_source.iter().map(|(s, (r, n))| (s.to_string(), json!({"right": r, "questions": n}))).collect::<serde_json::Map<_, _>>(),
            "curve": curve.iter().map(|p| json!({
                "cloud_share": p.cloud_share,
                "accuracy": p.accuracy,
                "random": p.random,
                "perfect": p.perfect,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let pct = |x: f64| x * 100.0;
    let opt = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    println!(
        "router evaluation: {} on {} questions",
        info.name,
        obs.len()
    );
    println!(
        "  local accuracy      {:.1}% ({} right)",
        pct(accuracy(&obs)),
        obs.iter().filter(|o| !o.wrong).count()
    );
    for (s, (r, n)) in &by_source {
        println!("    {s:<16} {r}/{n}");
    }
    println!(
        "  AUROC (probe)       {}   (prompt length: {})",
        opt(auroc),
        opt(length_auroc)
    );
    println!(
        "  at {:.0}% to the cloud  hybrid accuracy {:.1}%, random {:.1}%, perfect {:.1}%: {} of the perfect gain",
        pct(args.share),
        pct(at.accuracy),
        pct(at.random),
        pct(at.perfect),
        at.gain_share()
            .map_or("n/a".into(), |g| format!("{:.0}%", pct(g)))
    );
    println!(
        "  threshold for {:.0}%   {:.4} on this set; the probe's own threshold {:.4} sends {:.1}% here",
        pct(args.share),
        eval::threshold_for_share(&risk, args.share),
        probe.threshold,
        pct(shipped_share)
    );
    println!("  cloud share   hybrid   random   perfect");
    for p in curve.iter().step_by(2) {
        println!(
            "  {:>9.0}%   {:>5.1}%   {:>5.1}%   {:>6.1}%",
            pct(p.cloud_share),
            pct(p.accuracy),
            pct(p.random),
            pct(p.perfect)
        );
    }
    if let Some(p) = plot {
        println!("  plot written to {}", p.display());
    }
    Ok(())
}

/// The hybrid accuracy curve as an SVG image: the probe, random routing and a perfect router
/// against the cloud share.
fn write_plot(
    path: &Path,
    curve: &[eval::SharePoint],
    model: &str,
    auroc: Option<f64>,
) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let title = format!(
            "{model}: hybrid accuracy vs cloud share (AUROC {})",
            auroc.map_or("n/a".into(), |a| format!("{a:.3}"))
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..100f64, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("share of questions sent to the cloud (%)")
            .y_desc("accuracy (%)")
            .draw()?;
        let series = [
            ("router probe", BLUE, 0usize),
            ("random routing", RGBColor(128, 128, 128), 1),
            ("perfect router", RGBColor(0, 150, 0), 2),
        ];
        for (name, color, k) in series {
            let points = curve.iter().map(|p| {
                let y = match k {
                    0 => p.accuracy,
                    1 => p.random,
                    _ => p.perfect,
                };
                (p.cloud_share * 100.0, y * 100.0)
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("writing the plot {}: {e}", path.display()))
}
