//! Chat templates: turning a conversation into the prompt text a model was trained on, by
//! rendering the model's Jinja `tokenizer.chat_template` with minijinja the way Hugging Face's
//! `apply_chat_template` does.
//!
//! The environment matches HF's: `trim_blocks` and `lstrip_blocks` on, loop controls,
//! `raise_exception(msg)`, `strftime_now(fmt)` (UTC: no time zone database is shipped), Python
//! string/dict/list methods (`.strip()`, `.startswith()`, `.items()`, ... via
//! `minijinja-contrib`'s pycompat), and a `tojson` filter that writes JSON as Python's
//! `json.dumps` does (`", "` and `": "` separators, `indent=`, `ensure_ascii=`). The context holds
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and `tools`/`documents` set to
//! none. HF's `{% generation %}` training tag is not supported.
//!
//! A model without a template gets a built-in one chosen by architecture (see [`builtin_for`]):
//! Gemma's turn format for `gemma*`, and ChatML (llama.cpp's own fallback) for everything else.
//!
//! The rendered text contains the template's special tokens as text; tokenize it with
//! [`super::Tokenizer::encode_chat`], which parses them.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::gguf::{GgufError, GgufFile, TokenizerMeta};
use crate::reply::ToolCall;

/// Variables a chat template may read besides the conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderOptions {
    /// `enable_thinking` (Qwen3/3.5, Gemma 4, SmolLM3 templates): `None` leaves it undefined,
    /// so the template's own default applies. llama-server passes `true` unless told otherwise.
    pub enable_thinking: Option<bool>,
    /// `reasoning_effort` (gpt-oss: `low`, `medium`, `high`); undefined when `None`.
    pub reasoning_effort: Option<String>,
    /// `tools`: the functions the model may call, in OpenAI's shape
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`); `none` when
    /// empty, as llama-server passes them.
    pub tools: Vec<serde_json::Value>,
}

/// One turn of a conversation: its role and text, and for an assistant turn its reasoning and
/// the tool calls it made; for a `tool` turn, the call it answers. Templates see it in OpenAI's
/// shape (`tool_calls[i].function.{name, arguments}`, the arguments as a mapping).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool` (templates may accept others).
    pub role: String,
    pub content: String,
    /// The model's reasoning before this (assistant) answer; templates decide whether a past
    /// turn's reasoning goes back into the prompt.
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl Serialize for ChatMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("role", &self.role)?;
        m.serialize_entry("content", &self.content)?;
        if let Some(r) = &self.reasoning_content {
            m.serialize_entry("reasoning_content", r)?;
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<serde_json::Value> = self
                .tool_calls
                .iter()
                .map(|c| {
                    let arguments = serde_json::from_str::<serde_json::Value>(&c.arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(c.arguments.clone()));
                    serde_json::json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": arguments},
                    })
                })
                .collect();
            m.serialize_entry("tool_calls", &calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            m.serialize_entry("tool_call_id", id)?;
        }
        m.end()
    }
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Rendering a chat template failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Reading the template or its special tokens from the GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The template is not valid Jinja (as minijinja reads it).
    #[error("{model}: the chat template does not compile: {source}")]
    Syntax {
        model: String,
        #[source]
        source: minijinja::Error,
    },
    /// The template called `raise_exception(message)`, usually to reject the conversation.
    #[error("{model}: the chat template rejected the conversation: {message}")]
    Raised { model: String, message: String },
    /// Rendering failed for another reason (an undefined method, a type error, ...).
    #[error("{model}: rendering the chat template failed: {source}")]
    Render {
        model: String,
        #[source]
        source: minijinja::Error,
    },
    /// The template ran longer than any chat template needs ([`TEMPLATE_FUEL`] instructions).
    #[error(
        "{model}: the chat template ran out of its budget of {fuel} instructions (a loop that does not end, or one far too long)"
    )]
    OutOfFuel { model: String, fuel: u64 },
    /// The template wrote more text than any prompt of this conversation can be.
    #[error("{model}: the chat template's output passed its limit of {limit} bytes")]
    TooLarge { model: String, limit: usize },
}

/// The instruction budget of one rendering (minijinja's fuel). The largest real templates
/// (Qwen3.5's, gpt-oss's with tools) take tens of thousands of instructions for a long
/// conversation; this budget runs out in about 60 ms on the 2-core test machine
/// (measured: see the template tests), so a hostile template cannot hold the engine thread.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// The output cap of one rendering: a fixed allowance for the template's own text plus a
/// multiple of the conversation's size (a template writes each message once, plus markup).
pub fn template_output_limit(conversation_bytes: usize) -> usize {
    (1 << 20) + conversation_bytes.saturating_mul(4)
}

/// The conversation every template is rendered with once at load, to find one that cannot
/// finish (out of fuel or output) before it meets a user's message.
fn sample_conversation() -> [ChatMessage; 4] {
    [
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("Hello! What can you do?"),
        ChatMessage::assistant("I can answer questions and help you write."),
        ChatMessage::user("Write one sentence about the sea."),
    ]
}

