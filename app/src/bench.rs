//! `hearth bench`: prompt-processing and generation speed in the manner of llama.cpp's
//! `llama-bench` (random tokens, an empty cache per repetition, mean ± standard deviation of
//! tokens/s), and with `--kernels` the matrix-vector kernels' weight-read throughput beside the
//! machine's measured read bandwidth.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use hearth_engine::backend::cpu::{CpuBackend, Level, dot::activation_type};
use hearth_engine::backend::{Backend, GpuBackend, OnBackend, Opened};
use hearth_engine::gguf::{GgufFile, TensorInfo};
use hearth_engine::model::Model;
use serde_json::json;

use crate::commands::BadInput;
use crate::format;
use crate::run::BackendArgs;

/// What `hearth bench` was asked to measure.
#[derive(Debug)]
pub struct BenchArgs {
    pub model: PathBuf,
    pub backend: BackendArgs,
    pub prompt: usize,
    pub n_gen: usize,
    /// Tokens in the cache before each test (untimed).
    pub depth: usize,
    pub reps: usize,
    pub json: bool,
    pub kernels: bool,
}

/// One result row: a test and its per-repetition rates.
struct Row {
    test: String,
    unit: &'static str,
    samples: Vec<f64>,
    extra: serde_json::Value,
}

impl Row {
    fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }

    fn sd(&self) -> f64 {
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.samples.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }

    fn median(&self) -> f64 {
        median(&self.samples).unwrap_or(0.0)
    }
}

/// The median of `samples`, `None` when there are none.
fn median(samples: &[f64]) -> Option<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => None,
        n if n % 2 == 1 => Some(s[n / 2]),
        n => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.reps == 0 {
        return Err(BadInput("--reps must be at least 1".into()).into());
    }
    let threads = args.backend.threads()?;
    if !args.kernels && args.prompt == 0 && args.n_gen == 0 {
        return Err(BadInput("nothing to measure: -p and -n are both 0".into()).into());
    }
    // The GPU times its passes, so the tg row can say how much of a token is spent in kernels.
    let profile = hearth_engine::backend::gpu::GpuOptions {
        profile: true,
        ..Default::default()
    };
    let opened = args.backend.open(profile)?;
    let label = match &opened {
        Opened::Gpu(gpu) if args.kernels => return gpu_kernels(args, gpu),
        _ if args.kernels => return kernels(args, threads),
        Opened::Gpu(gpu) => gpu.describe(),
        Opened::Cpu { .. } => format!("cpu {}", Level::detected().name()),
        Opened::Reference { .. } => "reference".into(),
    };
    opened.run(ModelBench {
        args,
        label,
        threads,
    })
}

/// [`model_bench`] on the opened backend.
struct ModelBench<'a> {
    args: &'a BenchArgs,
    label: String,
    threads: usize,
}

impl OnBackend for ModelBench<'_> {
    type Output = Result<()>;

    fn on<B: Backend + 'static>(self, backend: &dyn Fn() -> B) -> Result<()> {
        model_bench(self.args, backend(), self.label, self.threads)
    }
}

