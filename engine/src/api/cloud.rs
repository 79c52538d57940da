//! The cloud answers streaming now, each on a `hearth-cloud-request` thread of its own, in one
//! type ([`CloudStreams`]) the engine thread owns: started, cancelled and forgotten there. A
//! stream sends the same events into the request's reply channel as a local answer, with
//! `Done.route` saying "cloud: ..."; in `Auto`, a failure before the first token sends the
//! request back to the engine thread (`Command::Fallback`) to be answered locally.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::{
    Command, Constraint, ErrorKind, Event, Failure, Prompt, Reply, Request, RequestId, Route,
    TextKind, ToolChoice,
};
use crate::model::FinishReason;
use crate::route::cloud::{self, CancelToken, ChatRequest, CloudClient, Delta, Message, Role};
use crate::sched::SeqStats;

/// The cloud answers streaming now, each on its own `hearth-cloud-request` thread, by request:
/// the one place that starts, cancels and forgets them.
#[derive(Debug, Default)]
pub(super) struct CloudStreams {
    /// Each stream's cancel token and whether its thread has ended.
    live: HashMap<RequestId, (CancelToken, Arc<AtomicBool>)>,
}

impl CloudStreams {
    /// Streams the answer from the cloud on a thread of its own. With `fallback`, a failure
    /// before the first token sends the request back to be answered locally.
    pub(super) fn start(
        &mut self,
        client: Arc<CloudClient>,
        request: Request,
        reply: Reply,
        (route, fallback): (Route, bool),
        own: Sender<Command>,
    ) {
        let id = request.id;
        let chat = match chat_request(&request) {
            Ok(c) => c,
            // `auto` answers what the cloud cannot take (a grammar) locally.
            Err(message) if fallback => {
                let route = Route::local(format!("answered offline: {message}"));
                let _ = own.send(Command::Fallback {
                    request,
                    reply,
                    route,
                    since: Instant::now(),
                });
                return;
            }
            Err(message) => {
                let _ = reply.send(Failure::bad_request(message).event(Some(id)));
                return;
            }
        };
        self.live
            .retain(|_, (_, ended)| !ended.load(Ordering::Relaxed));
        let token = CancelToken::new();
        let ended = Arc::new(AtomicBool::new(false));
        self.live.insert(id, (token.clone(), ended.clone()));
        let spawned = std::thread::Builder::new()
            .name("hearth-cloud-request".into())
            .spawn(move || {
                let started = Instant::now();
                let mut first = None;
                let mut pieces = 0usize;
                let mut gone = false;
                let result = client.chat_stream(&chat, &token, |delta| {
                    let (text, kind) = match delta {
                        Delta::Text(t) => (t, TextKind::Answer),
                        Delta::Reasoning(t) => (t, TextKind::Reasoning),
                    };
                    if !text.is_empty() {
                        first.get_or_insert_with(Instant::now);
                        pieces += 1;
                        let sent = reply.send(Event::Token {
                            id,
                            text: text.to_string(),
                            kind,
                        });
                        if sent.is_err() && !gone {
                            // Nobody listens any more: close the connection.
                            gone = true;
                            token.cancel();
                        }
                    }
                });
                ended.store(true, Ordering::Relaxed);
                match result {
                    Ok(done) => {
                        let end = Instant::now();
                        // Without usage from the server, each streamed piece counts as a token.
                        let (prompt_tokens, generated_tokens) =
                            done.usage.as_ref().map_or((0, pieces), |u| {
                                (u.prompt_tokens as usize, u.completion_tokens as usize)
                            });
                        let stats = SeqStats {
                            prompt_tokens,
                            generated_tokens,
                            time_to_first_token: first.unwrap_or(end) - started,
                            decode_time: first.map_or_else(Default::default, |f| end - f),
                            ..SeqStats::default()
                        };
                        let finish = match done.finish_reason {
                            cloud::FinishReason::Length => FinishReason::Length,
                            _ => FinishReason::Stop,
                        };
                        let _ = reply.send(Event::Done {
                            id,
                            finish,
                            stats,
                            text: done.text,
                            reasoning: done.reasoning,
                            tool_calls: done.tool_calls,
                            tokens: Vec::new(),
                            route,
                        });
                    }
                    Err(e) if fallback && first.is_none() && !token.is_cancelled() => {
                        let route = Route::local(format!(
                            "cloud unavailable ({}), answered offline",
                            first_line(&e.to_string())
                        ));
                        let _ = own.send(Command::Fallback {
                            request,
                            reply,
                            route,
                            since: started,
                        });
                    }
                    Err(e) if token.is_cancelled() => {
                        let failure = Failure::new(ErrorKind::Cancelled, format!("cancelled: {e}"));
                        let _ = reply.send(failure.event(Some(id)));
                    }
                    Err(e) => {
                        let _ = reply.send(Failure::cloud(&e).event(Some(id)));
                    }
                }
            });
        if spawned.is_err() {
            // The closure, and with it the reply channel, is gone: the caller sees it closed.
            self.live.remove(&id);
        }
    }

