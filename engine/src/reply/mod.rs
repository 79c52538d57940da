//! What a model writes, read per family as it streams: reasoning apart from the answer
//! (`think.rs`: `<think>`/`</think>`, `[THINK]`/`[/THINK]` and Gemma 4's
//! `<|channel>thought`…`<channel|>`; `harmony.rs`: gpt-oss's channels)
//! and tool calls apart from both (`tools.rs`). The engine runs one [`ReplyReader`] per request
//! on the text left after stop strings, and sends what it yields as [`TextKind`]-tagged events.

mod harmony;
mod think;
mod tools;

#[cfg(test)]
mod tests;

pub use tools::{ToolFormat, parse_calls};

use serde::{Deserialize, Serialize};

/// Which part of a reply a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    /// The answer shown to the user (OpenAI's `content`).
    #[default]
    Answer,
    /// The model's thinking before it answers (`reasoning_content`).
    Reasoning,
}

/// A piece of streamed text and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub kind: TextKind,
    pub text: String,
}

/// A function call the model asked for (OpenAI's `tool_calls[i]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (an object).
    pub arguments: String,
}

impl ToolCall {
    /// A call with a fresh id (`call_` and 24 letters and digits, as OpenAI's look).
    pub fn new(_index: usize, name: &str, arguments: String) -> ToolCall {
        let id: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(24)
            .collect();
        ToolCall {
            id: format!("call_{id}"),
            name: name.to_string(),
            arguments,
        }
    }
}

/// How a model's replies mark their reasoning, read from its chat template and vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningFormat {
    /// No reasoning markup: everything is answer.
    None,
    /// Reasoning between two tags.
    Tags {
        open: &'static str,
        close: &'static str,
    },
    /// gpt-oss's harmony channels.
    Harmony,
}

impl ReasoningFormat {
    /// The format a chat template's text shows.
    pub fn detect(template: &str) -> ReasoningFormat {
        if template.contains("<|channel|>") && template.contains("<|message|>") {
            ReasoningFormat::Harmony
        } else if template.contains("</think>") || template.contains("<think>") {
            ReasoningFormat::Tags {
                open: "<think>",
                close: "</think>",
            }
        } else if template.contains("<|channel>thought") {
            // Gemma 4: a thought channel before the answer.
            ReasoningFormat::Tags {
                open: "<|channel>thought",
                close: "<channel|>",
            }
        } else if template.contains("[THINK]") {
            ReasoningFormat::Tags {
                open: "[THINK]",
                close: "[/THINK]",
            }
        } else {
            ReasoningFormat::None
        }
    }

    /// Whether a rendered prompt leaves the reply inside its reasoning (the template's generation
    /// prompt opened the tag).
    pub fn opened_by(&self, prompt: &str) -> bool {
        match self {
            ReasoningFormat::Tags { open, .. } => prompt.trim_end().ends_with(open),
            _ => false,
        }
    }
}

/// How one reply is read: its reasoning format, whether the prompt opened the reasoning, and
/// where tool calls are looked for (none when the request offered no tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyFormat {
    pub reasoning: ReasoningFormat,
    pub opened: bool,
    pub tools: Option<ToolFormat>,
}

impl Default for ReplyFormat {
    fn default() -> Self {
        ReplyFormat {
            reasoning: ReasoningFormat::None,
            opened: false,
            tools: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Split {
    Plain,
    Think(think::Think),
    Harmony(harmony::Harmony),
}

/// Reads one streamed reply: push text as it comes, then finish.
#[derive(Debug, Clone)]
pub struct ReplyReader {
    split: Split,
    scan: Option<tools::ToolScan>,
    calls: Vec<ToolCall>,
}

impl ReplyReader {
    pub fn new(format: ReplyFormat) -> Self {
        let split = match format.reasoning {
            ReasoningFormat::None => Split::Plain,
            ReasoningFormat::Tags { open, close } => {
                Split::Think(think::Think::new(open, close, format.opened))
            }
            ReasoningFormat::Harmony => Split::Harmony(harmony::Harmony::new()),
        };
        let scan = match format.tools {
            Some(ToolFormat::Harmony) | None => None,
            Some(f) => Some(tools::ToolScan::new(f)),
        };
        ReplyReader {
            split,
            scan,
            calls: Vec::new(),
        }
    }

    /// Whether the reply is inside its reasoning now (for the first piece's kind before any
    /// text is sure).
    pub fn in_reasoning(&self) -> bool {
        match &self.split {
            Split::Plain => false,
            Split::Think(t) => t.in_reasoning(),
            Split::Harmony(h) => h.in_reasoning(),
        }
    }

    /// Takes the next streamed text; returns the pieces now sure.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        match &mut self.split {
            Split::Plain => think::push_piece(&mut out, TextKind::Answer, text),
            Split::Think(t) => t.push(text, &mut out),
            Split::Harmony(h) => h.push(text, &mut out),
        }
        self.scan_answers(out)
    }

    /// The pieces left at the end of the reply.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match &mut self.split {
            Split::Plain => {}
            Split::Think(t) => t.finish(&mut out),
            Split::Harmony(h) => {
                h.finish(&mut out);
                self.calls.extend(h.take_calls());
            }
        }
        let mut out = self.scan_answers(out);
        if let Some(scan) = &mut self.scan {
            let (tail, calls) = scan.finish();
            if !tail.is_empty() {
                think::push_piece(&mut out, TextKind::Answer, &tail);
            }
            self.calls.extend(calls);
        }
        out.retain(|p| !p.text.is_empty());
        out
    }

    /// The tool calls found (complete after [`ReplyReader::finish`]).
    pub fn take_calls(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
    }

    /// Passes answer pieces through the tool-call scan.
    fn scan_answers(&mut self, pieces: Vec<Piece>) -> Vec<Piece> {
        let Some(scan) = &mut self.scan else {
            return pieces;
        };
        let mut out = Vec::new();
        for p in pieces {
            let text = match p.kind {
                TextKind::Answer => scan.push(&p.text),
                TextKind::Reasoning => p.text,
            };
            if !text.is_empty() {
                think::push_piece(&mut out, p.kind, &text);
            }
        }
        out
    }
}