/// Where a [`ChatTemplate`]'s text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateOrigin {
    /// The model file's `tokenizer.chat_template`.
    Model,
    /// A built-in template, by name (`gemma`, `chatml`).
    Builtin(&'static str),
    /// Text given to [`ChatTemplate::new`].
    Custom,
}

/// Gemma's turn format (the Gemma 3 instruct template, for plain-text messages): a system
/// message is folded into the first user turn, `assistant` is called `model`, roles must
/// alternate, and BOS comes first.
pub const GEMMA_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = 'model' -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"#;

/// ChatML, llama.cpp's fallback when a model has no template.
pub const CHATML_TEMPLATE: &str = r#"{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"#;

/// The built-in template for a model without one: `(name, text)`. Gemma architectures
/// (`gemma`, `gemma2`, `gemma3`, `gemma3n`, ...) get [`GEMMA_TEMPLATE`]; every other
/// architecture gets [`CHATML_TEMPLATE`], as llama.cpp does.
pub fn builtin_for(architecture: &str) -> (&'static str, &'static str) {
    if architecture.starts_with("gemma") {
        ("gemma", GEMMA_TEMPLATE)
    } else {
        ("chatml", CHATML_TEMPLATE)
    }
}

const NAME: &str = "chat_template";

/// A compiled chat template with the model's BOS and EOS texts.
pub struct ChatTemplate {
    model: String,
    origin: TemplateOrigin,
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("model", &self.model)
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// The template of an open GGUF file (or the built-in one for its architecture); errors
    /// name the file. Reads only the keys it needs, not the whole vocabulary.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TemplateError> {
        let token = |key: &str| -> Result<String, GgufError> {
            let Some(id) = file.opt_u64(key)? else {
                return Ok(String::new());
            };
            let text = file
                .opt_str_array("tokenizer.ggml.tokens")?
                .and_then(|mut tokens| tokens.nth(id as usize))
                .map(|b| String::from_utf8_lossy(b).into_owned());
            Ok(text.unwrap_or_default())
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        let eos = token("tokenizer.ggml.eos_token_id")?;
        let template = file.opt_str("tokenizer.chat_template")?;
        Self::choose(file.label(), template, file.architecture()?, &bos, &eos)
    }

    /// The template described by `meta` (or the built-in one for `architecture`); errors name
    /// `architecture`.
    pub fn for_model(meta: &TokenizerMeta, architecture: &str) -> Result<Self, TemplateError> {
        let text = |id: Option<u32>| {
            id.and_then(|id| meta.tokens.get(id as usize))
                .cloned()
                .unwrap_or_default()
        };
        Self::choose(
            architecture,
            meta.chat_template.as_deref(),
            architecture,
            &text(meta.bos_id),
            &text(meta.eos_id),
        )
    }

    fn choose(
        model: &str,
        template: Option<&str>,
        architecture: &str,
        bos: &str,
        eos: &str,
    ) -> Result<Self, TemplateError> {
        match template {
            Some(source) if !source.trim().is_empty() => {
                Self::compile(model, TemplateOrigin::Model, source.to_string(), bos, eos)
            }
            _ => {
                let (name, source) = builtin_for(architecture);
                Self::compile(
                    model,
                    TemplateOrigin::Builtin(name),
                    source.to_string(),
                    bos,
                    eos,
                )
            }
        }
    }

