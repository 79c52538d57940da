//! A request's prompt made ready for the scheduler, once per request ([`prepare`]): a chat
//! rendered with the model's template (fuel and output capped) and tokenized, plain text
//! tokenized, token ids checked; a template that fails is the request's or the model's error.

use super::{ErrorKind, Failure, Prompt};
use crate::sched::ContextPolicy;
use crate::tokenizer::{ChatMessage, ChatTemplate, TemplateError, Tokenizer};

/// A request's prompt made ready for the scheduler, once per request: its tokens, the leading
/// tokens a middle cut keeps, and whether it is a chat (special tokens are then not shown).
#[derive(Debug)]
pub(super) struct PreparedPrompt {
    pub tokens: Vec<u32>,
    pub keep: usize,
    pub chat: bool,
}

/// Renders (for a chat) and tokenizes a prompt. Only a middle-cutting context policy needs the
/// system messages' length, so only then are they rendered a second time.
pub(super) fn prepare(
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    prompt: &Prompt,
    policy: ContextPolicy,
) -> Result<PreparedPrompt, Failure> {
    let bad = |e: &dyn std::fmt::Display| Failure::bad_request(e.to_string());
    let plain = |tokens| PreparedPrompt {
        tokens,
        keep: 0,
        chat: false,
    };
    let out = match prompt {
        Prompt::Tokens(ids) => plain(ids.clone()),
        Prompt::Text(text) => plain(tok.encode(text, true).map_err(|e| bad(&e))?),
        Prompt::Chat(messages) => {
            let template = template.ok_or_else(|| {
                Failure::bad_request("the model has no chat template; send plain text instead")
            })?;
            let rendered = template.render(messages, true).map_err(template_failure)?;
            let tokens = tok.encode_chat(&rendered).map_err(|e| bad(&e))?;
            // A middle cut keeps the system messages (and the template's start).
            let system: Vec<ChatMessage> = messages
                .iter()
                .take_while(|m| m.role == "system")
                .cloned()
                .collect();
            let keep = if policy != ContextPolicy::DropMiddle {
                0
            } else if system.is_empty() {
                usize::from(tok.adds_bos())
            } else {
                let r = template.render(&system, false).map_err(template_failure)?;
                tok.encode_chat(&r).map_err(|e| bad(&e))?.len()
            };
            PreparedPrompt {
                tokens,
                keep,
                chat: true,
            }
        }
    };
    if out.tokens.is_empty() {
        return Err(Failure::bad_request("the prompt is empty"));
    }
    Ok(out)
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
