//! An answer's reasoning in the transcript: folded under the answer's header as a disclosure
//! ("Thought for 4.2 s"; an egui `CollapsingHeader`, so it takes the keyboard focus and Enter or
//! Space opens it like a click, and screen readers hear whether it is expanded) that opens to the
//! reasoning text, small and dimmed. While the model is still thinking the block reads
//! "Thinking…" and shows the reasoning as it streams; once the answer begins it folds. Also the
//! tool calls an answer made, and the footer's token count with the reasoning tokens apart.

use egui::RichText;
use hearth_engine::api::ToolCall;

use super::stream::Streaming;
use crate::conversation::{Answer, NodeId, Reasoning};

/// The folded block's header for a model that thought `seconds` (0: unknown).
pub fn thought_label(seconds: f64) -> String {
    if seconds.is_nan() || seconds <= 0.0 {
        "Thought".to_string()
    } else if seconds < 59.95 {
        format!("Thought for {seconds:.1} s")
    } else {
        let whole = seconds.round() as u64;
        format!("Thought for {} min {} s", whole / 60, whole % 60)
    }
}

/// The footer's token count: "120 tokens (80 reasoning)", or "40 tokens" without reasoning.
pub fn tokens_label(answer: &Answer) -> String {
    match answer.reasoning_tokens {
        0 => format!("{} tokens", answer.tokens),
        r => format!("{} tokens ({r} reasoning)", answer.tokens),
    }
}

/// The disclosure: `header` always, `text` (small, dimmed) when open. Its open state lives in
/// egui's memory under `salt`; `open` is the state it starts in.
fn fold(
    ui: &mut egui::Ui,
    salt: impl std::hash::Hash + std::fmt::Debug,
    header: &str,
    text: &str,
    open: bool,
) {
    egui::CollapsingHeader::new(RichText::new(header).small().weak())
        .id_salt(salt)
        .default_open(open)
        .show(ui, |ui| {
            ui.label(RichText::new(text.trim()).small().weak());
        });
}

/// A finished answer's reasoning, folded (nothing when it has none). `conversation` and `node`
/// keep each answer's open state apart.
pub fn finished(
    ui: &mut egui::Ui,
    conversation: &str,
    node: NodeId,
    reasoning: Option<&Reasoning>,
) {
    let Some(r) = reasoning.filter(|r| !r.text.trim().is_empty()) else {
        return;
    };
    let header = thought_label(r.seconds);
    fold(
        ui,
        ("reasoning", conversation, node),
        &header,
        &r.text,
        false,
    );
}

/// The streaming answer's reasoning: open while the model thinks, folded once it answers.
pub fn live(ui: &mut egui::Ui, s: &Streaming) {
    if !s.has_reasoning() {
        return;
    }
    if s.is_thinking() {
        fold(ui, ("thinking", s.request), "Thinking…", &s.reasoning, true);
    } else {
        let header = thought_label(s.thought_seconds());
        fold(ui, ("thought", s.request), &header, &s.reasoning, false);
    }
}

/// The tools an answer called, one small line each (the window does not run them).
pub fn tool_calls(ui: &mut egui::Ui, calls: &[ToolCall]) {
    for call in calls {
        let line = format!("Called {}({})", call.name, call.arguments);
        ui.label(RichText::new(line).small().monospace().weak());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_how_long_the_model_thought() {
        assert_eq!(thought_label(4.2), "Thought for 4.2 s");
        assert_eq!(thought_label(0.04), "Thought for 0.0 s");
        assert_eq!(thought_label(59.9), "Thought for 59.9 s");
        assert_eq!(thought_label(59.97), "Thought for 1 min 0 s");
        assert_eq!(thought_label(125.4), "Thought for 2 min 5 s");
        assert_eq!(thought_label(0.0), "Thought", "unknown");
        assert_eq!(thought_label(f64::NAN), "Thought");
    }

    #[test]
    fn the_footer_counts_reasoning_tokens_apart() {
        let answer = Answer {
            tokens: 120,
            reasoning_tokens: 80,
            ..Answer::default()
        };
        assert_eq!(tokens_label(&answer), "120 tokens (80 reasoning)");
        let plain = Answer {
            tokens: 40,
            ..Answer::default()
        };
        assert_eq!(tokens_label(&plain), "40 tokens");
    }
}