    /// Cancels request `id`'s stream, if it has one (which closes the connection).
    pub(super) fn cancel(&mut self, id: RequestId) {
        if let Some((token, _)) = self.live.remove(&id) {
            token.cancel();
        }
    }

    /// Cancels every stream (the engine is shutting down).
    pub(super) fn cancel_all(&mut self) {
        for (_, (token, _)) in self.live.drain() {
            token.cancel();
        }
    }
}

/// The cloud form of a request: its messages (a plain-text prompt becomes one user message) and
/// sampling settings.
fn chat_request(request: &Request) -> Result<ChatRequest, String> {
    let response_format = match &request.params.constraint {
        None => None,
        Some(Constraint::JsonObject) => Some(serde_json::json!({"type": "json_object"})),
        Some(Constraint::JsonSchema(schema)) => Some(serde_json::json!({
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema},
        })),
        Some(Constraint::Lark(_)) => {
            return Err(
                "a grammar cannot be sent to the cloud; answer this request locally".into(),
            );
        }
    };
    let messages = match &request.prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" => Role::System,
                    "assistant" => Role::Assistant,
                    "user" => Role::User,
                    "tool" => Role::Tool,
                    other => {
                        return Err(format!("the cloud route cannot send a {other:?} message"));
                    }
                };
                Ok(Message {
                    tool_calls: m.tool_calls.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                    ..Message::new(role, m.content.clone())
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        Prompt::Text(text) => vec![Message::new(Role::User, text.clone())],
        Prompt::Tokens(_) => return Err("token prompts cannot go to the cloud".into()),
    };
    let p = &request.params;
    let greedy = p.sampler.temperature <= 0.0;
    Ok(ChatRequest {
        messages,
        max_tokens: Some(p.max_tokens.clamp(1, u32::MAX as usize) as u32),
        temperature: Some(if greedy { 0.0 } else { p.sampler.temperature }),
        top_p: (!greedy && p.sampler.top_p < 1.0).then_some(p.sampler.top_p),
        // OpenAI's seed is a signed 64-bit integer: servers refuse larger values.
        seed: Some(p.sampler.seed & i64::MAX as u64),
        stop: p.stop.clone(),
        // Tools pass through as the caller gave them; the endpoint's model renders and calls
        // them itself.
        tools: p.chat.tools.clone(),
        tool_choice: match &p.chat.tool_choice {
            _ if p.chat.tools.is_empty() => None,
            ToolChoice::Auto => None,
            ToolChoice::None => Some("none".into()),
            ToolChoice::Required => Some("required".into()),
            ToolChoice::Function(name) => {
                Some(serde_json::json!({"type": "function", "function": {"name": name}}))
            }
        },
        response_format,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_its_cloud_form() {
        use crate::tokenizer::ChatMessage;
        let request = Request {
            id: 1,
            prompt: Prompt::Chat(vec![
                ChatMessage::new("system", "be brief"),
                ChatMessage::new("user", "hi"),
            ]),
            params: super::super::GenerateParams {
                max_tokens: 12,
                stop: vec!["\n\n".into()],
                ..Default::default()
            },
        };
        let chat = chat_request(&request).unwrap();
        assert_eq!(chat.messages.len(), 2);
        assert_eq!(chat.messages[0].role, Role::System);
        assert_eq!(chat.max_tokens, Some(12));
        assert_eq!(chat.stop, vec!["\n\n".to_string()]);
        assert_eq!((chat.tools.len(), &chat.response_format), (0, &None));
        let mut big = request.clone();
        big.params.sampler.seed = u64::MAX;
        assert_eq!(chat_request(&big).unwrap().seed, Some(i64::MAX as u64));
        // Tools, tool_choice and a schema pass through; a grammar cannot.
        let mut tooled = request.clone();
        tooled.params.chat.tools =
            vec![serde_json::json!({"type": "function", "function": {"name": "f"}})];
        tooled.params.chat.tool_choice = super::super::ToolChoice::Function("f".into());
        tooled.params.constraint = Some(Constraint::JsonSchema(
            serde_json::json!({"type": "object"}),
        ));
        let chat = chat_request(&tooled).unwrap();
        assert_eq!(chat.tools, tooled.params.chat.tools);
        assert_eq!(
            chat.tool_choice,
            Some(serde_json::json!({"type": "function", "function": {"name": "f"}}))
        );
        assert_eq!(
            chat.response_format,
            Some(
                serde_json::json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}})
            )
        );
        tooled.params.constraint = Some(Constraint::Lark("start: \"x\"".into()));
        assert!(chat_request(&tooled).is_err());
        let tokens = Request {
            prompt: Prompt::Tokens(vec![1, 2]),
            ..request
        };
        assert!(chat_request(&tokens).is_err());
    }
}