fn model_bench<B: Backend>(
    args: &BenchArgs,
    backend: B,
    label: String,
    threads: usize,
) -> Result<()>
where
    B::Tensor: Sized,
{
    let model = Model::open(&args.model, backend)?;
    let c = model.config();
    let needed = args.depth + args.prompt.max(args.n_gen);
    if needed > c.context_length {
        return Err(BadInput(format!(
            "the test needs {needed} positions; the model's context is {}",
            c.context_length
        ))
        .into());
    }
    let vocab = c.vocab_size as u32;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut random_tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.u32(..vocab)).collect() };
    // A cache holding `depth` tokens already, with room for `n` more.
    let depth = args.depth;
    let context = random_tokens(depth);
    let cache = |n: usize| -> Result<_> {
        let mut kv = model.kv_cache(depth + n)?;
        if depth > 0 {
            model.prefill(&mut kv, &context)?;
        }
        Ok(kv)
    };
    // llama-bench's names: `pp512`, `tg128 @ d4096`.
    let at = |test: String| match depth {
        0 => test,
        d => format!("{test} @ d{d}"),
    };
    let mut rows = Vec::new();
    if args.prompt > 0 {
        let mut samples = Vec::new();
        // One warm-up run (page in the weights, start the threads), then the timed ones.
        for rep in 0..=args.reps {
            let mut kv = cache(args.prompt)?;
            let tokens = random_tokens(args.prompt);
            let t0 = Instant::now();
            model.prefill(&mut kv, &tokens)?;
            let secs = t0.elapsed().as_secs_f64();
            if rep > 0 {
                samples.push(args.prompt as f64 / secs);
            }
        }
        rows.push(Row {
            test: at(format!("pp{}", args.prompt)),
            unit: "t/s",
            samples,
            extra: json!({"n_prompt": args.prompt, "n_gen": 0, "n_depth": depth}),
        });
    }
    if args.n_gen > 0 {
        let mut samples = Vec::new();
        let mut device_fractions = Vec::new();
        let (mut dispatches, mut host_ms) = (Vec::new(), Vec::new());
        for rep in 0..=args.reps {
            let n = if rep == 0 {
                args.n_gen.min(16)
            } else {
                args.n_gen
            };
            let mut kv = cache(args.n_gen)?;
            let tokens = random_tokens(n);
            model.backend().device_time();
            model.backend().submitted();
            let mut recording = Duration::ZERO;
            let t0 = Instant::now();
            // A greedy token step: the backend picks the token (a GPU reads back one word).
            for &t in &tokens {
                let t1 = cpu_time::ThreadTime::try_now().ok();
                let logits = model.forward(&mut kv, &[t], 0..1)?;
                recording += t1.map_or(Duration::ZERO, |t1| t1.elapsed());
                model.backend().argmax(&logits)?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let device = model.backend().device_time();
            let submitted = model.backend().submitted();
            if rep > 0 {
                samples.push(n as f64 / secs);
                if let Some(d) = device {
                    device_fractions.push(d.as_secs_f64() / secs);
                }
                if let Some(s) = submitted {
                    dispatches.push(s.dispatches as f64 / n as f64);
                    // CPU time recording the forward pass (a GPU's forward only records) plus
                    // encoding and submitting it.
                    host_ms.push(1e3 * (recording + s.encode).as_secs_f64() / n as f64);
                }
            }
        }
        // The share of a token's wall time the device spent in the forward pass's compute pass;
        // the rest is recording, submission, dispatch gaps and the read-back.
        let in_kernels = (!device_fractions.is_empty())
            .then(|| device_fractions.iter().sum::<f64>() / device_fractions.len() as f64);
        rows.push(Row {
            test: at(format!("tg{}", args.n_gen)),
            unit: "t/s",
            samples,
            extra: json!({
                "n_prompt": 0,
                "n_gen": args.n_gen,
                "n_depth": depth,
                "device_time_fraction": in_kernels,
                "dispatches_per_token": median(&dispatches),
                "host_ms_per_token": median(&host_ms),
            }),
        });
        if let (Some(d), Some(h)) = (median(&dispatches), median(&host_ms))
            && !args.json
        {
            eprintln!(
                "tg{}: {d:.0} kernel dispatches per token, {h:.3} ms of host CPU time per \
                 token to record and submit them",
                args.n_gen
            );
        }
        if let Some(f) = in_kernels
            && !args.json
        {
            eprintln!(
                "tg{}: {:.0}% of each token's time in the GPU's compute pass, {:.0}% outside it",
                args.n_gen,
                100.0 * f,
                100.0 * (1.0 - f)
            );
        }
    }
    let size = std::fs::metadata(&args.model).map_or(0, |m| m.len());
    let name = model_name(&args.model, model.file());
    let params = model
        .file()
        .tensors()
        .iter()
        .map(|t| t.n_elements())
        .sum::<u64>();
    print_rows(
        args.json,
        &rows,
        &[
            ("model", name),
            ("size", format::bytes(size)),
            ("params", format::count(params)),
            ("backend", label),
            ("threads", threads.to_string()),
        ],
        json!({"model_bytes": size, "params": params, "threads": threads}),
    )
}

fn model_name(path: &Path, file: &GgufFile) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.opt_str("general.name") {
        Ok(Some(name)) if !name.trim().is_empty() => name.to_string(),
        _ => stem,
    }
}

