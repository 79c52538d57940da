//! Reasoning between an open and a close tag (`<think>`/`</think>` for Qwen3, Qwen3.5,
//! DeepSeek-R1 distills and SmolLM3; `[THINK]`/`[/THINK]` for Ministral 3 Reasoning), read from
//! streamed text: the open tag counts only at the start of the reply (after whitespace), or is
//! already open when the template's generation prompt opened it. Text that may still become a
//! tag is held back until it is known either way; whitespace around the reasoning is dropped, as
//! llama-server does.

use super::{Piece, TextKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided yet: the reply may still start with the open tag.
    Start,
    Reasoning,
    Answer,
}

/// Splits one reply into reasoning and answer.
#[derive(Debug, Clone)]
pub(super) struct Think {
    open: &'static str,
    close: &'static str,
    state: State,
    /// Text received but not emitted yet.
    pending: String,
    /// Whether any reasoning (answer) text was emitted: leading whitespace is dropped until then.
    reasoned: bool,
    answered: bool,
}

impl Think {
    pub(super) fn new(open: &'static str, close: &'static str, opened: bool) -> Self {
        Think {
            open,
            close,
            state: if opened {
                State::Reasoning
            } else {
                State::Start
            },
            pending: String::new(),
            reasoned: false,
            answered: false,
        }
    }

    /// Whether the reply is inside its reasoning now.
    pub(super) fn in_reasoning(&self) -> bool {
        self.state == State::Reasoning
    }

    pub(super) fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.pending.push_str(text);
        loop {
            match self.state {
                State::Start => {
                    let t = self.pending.trim_start();
                    if let Some(rest) = t.strip_prefix(self.open) {
                        self.pending = rest.to_string();
                        self.state = State::Reasoning;
                    } else if self.open.starts_with(t) {
                        return; // still may become the tag
                    } else {
                        self.state = State::Answer;
                        // A reply without reasoning keeps its text as written.
                        self.answered = true;
                    }
                }
                State::Reasoning => match self.pending.find(self.close) {
                    Some(at) => {
                        let rest = self.pending.split_off(at + self.close.len());
                        self.pending.truncate(at);
                        let body = std::mem::take(&mut self.pending);
                        self.emit_reasoning(body.trim_end(), out);
                        self.pending = rest;
                        self.state = State::Answer;
                    }
                    None => {
                        // Hold back a possible start of the close tag and trailing whitespace
                        // (which is dropped if the tag follows).
                        let keep = held_back(&self.pending, self.close);
                        let body = self.pending[..keep].trim_end().len();
                        let held = self.pending.split_off(body);
                        let body = std::mem::replace(&mut self.pending, held);
                        self.emit_reasoning(&body, out);
                        return;
                    }
                },
                State::Answer => {
                    let text = std::mem::take(&mut self.pending);
                    self.emit_answer(&text, out);
                    return;
                }
            }
        }
    }

    pub(super) fn finish(&mut self, out: &mut Vec<Piece>) {
        let text = std::mem::take(&mut self.pending);
        match self.state {
            // Only a start of the open tag came: it was text.
            State::Start => self.emit_answer(&text, out),
            // A reply that never closed its reasoning is all reasoning.
            State::Reasoning => self.emit_reasoning(text.trim_end(), out),
            State::Answer => self.emit_answer(&text, out),
        }
    }

    fn emit_reasoning(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.emit(TextKind::Reasoning, text, out);
    }

    fn emit_answer(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.emit(TextKind::Answer, text, out);
    }

    /// Emits `text` as `kind`, without the leading whitespace of that kind's first text.
    fn emit(&mut self, kind: TextKind, text: &str, out: &mut Vec<Piece>) {
        let started = match kind {
            TextKind::Reasoning => &mut self.reasoned,
            TextKind::Answer => &mut self.answered,
        };
        let text = if *started { text } else { text.trim_start() };
        if !text.is_empty() {
            *started = true;
            push_piece(out, kind, text);
        }
    }
}

/// Appends text of a kind, merged with the last piece when that is of the same kind.
pub(super) fn push_piece(out: &mut Vec<Piece>, kind: TextKind, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.kind == kind => last.text.push_str(text),
        _ => out.push(Piece {
            kind,
            text: text.to_string(),
        }),
    }
}

/// The length of `text` without its longest suffix that is a proper prefix of `tag` (cut on a
/// char boundary).
pub(super) fn held_back(text: &str, tag: &str) -> usize {
    let longest = (tag.len().saturating_sub(1)).min(text.len());
    for k in (1..=longest).rev() {
        let start = text.len() - k;
        if text.is_char_boundary(start) && tag.as_bytes().starts_with(&text.as_bytes()[start..]) {
            return start;
        }
    }
    text.len()
}