    /// A template from Jinja text; `model` names it in errors.
    pub fn new(
        model: &str,
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, TemplateError> {
        Self::compile(
            model,
            TemplateOrigin::Custom,
            source.to_string(),
            bos_token,
            eos_token,
        )
    }

    fn compile(
        model: &str,
        origin: TemplateOrigin,
        source: String,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_template_owned(NAME, source.clone())
            .map_err(|source| TemplateError::Syntax {
                model: model.to_string(),
                source,
            })?;
        let template = Self {
            model: model.to_string(),
            origin,
            env,
            source,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        };
        template.check_limits()?;
        Ok(template)
    }

    /// Renders [`sample_conversation`] once: a template that runs out of fuel or output on it
    /// is refused at load. Other failures (a template that rejects a system message, say) are
    /// the conversation's business and are reported when one is rendered.
    fn check_limits(&self) -> Result<(), TemplateError> {
        let sample = sample_conversation();
        let over = |e: &TemplateError| {
            matches!(
                e,
                TemplateError::OutOfFuel { .. } | TemplateError::TooLarge { .. }
            )
        };
        // A template that rejects a system message gets the same conversation without it.
        let result = match self.render(&sample, true) {
            Err(e) if !over(&e) => self.render(&sample[1..], true),
            other => other,
        };
        match result {
            Err(e) if over(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends where the
    /// assistant's reply should begin.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(messages, add_generation_prompt, &RenderOptions::default())
    }

    /// [`ChatTemplate::render`] with the variables a template may read besides the messages.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let base = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => (!options.tools.is_empty()).then_some(&options.tools),
            documents => (),
        };
        // Left undefined unless given: templates test `enable_thinking is defined`.
        let ctx = match options.enable_thinking {
            Some(on) => context! { enable_thinking => on, ..base },
            None => base,
        };
        let ctx = match &options.reasoning_effort {
            Some(effort) => context! { reasoning_effort => effort, ..ctx },
            None => ctx,
        };
        let conversation_bytes = messages
            .iter()
            .map(|m| {
                m.role.len()
                    + m.content.len()
                    + m.reasoning_content.as_ref().map_or(0, String::len)
                    + m.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
            + options
                .tools
                .iter()
                .map(|t| t.to_string().len())
                .sum::<usize>();
        let limit = template_output_limit(conversation_bytes);
        let mut out = CappedOutput {
            text: Vec::new(),
            limit,
            overflowed: false,
        };
        let rendered = self
            .env
            .get_template(NAME)
            .and_then(|t| t.render_captured_to(ctx, &mut out).map(|_| ()));
        match rendered {
            // Every piece minijinja writes is a whole `str`, so the bytes are UTF-8.
            Ok(_) => Ok(String::from_utf8(out.text)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TemplateError::OutOfFuel {
                model: self.model.clone(),
                fuel: TEMPLATE_FUEL,
            }),
            Err(_) if out.overflowed => Err(TemplateError::TooLarge {
                model: self.model.clone(),
                limit,
            }),
            Err(e) => Err(match raised_message(&e) {
                Some(message) => TemplateError::Raised {
                    model: self.model.clone(),
                    message,
                },
                None => TemplateError::Render {
                    model: self.model.clone(),
                    source: e,
                },
            }),
        }
    }

    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    /// The Jinja text being rendered.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
}

/// The rendering's output, refusing to grow past `limit` bytes (the write that would pass it
/// fails, which stops the rendering).
struct CappedOutput {
    text: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other(
                "the chat template's output is too large",
            ));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Marks an error as coming from `raise_exception`, carrying the template's message.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(Raised(message)),
    )
}

fn raised_message(e: &minijinja::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Raised>() {
            return Some(r.0.clone());
        }
        cur = err.source();
    }
    None
}

/// `strftime_now(fmt)`: the current UTC time formatted with C `strftime` directives.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let bad = |e: &dyn std::fmt::Display| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now({format:?}): {e}"),
        )
    };
    let items = time::format_description::parse_strftime_borrowed(&format).map_err(|e| bad(&e))?;
    time::OffsetDateTime::now_utc()
        .format(&items)
        .map_err(|e| bad(&e))
}

/// Python's `json.dumps` separators without indentation: `", "` and `": "`.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `tojson(indent=None, ensure_ascii=False)` with Python's `json.dumps` layout (HF's filter).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonCompact,
        )),
        Some(n) => {
            let pad = vec![b' '; n];
            let pretty = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, pretty,
            ))
        }
    };
    result
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut json = String::from_utf8_lossy(&out).into_owned();
    if ensure_ascii.unwrap_or(false) {
        // Non-ASCII characters only occur inside JSON strings, where \u escapes are valid.
        let mut escaped = String::with_capacity(json.len());
        for c in json.chars() {
            if c.is_ascii() {
                escaped.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    escaped.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        json = escaped;
    }
    Ok(Value::from_safe_string(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: &[ChatMessage]) -> Result<String, TemplateError> {
        ChatTemplate::new("test", source, "<s>", "</s>")?.render(messages, true)
    }

    #[test]
    fn tojson_writes_python_layout() {
        let msgs = [ChatMessage::user("héllo")];
        assert_eq!(
            render("{{ messages | tojson }}", &msgs).unwrap(),
            r#"[{"role": "user", "content": "héllo"}]"#
        );
        assert_eq!(
            render(
                "{{ messages[0] | tojson(indent=2, ensure_ascii=true) }}",
                &msgs
            )
            .unwrap(),
            "{\n  \"role\": \"user\",\n  \"content\": \"h\\u00e9llo\"\n}"
        );
    }

    #[test]
    fn python_string_methods_and_tokens_are_available() {
        let msgs = [ChatMessage::user("  hi  ")];
        let out = render(
            "{{ bos_token }}{{ messages[0].content.strip() }}{{ messages[0].role.startswith('us') }}{{ eos_token }}",
            &msgs,
        )
        .unwrap();
        assert_eq!(out, "<s>hiTrue</s>");
        assert_eq!(
            render("{% if tools is not none %}x{% endif %}ok", &msgs).unwrap(),
            "ok"
        );
    }

    #[test]
    fn strftime_now_formats_the_current_year() {
        let year = render("{{ strftime_now('%Y') }}", &[]).unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.starts_with("20"), "{year}");
    }

    #[test]
    fn trim_and_lstrip_blocks_follow_hf() {
        let out = render("  {% if true %}\nA\n  {% endif %}\nB", &[]).unwrap();
        assert_eq!(out, "A\nB");
    }

    #[test]
    fn syntax_errors_name_the_model() {
        let err = ChatTemplate::new("my-model", "{% for %}", "", "").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }));
        assert!(
            err.to_string()
                .starts_with("my-model: the chat template does not compile"),
            "{err}"
        );
    }
}