/// Prints `rows` as a Markdown table (the `columns` first, then test and rate) or as JSON lines.
fn print_rows(
    json_out: bool,
    rows: &[Row],
    columns: &[(&str, String)],
    extra: serde_json::Value,
) -> Result<()> {
    if json_out {
        let mut all = Vec::new();
        for r in rows {
            let mut obj = serde_json::Map::new();
            for (k, v) in columns {
                obj.insert((*k).to_string(), json!(v));
            }
            if let serde_json::Value::Object(e) = &extra {
                obj.extend(e.clone());
            }
            if let serde_json::Value::Object(e) = &r.extra {
                obj.extend(e.clone());
            }
            obj.insert("test".into(), json!(r.test));
            obj.insert("unit".into(), json!(r.unit));
            obj.insert("avg".into(), json!(r.mean()));
            obj.insert("stddev".into(), json!(r.sd()));
            obj.insert("median".into(), json!(r.median()));
            obj.insert("samples".into(), json!(r.samples));
            all.push(serde_json::Value::Object(obj));
        }
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut header: Vec<String> = columns.iter().map(|(k, _)| (*k).to_string()).collect();
    header.push("test".into());
    header.push(rows.first().map_or("t/s", |r| r.unit).to_string());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = columns.iter().map(|(_, v)| v.clone()).collect();
            cells.push(r.test.clone());
            cells.push(format!("{:.2} ± {:.2}", r.mean(), r.sd()));
            cells
        })
        .collect();
    print_table(&header, &table);
    Ok(())
}

fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let body: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                // Numbers (the last column) right-aligned, as llama-bench does.
                if i + 1 == cells.len() {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("| {} |", body.join(" | "));
    };
    line(header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i + 1 == widths.len() {
                format!("{}:", "-".repeat(w.saturating_sub(1)))
            } else {
                "-".repeat(w)
            }
        })
        .collect();
    println!("| {} |", rule.join(" | "));
    for r in rows {
        line(r);
    }
}

