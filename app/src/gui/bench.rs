//! `hearth bench-ui`: the window's frame time (building the UI and tessellating it, without a GPU)
//! while an answer streams into a long conversation, as the desktop app would see it at a given
//! token rate. The frames run back to back on a headless egui context, so the figures are the
//! UI thread's own cost per frame; rasterizing on the GPU comes on top.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use hearth_engine::api::{BackendKind, EngineConfig};
use hearth_engine::route::Route;
use hearth_engine::sched::SeqStats;

use super::app::{HearthApp, Options};
use super::stream::Streaming;
use crate::conversation::store::DataDirs;
use crate::conversation::{Answer, Conversation};

/// What a streamed answer looks like: paragraphs, a list and a code block.
const ANSWER: &str = "Here is how it works. The **engine** runs on its own thread and the window \
only draws what it has.\n\n1. The user sends a message.\n2. Tokens stream back as events.\n3. \
Each event asks for a repaint.\n\n```rust\nfn main() {\n    let answer = 42;\n    println!(\"{answer}\");\n}\n```\n\nThat \
is all: nothing waits on the engine, the disk or the network. ";

/// Measured frame times.
#[derive(Debug)]
pub struct Frames {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

fn summarize(mut times: Vec<Duration>) -> Frames {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Frames {
        p50: at(0.5),
        p99: at(0.99),
        max: *times.last().expect("frames"),
    }
}

/// A conversation of `messages` messages (questions and Markdown answers).
fn conversation(messages: usize) -> Conversation {
    let mut c = Conversation::new(crate::conversation::store::new_id());
    let stats = SeqStats {
        prompt_tokens: 40,
        generated_tokens: 120,
        time_to_first_token: Duration::from_millis(90),
        decode_time: Duration::from_millis(800),
        ..SeqStats::default()
    };
    for i in 0..messages {
        if i % 2 == 0 {
            c.push_user(format!(
                "Question {}: how does the window stay smooth?",
                i / 2 + 1
            ));
        } else {
            let answer = Answer::from_stats("bench", &Route::local("local only"), &stats, "stop");
            c.push_assistant(ANSWER, Some(answer));
        }
    }
    c
}

/// Runs `frames` frames of a 1024x720 window showing `messages` messages while an answer streams
/// in at `tokens_per_s` (60 frames a second, about 4 characters a token).
pub fn measure(messages: usize, frames: usize, tokens_per_s: f64) -> Result<Frames> {
    let dir = tempfile::tempdir()?;
    let ctx = egui::Context::default();
    let mut app = HearthApp::new(
        &ctx,
        Options {
            model: None,
            dirs: Some(DataDirs {
                data: dir.path().join("data"),
                config: dir.path().join("config"),
            }),
            engine: Some(EngineConfig {
                backend: BackendKind::Cpu,
                ..EngineConfig::default()
            }),
        },
    )?;
    let start = Instant::now();
    while !app.loaded_store {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(anyhow!("the conversation store did not open"));
        }
        std::thread::sleep(Duration::from_millis(5));
        app.drain_events();
    }
    let c = conversation(messages);
    let id = c.id.clone();
    app.conversations.insert(0, c);
    app.current = Some(id.clone());
    app.streaming = Some(Streaming::new(u64::MAX, id, None));
    let chars_per_frame = tokens_per_s / 60.0 * 4.0;
    let stream: Vec<char> = ANSWER.repeat(64).chars().collect();
    let mut times = Vec::with_capacity(frames);
    let mut sent = 0.0f64;
    // Two warm-up frames lay everything out once (fonts, caches), as a window's first frames do.
    for frame in 0..frames + 2 {
        sent += chars_per_frame;
        if let Some(s) = &mut app.streaming {
            let upto = (sent as usize).min(stream.len());
            s.text = stream[..upto].iter().collect();
        }
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1024.0, 720.0),
            )),
            time: Some(frame as f64 / 60.0),
            ..egui::RawInput::default()
        };
        let t0 = Instant::now();
        let out = ctx.run_ui(input, |ui| app.draw(ui));
        let primitives = ctx.tessellate(out.shapes, out.pixels_per_point);
        let took = t0.elapsed();
        std::hint::black_box(primitives);
        if frame >= 2 {
            times.push(took);
        }
    }
    Ok(summarize(times))
}

/// `hearth bench-ui`.
pub fn run(messages: usize, frames: usize, tokens_per_s: f64, json: bool) -> Result<()> {
    let short = measure(2, frames, tokens_per_s)?;
    let long = measure(messages, frames, tokens_per_s)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "messages": messages, "frames": frames, "tokens_per_s": tokens_per_s,
                "p50_ms": ms(long.p50), "p99_ms": ms(long.p99), "max_ms": ms(long.max),
                "baseline_2_messages": {
                    "p50_ms": ms(short.p50), "p99_ms": ms(short.p99), "max_ms": ms(short.max)
                },
            })
        );
    } else {
        println!(
            "frame time while an answer streams at {tokens_per_s} tok/s ({frames} frames, UI thread, no GPU):"
        );
        for (name, f) in [
            ("2 messages", &short),
            (&format!("{messages} messages")[..], &long),
        ] {
            println!(
                "  {name:<14} p50 {:6.2} ms   p99 {:6.2} ms   max {:6.2} ms",
                ms(f.p50),
                ms(f.p99),
                ms(f.max)
            );
        }
    }
    Ok(())
}
