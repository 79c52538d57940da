//! A request's prompt made ready for the scheduler, once per request ([`prepare`]): a chat
//! rendered with the model's template (fuel and output capped; thinking and tools passed as the
//! template reads them) and tokenized, plain text tokenized, token ids checked; a template that
//! fails is the request's or the model's error. It also says how the reply is to be read
//! ([`ReplyFormat`]: reasoning markup, whether the prompt opened it, tool-call format) and, for a
//! required tool call, the grammar that forces one.

use serde_json::{Value, json};

use super::{ErrorKind, Failure, GenerateParams, Prompt, ToolChoice};
use crate::constrain::Constraint;
use crate::reply::{ReasoningFormat, ReplyFormat, ToolFormat};
use crate::sched::ContextPolicy;
use crate::tokenizer::{ChatMessage, ChatTemplate, RenderOptions, TemplateError, Tokenizer};

/// A request's prompt made ready for the scheduler, once per request: its tokens, the leading
/// tokens a middle cut keeps, whether it is a chat (special tokens are then not shown), how its
/// reply is read, and what its answer must match (the request's constraint, or the grammar of a
/// required tool call).
#[derive(Debug)]
pub(super) struct PreparedPrompt {
    pub tokens: Vec<u32>,
    pub keep: usize,
    pub chat: bool,
    pub reply: ReplyFormat,
    pub constraint: Option<Constraint>,
}

/// Renders (for a chat) and tokenizes a prompt. Only a middle-cutting context policy needs the
/// system messages' length, so only then are they rendered a second time.
pub(super) fn prepare(
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    prompt: &Prompt,
    params: &GenerateParams,
) -> Result<PreparedPrompt, Failure> {
    let bad = |e: &dyn std::fmt::Display| Failure::bad_request(e.to_string());
    let plain = |tokens| PreparedPrompt {
        tokens,
        keep: 0,
        chat: false,
        reply: ReplyFormat::default(),
        constraint: params.constraint.clone(),
    };
    let out = match prompt {
        Prompt::Tokens(ids) => plain(ids.clone()),
        Prompt::Text(text) => plain(tok.encode(text, true).map_err(|e| bad(&e))?),
        Prompt::Chat(messages) => {
            let template = template.ok_or_else(|| {
                Failure::bad_request("the model has no chat template; send plain text instead")
            })?;
            let chat = &params.chat;
            let offered = chat.tool_choice != ToolChoice::None && !chat.tools.is_empty();
            let forced_call = offered
                && matches!(
                    chat.tool_choice,
                    ToolChoice::Required | ToolChoice::Function(_)
                );
            // A constrained answer does not think (unless asked to): a grammar from the first
            // token leaves no room for it.
            let constrained = params.constraint.is_some() || forced_call;
            let mut options = RenderOptions {
                enable_thinking: chat.enable_thinking.or((constrained).then_some(false)),
                reasoning_effort: chat.reasoning_effort.clone(),
                tools: if offered {
                    chat.tools.clone()
                } else {
                    Vec::new()
                },
            };
            let mut messages = std::borrow::Cow::Borrowed(messages.as_slice());
            let mut rendered = template
                .render_with(&messages, true, &options)
                .map_err(template_failure)?;
            let mut tool_format = None;
            if offered {
                let without = RenderOptions {
                    tools: Vec::new(),
                    ..options.clone()
                };
                let plain = template
                    .render_with(&messages, true, &without)
                    .map_err(template_failure)?;
                if plain == rendered {
                    // The template does not show tools: say them in a system message, and
                    // read calls in the format it asks for.
                    messages =
                        std::borrow::Cow::Owned(with_tool_instructions(&messages, &chat.tools));
                    options = without;
                    rendered = template
                        .render_with(&messages, true, &options)
                        .map_err(template_failure)?;
                    tool_format = Some(ToolFormat::Hermes);
                } else {
                    tool_format = Some(ToolFormat::detect(template.source()));
                }
            }
            let tokens = tok.encode_chat(&rendered).map_err(|e| bad(&e))?;
            // A middle cut keeps the system messages (and the template's start).
            let system: Vec<ChatMessage> = messages
                .iter()
                .take_while(|m| m.role == "system")
                .cloned()
                .collect();
            let keep = if params.context != ContextPolicy::DropMiddle {
                0
            } else if system.is_empty() {
                usize::from(tok.adds_bos())
            } else {
                let r = template
                    .render_with(&system, false, &options)
                    .map_err(template_failure)?;
                tok.encode_chat(&r).map_err(|e| bad(&e))?.len()
            };
            let reasoning = ReasoningFormat::detect(template.source());
            let opened = reasoning.opened_by(&rendered);
            // What closes the reasoning the prompt opened, for a grammar to write first.
            let close = match reasoning {
                ReasoningFormat::Tags { close, .. } if opened => Some(close),
                _ => None,
            };
            let tool_constraint = match tool_format {
                Some(format) => required_call(format, &chat.tools, &chat.tool_choice, close)?,
                None => None,
            };
            let constraint = match (params.constraint.clone(), close) {
                (Some(c), Some(close)) => Some(after_reasoning(c, close)),
                (c, _) => c.or(tool_constraint),
            };
            PreparedPrompt {
                tokens,
                keep,
                chat: true,
                reply: ReplyFormat {
                    reasoning,
                    opened,
                    tools: tool_format,
                },
                constraint,
            }
        }
    };
    if out.tokens.is_empty() {
        return Err(Failure::bad_request("the prompt is empty"));
    }
    Ok(out)
}

