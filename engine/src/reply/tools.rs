//! Tool calls in a reply's answer text, per family: Qwen/Hermes `<tool_call>{"name": …,
//! "arguments": …}</tool_call>` (also what Hearth asks of a model whose template does not render
//! tools), Qwen3.5/Qwen3-Coder's `<tool_call><function=NAME><parameter=P>value</parameter>…`,
//! Gemma 4's `<|tool_call>call:NAME{key:<|"|>text<|"|>,n:3}<tool_call|>`, Mistral
//! `[TOOL_CALLS]NAME[ARGS]{…}` (and the older `[TOOL_CALLS][{…}]`), and Llama 3.x
//! JSON (`{"name": …, "parameters": …}`, optionally after `<|python_tag|>`). gpt-oss's calls are
//! harmony messages (`harmony.rs`). Streamed text before a call is answer; from the call's marker
//! on it is held, and parsed when the reply ends (text that does not parse as a call goes back to
//! the answer, so nothing is lost).

use serde_json::Value;

use super::ToolCall;
use super::think::held_back;

/// How a model family writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>` JSON `</tool_call>` (Qwen, Hermes, SmolLM3; Hearth's own instructions).
    Hermes,
    /// `<tool_call>` `<function=NAME>` `<parameter=P>` value `</parameter>` … (Qwen3.5,
    /// Qwen3-Coder).
    QwenXml,
    /// `[TOOL_CALLS]name[ARGS]{…}` (Mistral, Ministral).
    Mistral,
    /// `<|tool_call>call:NAME{…}<tool_call|>`, strings between `<|"|>` (Gemma 4).
    Gemma4,
    /// A bare JSON object with `name` and `parameters` (Llama 3.x).
    Llama3,
    /// Harmony messages to `functions.NAME` (gpt-oss).
    Harmony,
}

impl ToolFormat {
    /// The format a chat template's text shows (Hermes when it shows none).
    pub fn detect(template: &str) -> ToolFormat {
        if template.contains("<|channel|>") {
            ToolFormat::Harmony
        } else if template.contains("<|tool_call>call:") {
            ToolFormat::Gemma4
        } else if template.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template.contains("<tool_call>") && template.contains("<function=") {
            ToolFormat::QwenXml
        } else if template.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template.contains("<|python_tag|>") || template.contains("<|start_header_id|>") {
            ToolFormat::Llama3
        } else {
            ToolFormat::Hermes
        }
    }

    fn marker(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes | ToolFormat::QwenXml => Some("<tool_call>"),
            ToolFormat::Mistral => Some("[TOOL_CALLS]"),
            ToolFormat::Gemma4 => Some("<|tool_call>"),
            ToolFormat::Llama3 => Some("<|python_tag|>"),
            ToolFormat::Harmony => None,
        }
    }
}

/// Watches answer text for tool calls.
#[derive(Debug, Clone)]
pub(super) struct ToolScan {
    format: ToolFormat,
    /// Answer text not yet emitted (a possible start of the marker).
    pending: String,
    /// Text from the first call's marker on, once one was seen.
    held: Option<String>,
    answered: bool,
}

impl ToolScan {
    pub(super) fn new(format: ToolFormat) -> Self {
        ToolScan {
            format,
            pending: String::new(),
            held: None,
            answered: false,
        }
    }

    /// Takes answer text; returns what is certainly answer.
    pub(super) fn push(&mut self, text: &str) -> String {
        if let Some(held) = &mut self.held {
            held.push_str(text);
            return String::new();
        }
        self.pending.push_str(text);
        if self.format == ToolFormat::Llama3 && !self.answered {
            let t = self.pending.trim_start();
            if t.is_empty() {
                return String::new();
            }
            if t.starts_with('{') {
                self.held = Some(std::mem::take(&mut self.pending));
                return String::new();
            }
        }
        let Some(marker) = self.format.marker() else {
            return std::mem::take(&mut self.pending);
        };
        if let Some(at) = self.pending.find(marker) {
            self.held = Some(self.pending.split_off(at));
        } else {
            let keep = held_back(&self.pending, marker);
            let rest = self.pending.split_off(keep);
            let out = std::mem::replace(&mut self.pending, rest);
            self.answered |= !out.trim().is_empty();
            return out;
        }
        self.answered = true;
        std::mem::take(&mut self.pending)
    }

    /// The answer text left and the calls, at the end of the reply.
    pub(super) fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let mut tail = std::mem::take(&mut self.pending);
        let Some(held) = self.held.take() else {
            return (tail, Vec::new());
        };
        let calls = parse_calls(self.format, &held);
        if calls.is_empty() {
            tail.push_str(&held);
        }
        (tail, calls)
    }
}

