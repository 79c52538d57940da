//! An answer streaming in: its answer and reasoning text as the engine's tokens arrive
//! (`Event::Token`'s [`TextKind`]), how long the model thought (from its first reasoning token to
//! its first answer token, or the end), and the [`Reply`] it becomes in the conversation when
//! `Event::Done` (or a closed channel) ends it. Drawn by `reasoning.rs` and `view.rs`.

use std::time::{Duration, Instant};

use hearth_engine::api::{RequestId, TextKind, ToolCall};

use crate::conversation::{Answer, NodeId, Reasoning, Reply};

/// An answer streaming in.
#[derive(Debug)]
pub struct Streaming {
    pub request: RequestId,
    pub conversation: String,
    /// Regenerating this assistant message (the answer becomes its alternative).
    pub replaces: Option<NodeId>,
    /// The answer so far.
    pub text: String,
    /// The model's reasoning so far (before its answer).
    pub reasoning: String,
    /// The tool calls the model made (they come whole, with `Event::Done`).
    pub tool_calls: Vec<ToolCall>,
    /// When the first reasoning token arrived.
    pub(super) thinking_since: Option<Instant>,
    /// How long the model thought, once its answer began (or the request ended).
    pub(super) thought: Option<Duration>,
}

impl Streaming {
    pub fn new(request: RequestId, conversation: String, replaces: Option<NodeId>) -> Streaming {
        Streaming {
            request,
            conversation,
            replaces,
            text: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            thinking_since: None,
            thought: None,
        }
    }

    /// Adds a streamed piece of the answer or of the reasoning.
    pub fn token(&mut self, kind: TextKind, text: &str) {
        match kind {
            TextKind::Reasoning => {
                self.thinking_since.get_or_insert_with(Instant::now);
                self.reasoning.push_str(text);
            }
            TextKind::Answer => {
                if !text.is_empty() {
                    self.stop_clock();
                }
                self.text.push_str(text);
            }
        }
    }

    /// `Event::Done`'s whole answer, reasoning (kept as streamed when it has none) and calls.
    pub fn done(&mut self, text: String, reasoning: String, tool_calls: Vec<ToolCall>) {
        self.stop_clock();
        self.text = text;
        if !reasoning.is_empty() {
            self.reasoning = reasoning;
        }
        self.tool_calls = tool_calls;
    }

    fn stop_clock(&mut self) {
        if let (Some(since), None) = (self.thinking_since, self.thought) {
            self.thought = Some(since.elapsed());
        }
    }

    /// Whether the model is still thinking (reasoning came, no answer yet).
    pub fn is_thinking(&self) -> bool {
        self.thinking_since.is_some() && self.thought.is_none()
    }

    /// How long the model thought, or has been thinking (0 without streamed reasoning).
    pub fn thought_seconds(&self) -> f64 {
        self.thought
            .or_else(|| self.thinking_since.map(|s| s.elapsed()))
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Whether there is reasoning to show (whitespace alone is none).
    pub fn has_reasoning(&self) -> bool {
        !self.reasoning.trim().is_empty()
    }

    /// What goes into the conversation: the answer with its reasoning, calls and footer.
    pub fn into_reply(self, answer: Option<Answer>) -> Reply {
        let seconds = self.thought_seconds();
        let reasoning = self.has_reasoning().then_some(Reasoning {
            text: self.reasoning,
            seconds,
        });
        Reply {
            content: self.text,
            reasoning,
            tool_calls: self.tool_calls,
            answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_from_the_first_reasoning_token_to_the_first_answer_token() {
        let mut s = Streaming::new(3, "c".into(), None);
        s.token(TextKind::Answer, "");
        assert!(!s.is_thinking() && s.thought_seconds() == 0.0);
        s.token(TextKind::Reasoning, "Hmm, ");
        assert!(s.is_thinking());
        s.thinking_since = Instant::now().checked_sub(Duration::from_millis(1500));
        s.token(TextKind::Reasoning, "Paris.");
        s.token(TextKind::Answer, "Paris");
        assert!(!s.is_thinking());
        let took = s.thought_seconds();
        assert!((1.5..5.0).contains(&took), "{took}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.thought_seconds(), took, "the clock stopped at the answer");
        s.done("Paris.".into(), "Hmm, Paris.".into(), Vec::new());
        let reply = s.into_reply(None);
        assert_eq!(reply.content, "Paris.");
        let r = reply.reasoning.unwrap();
        assert_eq!((r.text.as_str(), r.seconds), ("Hmm, Paris.", took));
    }

    #[test]
    fn an_answer_without_reasoning_or_with_whitespace_alone_keeps_none() {
        let mut s = Streaming::new(4, "c".into(), None);
        s.token(TextKind::Reasoning, "\n\n");
        s.token(TextKind::Answer, "Hi");
        s.done("Hi".into(), String::new(), Vec::new());
        let reply = s.into_reply(None);
        assert_eq!((reply.content.as_str(), reply.reasoning), ("Hi", None));
    }
}