/// `--kernels`: for each quant type of the model's matrices, one matvec over every matrix of that
/// type (a weight set far larger than the caches), at every dispatch level the CPU supports, in
/// GB/s of weight bytes; beside it the read bandwidth of a plain streaming read of as many bytes.
fn kernels(args: &BenchArgs, threads: usize) -> Result<()> {
    let file = std::sync::Arc::new(GgufFile::open(&args.model)?);
    let mut types = Vec::new();
    for info in file.tensors().iter().filter(|i| i.dims.len() == 2) {
        if activation_type(info.ty).is_some() && !types.contains(&info.ty) {
            types.push(info.ty);
        }
    }
    let mut table = Vec::new();
    let mut json_rows = Vec::new();
    let reps = args.reps.max(3);
    for ty in types {
        let infos: Vec<&TensorInfo> = file
            .tensors()
            .iter()
            .filter(|i| i.dims.len() == 2 && i.ty == ty)
            .collect();
        let bytes: u64 = infos.iter().map(|i| i.size).sum();
        // The yardstick: a streaming read of as many bytes.
        let buf: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let stream = CpuBackend::with_threads(threads);
        let read = median_secs(reps, || {
            std::hint::black_box(stream.stream_read(&buf));
        });
        let read_gbs = bytes as f64 / read / 1e9;
        drop(buf);
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let b = CpuBackend::with_threads_and_level(threads, level);
            let weights = infos
                .iter()
                .map(|i| b.weight(&file, i))
                .collect::<Result<Vec<_>, _>>()?;
            let ran_at = weights.first().and_then(|w| w.level()).unwrap_or(level);
            if ran_at != level {
                continue; // this level has no kernel of its own for the type
            }
            let xs: Vec<_> = infos
                .iter()
                .map(|i| {
                    let cols = i.dims[0] as usize;
                    let data = (0..cols)
                        .map(|c| ((c * 7 % 13) as f32 - 6.0) * 0.1)
                        .collect();
                    hearth_engine::backend::host::HostTensor::from_vec(1, cols, data)
                        .expect("one row")
                })
                .collect();
            let mut outs: Vec<_> = infos
                .iter()
                .map(|i| b.tensor(1, i.dims[1] as usize))
                .collect();
            let secs = median_secs(reps, || {
                for ((x, w), o) in xs.iter().zip(&weights).zip(outs.iter_mut()) {
                    b.matmul(x, w, o);
                }
            });
            let gbs = bytes as f64 / secs / 1e9;
            table.push(vec![
                ty.to_string(),
                infos.len().to_string(),
                format::bytes(bytes),
                level.name().to_string(),
                threads.to_string(),
                format!("{gbs:.1}"),
                format!("{read_gbs:.1}"),
                format!("{:.0}%", 100.0 * gbs / read_gbs),
            ]);
            json_rows.push(json!({
                "type": ty.to_string(),
                "tensors": infos.len(),
                "bytes": bytes,
                "level": level.name(),
                "threads": threads,
                "matvec_gb_s": gbs,
                "read_gb_s": read_gbs,
                "fraction_of_read": gbs / read_gbs,
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_rows)?);
    } else {
        let header: Vec<String> = [
            "type",
            "tensors",
            "bytes",
            "level",
            "threads",
            "matvec GB/s",
            "read GB/s",
            "of read",
        ]
        .map(str::to_string)
        .to_vec();
        print_table(&header, &table);
    }
    Ok(())
}

/// `--kernels` on the GPU: per quant type, one matvec over every matrix of that type, and one
/// over the largest matrix alone, recorded into one submission and timed to completion, in GB/s
/// of weight bytes read (submission overhead included, spread over the matrices).
fn gpu_kernels(args: &BenchArgs, gpu: &GpuBackend) -> Result<()> {
    let file = std::sync::Arc::new(GgufFile::open(&args.model)?);
    let mut types = Vec::new();
    for info in file.tensors().iter().filter(|i| i.dims.len() == 2) {
        if !types.contains(&info.ty) {
            types.push(info.ty);
        }
    }
    let reps = args.reps.max(3);
    let mut table = Vec::new();
    let mut json_rows = Vec::new();
    for ty in types {
        let infos: Vec<&TensorInfo> = file
            .tensors()
            .iter()
            .filter(|i| i.dims.len() == 2 && i.ty == ty)
            .collect();
        let largest = infos
            .iter()
            .copied()
            .max_by_key(|i| i.size)
            .expect("a type listed has a tensor");
        for (what, set) in [("all", infos.clone()), ("largest", vec![largest])] {
            let weights = set
                .iter()
                .map(|i| gpu.weight(&file, i))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes: u64 = set.iter().map(|i| i.size).sum();
            let xs: Vec<_> = set
                .iter()
                .map(|i| {
                    let cols = i.dims[0] as usize;
                    let data: Vec<f32> = (0..cols)
                        .map(|c| ((c * 7 % 13) as f32 - 6.0) * 0.1)
                        .collect();
                    gpu.tensor_from(1, cols, &data)
                })
                .collect();
            let mut outs: Vec<_> = set
                .iter()
                .map(|i| gpu.tensor(1, i.dims[1] as usize))
                .collect();
            // Enough passes over the set that one submission runs for a while.
            let passes = (256 << 20) / bytes.max(1) + 1;
            let mut failed = None;
            let secs = median_secs(reps, || {
                for _ in 0..passes {
                    for ((x, w), o) in xs.iter().zip(&weights).zip(outs.iter_mut()) {
                        gpu.matmul(x, w, o);
                    }
                }
                if let Err(e) = gpu.finish() {
                    failed = Some(e);
                }
            }) / passes as f64;
            if let Some(e) = failed {
                return Err(e.into());
            }
            let gbs = bytes as f64 / secs / 1e9;
            let shape = format!("{} x {}", largest.dims[1], largest.dims[0]);
            table.push(vec![
                ty.to_string(),
                what.to_string(),
                set.len().to_string(),
                if what == "largest" {
                    shape.clone()
                } else {
                    String::new()
                },
                format::bytes(bytes),
                format!("{:.1}", secs * 1e6),
                format!("{gbs:.1}"),
            ]);
            json_rows.push(json!({
                "adapter": gpu.info().name,
                "api": gpu.info().api,
                "type": ty.to_string(),
                "set": what,
                "tensors": set.len(),
                "shape": if what == "largest" { json!(shape) } else { json!(null) },
                "bytes": bytes,
                "us": secs * 1e6,
                "matvec_gb_s": gbs,
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_rows)?);
    } else {
        println!("adapter: {}", gpu.info());
        let header: Vec<String> = [
            "type",
            "set",
            "tensors",
            "shape",
            "bytes",
            "µs",
            "matvec GB/s",
        ]
        .map(str::to_string)
        .to_vec();
        print_table(&header, &table);
    }
    Ok(())
}

/// The median wall time of `reps` runs of `f`, after one warm-up run.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64()
}
