//! The router on the engine thread: each request's [`RouteMode`] becomes a local generation, a
//! cloud stream, or (in `Auto`) a local prefill whose probe verdict decides (see
//! [`crate::route`]). Cloud answers stream on their own threads into the request's reply
//! channel as the same events as local ones, with `Done.route` telling them apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::worker::{Engine, prepare};
use super::{CloudFailure, Command, ErrorKind, Event, Failure, FaultStage, Prompt, Request, Route};
use crate::model::FinishReason;
use crate::route::cloud::{self, CancelToken, ChatRequest, CloudClient, Delta, Message, Role};
use crate::route::decide::{self, Decision, Facts};
use crate::sched::SeqStats;

impl Engine {
    /// Starts a request on the route [`decide::decide`] chooses from the facts gathered here.
    /// Where the decision needs the prompt's length, the prompt is prepared (rendered and
    /// tokenized) once, and a local answer reuses it.
    pub(super) fn route(&mut self, request: Request, reply: Sender<Event>) {
        let mode = request.params.route;
        let cloud = self.config.cloud.clone();
        let mut facts = Facts {
            cloud: cloud.is_some(),
            model: self.loaded.is_some(),
            token_prompt: matches!(request.prompt, Prompt::Tokens(_)),
            prompt: None,
            context: 0,
            probe: false,
        };
        let mut prepared = None;
        if let Some(l) = &self.loaded {
            let max = request.params.max_context.unwrap_or(usize::MAX);
            facts.context = max.min(l.context_length);
            facts.probe = l.probe.is_some();
            if decide::needs_prompt(mode, &facts) {
                self.fault(FaultStage::Render);
                match prepare(l, &request.prompt, request.params.context) {
                    Ok(p) => {
                        facts.prompt = Some(Ok(p.tokens.len()));
                        prepared = Some(p);
                    }
                    Err(failure) => facts.prompt = Some(Err(failure.message)),
                }
            }
        }
        let decision = decide::decide(mode, &facts);
        tracing::debug!("request {}: {decision:?}", request.id);
        match (decision, cloud) {
            (Decision::Local { route, await_probe }, _) => {
                self.start_local(request, reply, route, await_probe, prepared)
            }
            (Decision::Cloud { route, fallback }, Some(client)) => {
                self.start_cloud(client, request, reply, route, fallback)
            }
            (Decision::Cloud { .. }, None) | (Decision::Refuse(_), _) => {
                let why = "the route is cloud only, but no cloud endpoint is set";
                let failure = Failure::new(ErrorKind::Cloud(CloudFailure::NotConfigured), why);
                let _ = reply.send(failure.event(Some(request.id)));
            }
        }
    }

    /// The probe's verdict on an `Auto` request at the end of its prefill: keep it local, or
    /// stop it and ask the cloud ([`decide::verdict`]).
    pub(super) fn decide(&mut self, request: Request, hidden: &[f32]) {
        let id = request.id;
        let (Some(l), Some(client)) = (&self.loaded, self.config.cloud.clone()) else {
            return self.set_route(id, Route::local("cloud endpoint removed"));
        };
        let Some(probe) = l.probe.as_ref().filter(|p| p.weights.len() == hidden.len()) else {
            let why = "the router probe does not fit this model's hidden state";
            return self.set_route(id, Route::local(why));
        };
        let decision = decide::verdict(probe.risk(hidden), probe.threshold);
        tracing::debug!("request {id}: {decision:?}");
        match decision {
            Decision::Cloud { route, fallback } => {
                if let Some((reply, _)) = self.take_over(id) {
                    self.start_cloud(client, request, reply, route, fallback);
                }
            }
            Decision::Local { route, .. } => self.set_route(id, route),
            Decision::Refuse(_) => {}
        }
    }

    /// Streams the answer from the cloud on a thread of its own. With `fallback`, a failure
    /// before the first token sends the request back to be answered locally.
    pub(super) fn start_cloud(
        &mut self,
        client: Arc<CloudClient>,
        request: Request,
        reply: Sender<Event>,
        route: Route,
        fallback: bool,
    ) {
        let id = request.id;
        let chat = match chat_request(&request) {
            Ok(c) => c,
            Err(message) => {
                let _ = reply.send(Failure::bad_request(message).event(Some(id)));
                return;
            }
        };
        self.cloud_live
            .retain(|_, (_, ended)| !ended.load(Ordering::Relaxed));
        let token = CancelToken::new();
        let ended = Arc::new(AtomicBool::new(false));
        self.cloud_live.insert(id, (token.clone(), ended.clone()));
        let own = self.own.clone();
        let spawned = std::thread::Builder::new()
            .name("hearth-cloud-request".into())
            .spawn(move || {
                let started = Instant::now();
                let mut first = None;
                let mut pieces = 0usize;
                let mut gone = false;
                let result = client.chat_stream(&chat, &token, |delta| {
                    if let Delta::Text(text) = delta
                        && !text.is_empty()
                    {
                        first.get_or_insert_with(Instant::now);
                        pieces += 1;
                        let sent = reply.send(Event::Token {
                            id,
                            text: text.to_string(),
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
            self.cloud_live.remove(&id);
        }
    }

    /// Cancels every cloud request (the engine is shutting down).
    pub(super) fn cancel_cloud(&mut self) {
        for (_, (token, _)) in self.cloud_live.drain() {
            token.cancel();
        }
    }
}

/// The cloud form of a request: its messages (a plain-text prompt becomes one user message) and
/// sampling settings.
fn chat_request(request: &Request) -> Result<ChatRequest, String> {
    let messages = match &request.prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" => Role::System,
                    "assistant" => Role::Assistant,
                    "user" => Role::User,
                    other => {
                        return Err(format!("the cloud route cannot send a {other:?} message"));
                    }
                };
                Ok(Message::new(role, m.content.clone()))
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
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `5031` as "5,031".
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
        let mut big = request.clone();
        big.params.sampler.seed = u64::MAX;
        assert_eq!(chat_request(&big).unwrap().seed, Some(i64::MAX as u64));
        let tokens = Request {
            prompt: Prompt::Tokens(vec![1, 2]),
            ..request
        };
        assert!(chat_request(&tokens).is_err());
    }
}