/// The close tag as a Lark string literal, with the blank line models write after it.
fn close_literal(close: &str) -> String {
    serde_json::to_string(&format!("{close}\n\n")).unwrap_or_default()
}

/// A JSON constraint that first closes the reasoning the prompt opened (a template that always
/// opens `<think>`): the grammar starts with the close tag, so the answer after it is what
/// matches. A Lark grammar is the caller's whole reply and is left as it is.
fn after_reasoning(c: Constraint, close: &str) -> Constraint {
    let json = |schema: Value| {
        Constraint::Lark(format!(
            "start: {} answer\nanswer: %json {}\n",
            close_literal(close),
            crate::constrain::compact(schema)
        ))
    };
    match c {
        Constraint::JsonObject => json(json!({"type": "object"})),
        Constraint::JsonSchema(schema) if schema.is_object() => json(schema),
        other => other,
    }
}

/// The conversation with the tools described in its system message, for a template that does
/// not render them: the call format asked is Hermes's `<tool_call>` JSON.
fn with_tool_instructions(messages: &[ChatMessage], tools: &[Value]) -> Vec<ChatMessage> {
    let mut text = String::from(
        "You can call functions. To call one, answer with exactly\n<tool_call>\n\
         {\"name\": \"FUNCTION\", \"arguments\": {ARGUMENTS}}\n</tool_call>\n\
         and nothing else. The functions:\n",
    );
    for t in tools {
        text.push_str(&t.get("function").unwrap_or(t).to_string());
        text.push('\n');
    }
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(first) if first.role == "system" => {
            first.content = format!("{}\n\n{text}", first.content);
        }
        _ => out.insert(0, ChatMessage::system(text)),
    }
    out
}

/// The functions offered: (name, parameters schema).
fn functions(tools: &[Value]) -> Result<Vec<(String, Value)>, Failure> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t.get("function").unwrap_or(t);
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::bad_request(format!("tools[{i}] has no function name")))?;
            let params = f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            Ok((name.to_string(), params))
        })
        .collect()
}

/// For `tool_choice` `required` or a named function, the grammar that makes the reply one call
/// whose arguments match the function's parameters, in the family's format (Hermes and Llama 3
/// JSON; Mistral's and harmony's markers are control tokens, and Qwen3.5's XML-like parameters
/// have no JSON schema form, so their calls are read unconstrained). `auto` leaves the model
/// free.
fn required_call(
    format: ToolFormat,
    tools: &[Value],
    choice: &ToolChoice,
    close: Option<&str>,
) -> Result<Option<Constraint>, Failure> {
    let all = functions(tools)?;
    let chosen: Vec<&(String, Value)> = match choice {
        ToolChoice::Auto | ToolChoice::None => return Ok(None),
        ToolChoice::Required => all.iter().collect(),
        ToolChoice::Function(name) => {
            let f: Vec<_> = all.iter().filter(|(n, _)| n == name).collect();
            if f.is_empty() {
                return Err(Failure::bad_request(format!(
                    "tool_choice names {name:?}, which is not among the tools"
                )));
            }
            f
        }
    };
    let args_key = match format {
        ToolFormat::Hermes => "arguments",
        ToolFormat::Llama3 => "parameters",
        ToolFormat::QwenXml | ToolFormat::Gemma4 | ToolFormat::Mistral | ToolFormat::Harmony => {
            return Ok(None);
        }
    };
    let calls: Vec<Value> = chosen
        .iter()
        .map(|(name, params)| {
            json!({
                "type": "object",
                "properties": {"name": {"const": name}, args_key: params},
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = crate::constrain::compact(json!({"anyOf": calls}));
    let first = close.map(close_literal).unwrap_or_default();
    Ok(Some(match format {
        ToolFormat::Hermes => Constraint::Lark(format!(
            "start: {first} \"<tool_call>\\n\" call \"\\n</tool_call>\"\ncall: %json {schema}\n"
        )),
        _ if close.is_some() => {
            Constraint::Lark(format!("start: {first} call\ncall: %json {schema}\n"))
        }
        _ => Constraint::JsonSchema(schema),
    }))
}

/// A template that rejects the conversation (`raise_exception`) is the request's fault; one that
/// fails otherwise (an error in it, out of fuel or output) is the model file's.
fn template_failure(e: TemplateError) -> Failure {
    let kind = match e {
        TemplateError::Raised { .. } => ErrorKind::BadRequest,
        _ => ErrorKind::Template,
    };
    Failure::new(kind, e.to_string())
}
