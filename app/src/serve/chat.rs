//! The chat-request fields beyond messages and sampling, as `hearth serve` reads them: `tools`
//! and `tool_choice`, `response_format` (`json_object`, `json_schema`) and llama.cpp's `grammar`,
//! thinking options (`reasoning_effort`, `chat_template_kwargs.enable_thinking`), and the
//! assistant `tool_calls` / `tool` messages of a round trip; and the answer's `reasoning_content`
//! and `tool_calls` in OpenAI's response and stream-chunk shapes.
//!
//! Nothing here does I/O.

use hearth_engine::api::{ChatOptions, Constraint, ToolCall, ToolChoice};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;

/// A call in an assistant message sent back to the server.
#[derive(Debug, Deserialize)]
pub struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    /// OpenAI sends a JSON string; some clients send the object.
    #[serde(default)]
    arguments: Option<Value>,
}

/// Tool calls of a past assistant message, for the template.
pub fn calls_from_wire(calls: Vec<WireToolCall>, i: usize) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .into_iter()
        .enumerate()
        .map(|(j, c)| {
            let arguments = match c.function.arguments {
                None => "{}".to_string(),
                Some(Value::String(s)) => s,
                Some(v @ Value::Object(_)) => v.to_string(),
                Some(_) => {
                    return Err(ApiError::invalid(format!(
                        "messages[{i}].tool_calls[{j}].function.arguments must be a JSON string"
                    ))
                    .param(format!("messages[{i}].tool_calls")));
                }
            };
            Ok(ToolCall {
                id: c.id.unwrap_or_else(|| format!("call_{i}_{j}")),
                name: c.function.name,
                arguments,
            })
        })
        .collect()
}

/// `tools` and `tool_choice` as the engine takes them; each tool must be a function with a name
/// (and an object schema for its parameters, if any).
pub fn tool_options(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
    opts: &mut ChatOptions,
) -> Result<(), ApiError> {
    let tools = tools.unwrap_or_default();
    for (i, t) in tools.iter().enumerate() {
        let bad = |what: &str| {
            ApiError::invalid(format!("tools[{i}] {what}")).param(format!("tools[{i}]"))
        };
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad("must be of type \"function\""));
        }
        let f = t.get("function").ok_or_else(|| bad("has no `function`"))?;
        if f.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(bad("has no function name"));
        }
        if let Some(p) = f.get("parameters")
            && !p.is_object()
        {
            return Err(bad("has parameters that are not a JSON schema object"));
        }
    }
    let choice = match choice {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(format!(
                    "`tool_choice` {other:?} is not one of auto, none, required"
                ))
                .param("tool_choice"));
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Function(name.to_string()),
            None => {
                return Err(ApiError::invalid(
                    "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": …}}",
                )
                .param("tool_choice"));
            }
        },
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(
            ApiError::invalid("`tool_choice` asks for a call, but there are no `tools`")
                .param("tool_choice"),
        );
    }
    if let ToolChoice::Function(name) = &choice
        && !tools
            .iter()
            .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name))
    {
        return Err(ApiError::invalid(format!(
            "`tool_choice` names {name:?}, which is not among the tools"
        ))
        .param("tool_choice"));
    }
    opts.tools = tools;
    opts.tool_choice = choice;
    Ok(())
}

/// `response_format` (and llama.cpp's `grammar`) as a constraint. A schema that llguidance
/// cannot compile is refused by the engine, with the reason, as a 400 too.
pub fn constraint(
    format: Option<Value>,
    grammar: Option<String>,
) -> Result<Option<Constraint>, ApiError> {
    let bad = |m: &str| ApiError::invalid(m.to_string()).param("response_format");
    let from_format = match format {
        None | Some(Value::Null) => None,
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_object") => Some(match f.get("schema") {
                // llama-server's extension: a schema beside json_object.
                Some(schema) if schema.is_object() => Constraint::JsonSchema(schema.clone()),
                _ => Constraint::JsonObject,
            }),
            Some("json_schema") => {
                let schema = f
                    .pointer("/json_schema/schema")
                    .or_else(|| f.get("schema"))
                    .ok_or_else(|| bad("`response_format.json_schema.schema` is missing"))?;
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(bad(
                        "`response_format.json_schema.schema` must be a JSON schema object",
                    ));
                }
                Some(Constraint::JsonSchema(schema.clone()))
            }
            _ => {
                return Err(bad(
                    "`response_format.type` must be text, json_object or json_schema",
                ));
            }
        },
    };
    match (from_format, grammar) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "send either `response_format` or `grammar`, not both",
        )
        .param("grammar")),
        (c, None) => Ok(c),
        (None, Some(g)) => Ok(Some(Constraint::Lark(g))),
    }
}

/// `reasoning_effort` and `chat_template_kwargs.enable_thinking`.
pub fn thinking_options(
    effort: Option<String>,
    kwargs: Option<Value>,
    opts: &mut ChatOptions,
) -> Result<(), ApiError> {
    if let Some(e) = &effort
        && !["low", "medium", "high"].contains(&e.as_str())
    {
        return Err(
            ApiError::invalid("`reasoning_effort` must be low, medium or high")
                .param("reasoning_effort"),
        );
    }
    opts.reasoning_effort = effort;
    if let Some(k) = kwargs {
        match k.get("enable_thinking") {
            None => {}
            Some(Value::Bool(b)) => opts.enable_thinking = Some(*b),
            Some(_) => {
                return Err(ApiError::invalid(
                    "`chat_template_kwargs.enable_thinking` must be true or false",
                )
                .param("chat_template_kwargs"));
            }
        }
    }
    Ok(())
}

/// Calls in OpenAI's response shape (`index` added for stream deltas).
pub fn calls_json(calls: &[ToolCall], with_index: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            });
            if with_index {
                v["index"] = i.into();
            }
            v
        })
        .collect()
}