/// The calls in `text` (which starts at the first call), or none when it holds no valid call.
pub fn parse_calls(format: ToolFormat, text: &str) -> Vec<ToolCall> {
    let found: Vec<(String, String)> = match format {
        // Either body, whatever the template said: models mix them up.
        ToolFormat::Hermes | ToolFormat::QwenXml => text
            .split("<tool_call>")
            .skip(1)
            .filter_map(|part| {
                let body = part.split("</tool_call>").next().unwrap_or(part);
                xml_call(body).or_else(|| call_from_json(&first_json(body)?))
            })
            .collect(),
        ToolFormat::Mistral => mistral_calls(text),
        ToolFormat::Gemma4 => text
            .split("<|tool_call>")
            .skip(1)
            .filter_map(|part| {
                let body = part.split("<tool_call|>").next().unwrap_or(part);
                let (name, args) = body.trim().strip_prefix("call:")?.split_once('{')?;
                let args = gemma_json(&format!("{{{args}"))?;
                Some((name.trim().to_string(), args.to_string()))
            })
            .collect(),
        ToolFormat::Llama3 => {
            let body = text.trim_start().trim_start_matches("<|python_tag|>");
            json_values(body)
                .iter()
                .filter_map(call_from_json)
                .collect()
        }
        ToolFormat::Harmony => Vec::new(),
    };
    found
        .into_iter()
        .enumerate()
        .map(|(i, (name, arguments))| ToolCall::new(i, &name, arguments))
        .collect()
}

/// `<function=NAME>` then `<parameter=P>\nvalue\n</parameter>` blocks, then `</function>`: a
/// value that parses as JSON (a number, `true`, a list) is that value, any other a string.
fn xml_call(body: &str) -> Option<(String, String)> {
    let rest = body.trim_start().strip_prefix("<function=")?;
    let (name, mut rest) = rest.split_once('>')?;
    let mut args = serde_json::Map::new();
    while let Some(at) = rest.find("<parameter=") {
        let (key, after) = rest[at + "<parameter=".len()..].split_once('>')?;
        let (value, after) = after
            .split_once("</parameter>")
            .unwrap_or((after.split("</function>").next().unwrap_or(after), ""));
        let value = value.strip_prefix('\n').unwrap_or(value);
        let value = value.strip_suffix('\n').unwrap_or(value);
        let parsed = serde_json::from_str::<Value>(value)
            .ok()
            .filter(|v| !v.is_string())
            .unwrap_or_else(|| Value::String(value.to_string()));
        args.insert(key.trim().to_string(), parsed);
        rest = after;
    }
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), Value::Object(args).to_string()))
}

/// Gemma 4's argument notation as JSON: strings are written between `<|"|>` markers and keys
/// are bare; numbers, booleans, lists and nesting are JSON's.
fn gemma_json(text: &str) -> Option<Value> {
    let mut json = String::new();
    for (i, part) in text.split("<|\"|>").enumerate() {
        if i % 2 == 1 {
            json.push_str(&serde_json::to_string(part).ok()?);
            continue;
        }
        // Structure: quote each bare key (a name right after `{` or `,`, before `:`).
        let mut rest = part;
        while !rest.is_empty() {
            let at = rest.find(['{', ',']).map_or(rest.len(), |i| i + 1);
            json.push_str(&rest[..at]);
            rest = &rest[at..];
            let trimmed = rest.trim_start();
            let key_len = trimmed
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(trimmed.len());
            if key_len > 0 && trimmed[key_len..].trim_start().starts_with(':') {
                json.push_str(&rest[..rest.len() - trimmed.len()]);
                json.push_str(&serde_json::to_string(&trimmed[..key_len]).ok()?);
                rest = &trimmed[key_len..];
            }
        }
    }
    serde_json::from_str(&json).ok()
}

fn mistral_calls(text: &str) -> Vec<(String, String)> {
    let mut calls = Vec::new();
    for part in text.split("[TOOL_CALLS]").skip(1) {
        let part = part.trim_start();
        if part.starts_with('[') {
            // The older form: a JSON list of {"name", "arguments"}.
            if let Some(Value::Array(items)) = first_json(part) {
                calls.extend(items.iter().filter_map(call_from_json));
            }
            continue;
        }
        if let Some((name, args)) = part.split_once("[ARGS]")
            && let Some(args) = first_json(args)
        {
            calls.push((name.trim().to_string(), args.to_string()));
        }
    }
    calls
}

/// The first JSON value at the start of `text` (after whitespace).
fn first_json(text: &str) -> Option<Value> {
    let mut values = serde_json::Deserializer::from_str(text.trim_start()).into_iter::<Value>();
    values.next()?.ok()
}

/// The JSON values in `text`, one after another (separated by whitespace or `;`).
fn json_values(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                out.push(v);
                rest = rest[values.byte_offset()..].trim_start_matches([' ', '\n', '\t', ';']);
            }
            _ => break,
        }
    }
    out
}

/// `{"name": …, "arguments" | "parameters": {…}}` as (name, arguments as JSON text).
fn call_from_json(v: &Value) -> Option<(String, String)> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters"));
    let arguments = match args {
        None => "{}".to_string(),
        // Some models write the arguments as a JSON string.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v.to_string(),
            Err(_) => return None,
        },
        Some(v) => v.to_string(),
    };
    Some((name, arguments))
}
