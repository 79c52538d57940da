//! gpt-oss's harmony format, read from streamed text: a reply is a run of messages, each a header
//! (`<|channel|>analysis`, `<|channel|>commentary to=functions.NAME <|constrain|>json`, after
//! `<|start|>assistant` from the second on) then `<|message|>` and a body that ends at `<|end|>`
//! or the next `<|start|>` (`<|return|>` and `<|call|>` end generation and never arrive). The
//! `analysis` channel is reasoning, a message to `functions.NAME` is a tool call, the rest
//! (`final`, commentary preambles) is the answer. The markers are rendered as text because the
//! tokenizer makes them user-defined tokens, as llama.cpp does for this vocabulary.

use super::think::{held_back, push_piece};
use super::{Piece, TextKind, ToolCall};

const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";
const CONSTRAIN: &str = "<|constrain|>";
const START: &str = "<|start|>";
const END: &str = "<|end|>";
/// A header longer than this is not a header: the model wrote plain text.
const MAX_HEADER: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Text(TextKind),
    /// Arguments of a call to this function.
    Call(String),
}

#[derive(Debug, Clone)]
pub(super) struct Harmony {
    /// The body being read, or none while a header is.
    body: Option<Body>,
    pending: String,
    arguments: String,
    calls: Vec<ToolCall>,
}

impl Harmony {
    pub(super) fn new() -> Self {
        Harmony {
            body: None,
            pending: String::new(),
            arguments: String::new(),
            calls: Vec::new(),
        }
    }

    pub(super) fn in_reasoning(&self) -> bool {
        self.body == Some(Body::Text(TextKind::Reasoning))
    }

    pub(super) fn push(&mut self, text: &str, out: &mut Vec<Piece>) {
        self.pending.push_str(text);
        loop {
            match self.body.clone() {
                None => match self.pending.find(MESSAGE) {
                    Some(at) => {
                        let header = self.pending[..at].to_string();
                        self.pending.drain(..at + MESSAGE.len());
                        self.body = Some(read_header(&header));
                    }
                    None if self.pending.len() > MAX_HEADER => {
                        self.body = Some(Body::Text(TextKind::Answer));
                    }
                    None => return,
                },
                Some(body) => {
                    let end = [END, START]
                        .iter()
                        .filter_map(|m| self.pending.find(m).map(|at| (at, m.len())))
                        .min();
                    match end {
                        Some((at, len)) => {
                            let text = self.pending[..at].to_string();
                            self.pending.drain(..at + len);
                            self.body_text(&body, &text, out);
                            self.end_body(&body);
                        }
                        None => {
                            let keep =
                                held_back(&self.pending, END).min(held_back(&self.pending, START));
                            let rest = self.pending.split_off(keep);
                            let text = std::mem::replace(&mut self.pending, rest);
                            self.body_text(&body, &text, out);
                            return;
                        }
                    }
                }
            }
        }
    }

    pub(super) fn finish(&mut self, out: &mut Vec<Piece>) {
        let text = std::mem::take(&mut self.pending);
        match self.body.clone() {
            Some(body) => {
                self.body_text(&body, &text, out);
                self.end_body(&body);
            }
            // No message ever started: what came is plain text, without stray markers.
            None => {
                let plain = [START, CHANNEL, CONSTRAIN, END]
                    .iter()
                    .fold(text, |t, m| t.replace(m, ""));
                let plain = plain.trim();
                if !plain.is_empty() && out.is_empty() && self.calls.is_empty() {
                    push_piece(out, TextKind::Answer, plain);
                }
            }
        }
    }

    pub(super) fn take_calls(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
    }

    fn body_text(&mut self, body: &Body, text: &str, out: &mut Vec<Piece>) {
        match body {
            Body::Text(kind) => {
                if !text.is_empty() {
                    push_piece(out, *kind, text);
                }
            }
            Body::Call(_) => self.arguments.push_str(text),
        }
    }

    fn end_body(&mut self, body: &Body) {
        if let Body::Call(name) = body {
            let arguments = std::mem::take(&mut self.arguments).trim().to_string();
            self.calls
                .push(ToolCall::new(self.calls.len(), name, arguments));
        }
        self.body = None;
    }
}

/// What a header says the body is.
fn read_header(header: &str) -> Body {
    let recipient = header.split("to=").nth(1).map(|r| {
        r.split(|c: char| c.is_whitespace() || c == '<')
            .next()
            .unwrap_or("")
    });
    if let Some(name) = recipient.and_then(|r| r.strip_prefix("functions.")) {
        return Body::Call(name.to_string());
    }
    let channel = header
        .split(CHANNEL)
        .nth(1)
        .and_then(|c| c.split(|c: char| c.is_whitespace() || c == '<').next())
        .unwrap_or("");
    match channel {
        "analysis" => Body::Text(TextKind::Reasoning),
        _ => Body::Text(TextKind::Answer),
    }
}
