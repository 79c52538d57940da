//! The engine thread: takes commands, turns requests into scheduler sequences (chat template,
//! tokenizer, stop strings), runs scheduler steps between commands, and turns their outputs into
//! events (UTF-8 complete text deltas, one `Done` or `Error` per request).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::cloud::CloudStreams;
use super::fault::{FaultStage, internal_error};
use super::prepare::{PreparedPrompt, prepare};
use super::runner::{OpenScheduler, Runner};
use super::{
    BackendKind, Command, EngineConfig, EngineStats, Event, ModelInfo, Request, RequestId, Route,
    Stats,
};
use super::{ErrorKind, Failure, LoadFailure, Reply};
use crate::backend::{self, OpenOptions, Opened};
use crate::constrain::Grammars;
use crate::model::FinishReason;
use crate::reply::{Piece, ReplyReader, TextKind};
use crate::route::probe::Probe;
use crate::sample::StopStrings;
use crate::sched::{Output, SeqParams};
use crate::tokenizer::{ChatTemplate, DecodeState, Tokenizer};

/// What a loaded model needs besides its scheduler.
pub(super) struct Loaded {
    runner: Box<dyn Runner>,
    pub(super) tokenizer: Tokenizer,
    pub(super) template: Option<ChatTemplate>,
    name: String,
    /// The `Auto` route's probe for this model, if there is one.
    pub(super) probe: Option<Probe>,
    pub(super) context_length: usize,
    /// The vocabulary's grammar machinery, built on the first constrained request.
    grammars: Option<Grammars>,
}

impl Loaded {
    /// The grammar machinery for this model's vocabulary (built once, on first use).
    fn grammars(&mut self) -> Result<&Grammars, Failure> {
        if self.grammars.is_none() {
            let g = Grammars::new(&self.tokenizer)
                .map_err(|e| Failure::new(ErrorKind::Internal, e.to_string()))?;
            self.grammars = Some(g);
        }
        Ok(self.grammars.as_ref().expect("built above"))
    }
}

/// A live request's streaming state. Dropped without [`Live::end`] (a panic unwound past it, or
/// the engine was rebuilt), it still sends its request a final error event.
struct Live {
    id: RequestId,
    /// Its final event has been sent.
    ended: bool,
    reply: Reply,
    route: Route,
    /// An `Auto` request waiting for its probe's verdict (the request, to send to the cloud).
    pub(super) pending: Option<Request>,
    /// The caller asked for the hidden state too.
    hidden_state: bool,
    decoder: Option<DecodeState>,
    stops: StopStrings,
    /// Reads reasoning and tool calls out of the text left after stop strings.
    reader: ReplyReader,
    /// The answer and the reasoning sent so far.
    text: String,
    reasoning: String,
    /// Generated tokens read while the reply was in its reasoning.
    reasoning_tokens: usize,
    /// The generated token ids.
    tokens: Vec<u32>,
    /// A stop string ended it (the scheduler reports `Cancelled`; the caller sees `Stop`).
    stopped: bool,
    /// Time spent before it was submitted here (a cloud attempt that failed), added to its time to
    /// first token.
    waited: std::time::Duration,
}

impl Live {
    /// Sends reply pieces as token events (keeping the texts); false when nobody listens.
    fn send_pieces(&mut self, pieces: Vec<Piece>) -> bool {
        for p in pieces {
            match p.kind {
                TextKind::Answer => self.text.push_str(&p.text),
                TextKind::Reasoning => self.reasoning.push_str(&p.text),
            }
            let sent = self.reply.send(Event::Token {
                id: self.id,
                text: p.text,
                kind: p.kind,
            });
            if sent.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends the request's final event (`Done` or `Error`).
    fn end(mut self, event: Event) {
        self.ended = true;
        let _ = self.reply.send(event);
    }

    /// Ends it as an error.
    fn fail(self, failure: &Failure) {
        let id = self.id;
        self.end(failure.clone().event(Some(id)));
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.ended {
            let lost = Failure::new(
                ErrorKind::Internal,
                "internal error in the engine: the request ended without an answer",
            );
            let _ = self.reply.send(lost.event(Some(self.id)));
        }
    }
}

/// The engine thread's state.
pub(super) struct Engine {
    pub(super) config: EngineConfig,
    pub(super) loaded: Option<Loaded>,
    live: HashMap<RequestId, Live>,
    /// The engine's own command channel (cloud threads send fallbacks through it).
    pub(super) own: Sender<Command>,
    /// Requests answering from the cloud: cancel tokens, and whether they have ended.
    pub(super) cloud: CloudStreams,
    /// The model (and draft) loaded now, for the supervisor to load again after a restart.
    loaded_from: Option<(PathBuf, Option<PathBuf>)>,
}

impl Engine {
    pub(super) fn new(config: EngineConfig, own: Sender<Command>) -> Self {
        Engine {
            config,
            loaded: None,
            live: HashMap::new(),
            own,
            cloud: CloudStreams::default(),
            loaded_from: None,
        }
    }

    /// The model (and draft) loaded now.
    pub(super) fn loaded_from(&self) -> Option<(PathBuf, Option<PathBuf>)> {
        self.loaded_from.clone()
    }

    /// Panics here if the engine's test fault is set for `stage` (see `supervise.rs`).
    pub(super) fn fault(&self, stage: FaultStage) {
        if let Some(f) = &self.config.fault {
            f.hit(stage);
        }
    }

    /// Runs commands and scheduler steps until shutdown. A panic inside a command or a step is
    /// caught where it happens (see [`Engine::handle_guarded`] and [`Engine::step`]); one that
    /// escapes is the supervisor's (`supervise.rs`).
    pub(super) fn run(&mut self, rx: &Receiver<Command>) {
        loop {
            let busy = self.loaded.as_ref().is_some_and(|l| !l.runner.is_idle());
            // Wait for a command only when there is nothing to compute.
            let first = if busy {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                }
            };
            let mut commands: Vec<Command> = first.into_iter().collect();
            commands.extend(rx.try_iter());
            let mut commands = commands.into_iter();
            while let Some(c) = commands.next() {
                if !self.handle_guarded(c) {
                    self.end_all(ErrorKind::Shutdown, "the engine shut down");
                    // Commands taken with the shutdown are answered, not dropped.
                    commands.for_each(Command::refuse);
                    return;
                }
            }
            if !self.live.is_empty() {
                self.fault(FaultStage::Thread);
            }
            self.step();
        }
    }

    /// Handles one command under `catch_unwind`: a panic (while loading, rendering, tokenizing,
    /// routing) ends that command's request, or load, with an error event, and the engine goes
    /// on. `false` on shutdown.
    pub(super) fn handle_guarded(&mut self, command: Command) -> bool {
        let target = command.reply_target();
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.handle(command))) {
            Ok(go_on) => go_on,
            Err(panic) => {
                let failure = internal_error(&*panic);
                if let Some((id, reply)) = target {
                    // A request that got as far as running ends through its `Live`.
                    match id.and_then(|id| self.live.remove(&id)) {
                        Some(live) => {
                            if let Some(l) = &mut self.loaded {
                                l.runner.finish(live.id, FinishReason::Cancelled);
                            }
                            live.fail(&failure)
                        }
                        None => {
                            let _ = reply.send(failure.event(id));
                        }
                    }
                }
                true
            }
        }
    }

    /// Handles one command; `false` on shutdown.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Load {
                model,
                draft,
                reply,
            } => {
                self.end_all(ErrorKind::NoModel, "the model was replaced");
                self.loaded = None;
                self.loaded_from = None;
                match self.load(&model, draft.as_deref(), &reply) {
                    Ok((loaded, info)) => {
                        self.loaded = Some(loaded);
                        self.loaded_from = Some((model, draft));
                        let _ = reply.send(Event::Ready(info));
                    }
                    Err(failure) => {
                        let _ = reply.send(failure.event(None));
                    }
                }
            }
            Command::Unload { reply } => {
                self.end_all(ErrorKind::NoModel, "the model was unloaded");
                self.loaded = None;
                self.loaded_from = None;
                let _ = reply.send(Event::Unloaded);
            }
            Command::Generate { request, reply } => self.route(request, reply),
            Command::Cancel { id } => {
                if let Some(l) = &mut self.loaded {
                    l.runner.finish(id, FinishReason::Cancelled);
                }
                self.cloud.cancel(id);
            }
            Command::SetCloud { client } => self.config.cloud = client,
            Command::Fallback {
                request,
                reply,
                route,
                since,
            } => {
                let id = request.id;
                self.start_local(request, reply, route, false, None);
                if let Some(live) = self.live.get_mut(&id) {
                    live.waited = since.elapsed();
                }
            }
            Command::Stats { reply } => {
                let stats = match &self.loaded {
                    Some(l) => EngineStats {
                        model: Some(l.name.clone()),
                        ..l.runner.stats()
                    },
                    None => EngineStats::default(),
                };
                let _ = reply.send(Event::Stats(stats));
            }
            Command::Shutdown => {
                self.cloud.cancel_all();
                return false;
            }
        }
        true
    }

    /// Ends every live request with an error.
    fn end_all(&mut self, kind: ErrorKind, why: &str) {
        if let Some(l) = &mut self.loaded {
            l.runner.abort_all();
        }
        let failure = Failure::new(kind, why);
        for (_, live) in self.live.drain() {
            live.fail(&failure);
        }
    }

    fn load(
        &self,
        path: &Path,
        draft: Option<&Path>,
        reply: &Reply,
    ) -> Result<(Loaded, ModelInfo), Failure> {
        self.fault(FaultStage::Load);
        let progress = |phase, done, total| {
            let _ = reply.send(Event::Loading {
                phase,
                done_bytes: done,
                total_bytes: total,
            });
        };
        let options = OpenOptions {
            gpu: self.config.gpu.clone(),
            threads: self.config.threads,
        };
        let kind = self.config.backend;
        let (opened, mut fallback) = backend::open(kind, &options).map_err(|e| {
            Failure::new(ErrorKind::LoadFailed(LoadFailure::Backend), e.to_string())
        })?;
        let open = |opened: &Opened| {
            opened.run(OpenScheduler {
                path,
                draft,
                config: self.config.sched,
                progress: &progress,
            })
        };
        let runner = match open(&opened) {
            // `auto`: a file the GPU backend cannot hold (a weight type its kernels lack, a
            // device out of memory) runs on the CPU, and the compute badge says why.
            Err(Failure {
                kind: ErrorKind::LoadFailed(LoadFailure::Backend | LoadFailure::Unsupported),
                message,
            }) if kind == BackendKind::Auto && opened.is_gpu() => {
                tracing::warn!("the GPU backend cannot run this model, so the CPU does: {message}");
                fallback = Some(message);
                open(&Opened::Cpu {
                    threads: options.threads(),
                })?
            }
            other => other?,
        };
        let file = runner.file();
        let invalid = |e: &dyn std::fmt::Display| {
            Failure::new(ErrorKind::LoadFailed(LoadFailure::Invalid), e.to_string())
        };
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|e| invalid(&e))?;
        // A template that does not compile, or that cannot finish a sample conversation within
        // its fuel and output limits, fails the load by name (a model file is untrusted input).
        let template = Some(ChatTemplate::from_gguf(&file).map_err(|e| invalid(&e))?);
        let name = file
            .opt_str("general.name")
            .ok()
            .flatten()
            .map(str::to_string)
            .unwrap_or_else(|| file.label().to_string());
        let info = ModelInfo {
            path: path.to_path_buf(),
            name: name.clone(),
            has_chat_template: template.is_some(),
            draft: draft.map(|d| d.display().to_string()),
            fallback,
            ..runner.info()
        };
        tracing::info!(
            "loaded {} ({}) on the {}",
            info.name,
            path.display(),
            info.compute
        );
        let probe = crate::route::probe::for_model(self.config.probe.as_ref(), &info.probe_key());
        Ok((
            Loaded {
                runner,
                tokenizer,
                template,
                name,
                probe,
                context_length: info.context_length,
                grammars: None,
            },
            info,
        ))
    }

    /// Hands a request to the scheduler (its prompt prepared here unless the router already
    /// did), to answer locally (`route`), or, with `probe`, to wait at the end of prefill for the
    /// router's verdict.
    pub(super) fn start_local(
        &mut self,
        request: Request,
        reply: Reply,
        route: Route,
        probe: bool,
        prepared: Option<PreparedPrompt>,
    ) {
        let id = request.id;
        let fail = |failure: Failure| {
            let _ = reply.send(failure.event(Some(id)));
        };
        let Some(l) = &mut self.loaded else {
            return fail(Failure::new(ErrorKind::NoModel, "no model is loaded"));
        };
        if self.live.contains_key(&id) {
            return fail(Failure::bad_request(format!(
                "request {id} is already running"
            )));
        }
        let p = &request.params;
        let prepared = match prepared {
            Some(prepared) => prepared,
            None => {
                if let Some(f) = &self.config.fault {
                    f.hit(FaultStage::Render);
                }
                match prepare(&l.tokenizer, l.template.as_ref(), &request.prompt, p) {
                    Ok(prepared) => prepared,
                    Err(failure) => return fail(failure),
                }
            }
        };
        let PreparedPrompt {
            tokens,
            keep,
            chat,
            reply: reply_format,
            constraint,
        } = prepared;
        // The request's own constraint is checked as given first, so a bad schema is reported
        // as the caller wrote it (not as the grammar that closes a reasoning block before it).
        let checked = [
            p.constraint
                .as_ref()
                .filter(|c| Some(*c) != constraint.as_ref()),
            constraint.as_ref(),
        ];
        let mut grammar = None;
        for c in checked.into_iter().flatten() {
            match l.grammars().and_then(|g| {
                g.compile(c)
                    .map_err(|e| Failure::bad_request(e.to_string()))
            }) {
                Ok(g) => grammar = Some(g),
                Err(failure) => return fail(failure),
            }
        }
        let params = SeqParams {
            max_tokens: p.max_tokens.max(1),
            sampler: p.sampler.clone(),
            stop_ids: if p.ignore_eos {
                Vec::new()
            } else {
                l.tokenizer.eog_ids().to_vec()
            },
            context: p.context,
            keep,
            max_context: p.max_context,
            speculation: p.speculation,
            probe: p.hidden_state || probe,
            probe_tokens: if p.hidden_state { p.probe_tokens } else { 0 },
            grammar,
        };
        if let Err(failure) = l.runner.scheduler_submit(id, tokens, params) {
            return fail(failure);
        }
        let hidden_state = p.hidden_state;
        let stops = StopStrings::new(&p.stop);
        self.live.insert(
            id,
            Live {
                id,
                ended: false,
                reply,
                route,
                pending: probe.then_some(request),
                hidden_state,
                decoder: Some(DecodeState::new(chat)),
                stops,
                reader: ReplyReader::new(reply_format),
                text: String::new(),
                reasoning: String::new(),
                reasoning_tokens: 0,
                tokens: Vec::new(),
                stopped: false,
                waited: std::time::Duration::ZERO,
            },
        );
    }

    /// One scheduler step, its outputs turned into events.
    fn step(&mut self) {
        let Some(l) = &mut self.loaded else {
            return;
        };
        if l.runner.is_idle() {
            return;
        }
        let fault = self.config.fault.clone();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(f) = &fault {
                f.hit(FaultStage::Step);
            }
            l.runner.step()
        }));
        let outputs = match result {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => return self.fail_running(&Failure::run(&e)),
            Err(panic) => return self.fail_running(&internal_error(&*panic)),
        };
        // Turning outputs into events (decoding tokens, stop strings, `done`) is guarded too.
        let handled = std::panic::catch_unwind(AssertUnwindSafe(|| self.handle_outputs(outputs)));
        if let Err(panic) = handled {
            self.fail_running(&internal_error(&*panic));
        }
    }

    fn handle_outputs(&mut self, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Token { seq, id: token } => self.token(seq, token),
                Output::Done { seq, finish, stats } => self.done(seq, finish, stats),
                Output::Hidden { seq, values } => self.hidden(seq, values),
                Output::Confidence {
                    seq,
                    logprob,
                    entropy,
                } => {
                    if let Some(live) = self.live.get(&seq).filter(|l| l.hidden_state) {
                        let _ = live.reply.send(Event::Confidence {
                            id: seq,
                            logprob,
                            entropy,
                        });
                    }
                }
            }
        }
    }

    fn token(&mut self, seq: RequestId, token: u32) {
        let (Some(l), Some(live)) = (&mut self.loaded, self.live.get_mut(&seq)) else {
            return;
        };
        if live.stopped {
            return;
        }
        if let Some(f) = &self.config.fault {
            f.hit(FaultStage::Decode);
        }
        live.tokens.push(token);
        let mut decoder = l
            .tokenizer
            .resume_decoder(live.decoder.take().expect("a live request has a decoder"));
        let piece = decoder.step(token);
        live.decoder = Some(decoder.into_state());
        let step = live.stops.push(&piece);
        if step.stopped {
            live.stopped = true;
            l.runner.finish(seq, FinishReason::Stop);
        }
        let was_reasoning = live.reader.in_reasoning();
        let pieces = live.reader.push(&step.emit);
        if was_reasoning || pieces.iter().any(|p| p.kind == TextKind::Reasoning) {
            live.reasoning_tokens += 1;
        }
        if !live.send_pieces(pieces) {
            // Nobody listens any more: cancel.
            l.runner.finish(seq, FinishReason::Cancelled);
            self.live.remove(&seq);
        }
    }

    fn hidden(&mut self, seq: RequestId, values: Vec<f32>) {
        let Some(live) = self.live.get_mut(&seq) else {
            return;
        };
        let pending = live.pending.take();
        if live.hidden_state {
            let _ = live.reply.send(Event::Hidden {
                id: seq,
                values: values.clone(),
            });
        }
        if let Some(request) = pending {
            self.decide(request, &values);
        }
    }

    /// Ends a local request without a word to its caller (its answer goes elsewhere), returning
    /// its reply channel and route.
    pub(super) fn take_over(&mut self, id: RequestId) -> Option<(Reply, Route)> {
        let mut live = self.live.remove(&id)?;
        if let Some(l) = &mut self.loaded {
            l.runner.finish(id, FinishReason::Cancelled);
        }
        // Its answer (and final event) now comes from elsewhere.
        live.ended = true;
        Some((live.reply.clone(), live.route.clone()))
    }

    /// Sets the route an answering local request reports.
    pub(super) fn set_route(&mut self, id: RequestId, route: Route) {
        if let Some(live) = self.live.get_mut(&id) {
            live.route = route;
        }
    }

    fn done(&mut self, seq: RequestId, finish: FinishReason, stats: Stats) {
        let (Some(l), Some(mut live)) = (&mut self.loaded, self.live.remove(&seq)) else {
            return;
        };
        if let Some(f) = &self.config.fault {
            f.hit(FaultStage::Done);
        }
        if !live.stopped {
            let mut decoder = l
                .tokenizer
                .resume_decoder(live.decoder.take().expect("a live request has a decoder"));
            // A model that chose to stop mid-character wrote invalid text (U+FFFD); an answer
            // cut by max_tokens or the context leaves the unfinished character out.
            let rest = match finish {
                FinishReason::Stop => decoder.finish(),
                _ => decoder.finish_cut(),
            };
            let step = live.stops.push(&rest);
            let mut tail = step.emit;
            if !step.stopped {
                tail.push_str(&live.stops.finish());
            }
            let pieces = live.reader.push(&tail);
            live.send_pieces(pieces);
        }
        let pieces = live.reader.finish();
        live.send_pieces(pieces);
        let tool_calls = live.reader.take_calls();
        let finish = if live.stopped {
            FinishReason::Stop
        } else {
            finish
        };
        let stats = Stats {
            time_to_first_token: stats.time_to_first_token + live.waited,
            reasoning_tokens: live.reasoning_tokens,
            ..stats
        };
        let (text, route) = (std::mem::take(&mut live.text), live.route.clone());
        let reasoning = std::mem::take(&mut live.reasoning);
        let tokens = std::mem::take(&mut live.tokens);
        live.end(Event::Done {
            id: seq,
            finish,
            stats,
            text,
            reasoning,
            tool_calls,
            tokens,
            route,
        });
    }

    /// Ends every running request with `failure` after a failed step.
    fn fail_running(&mut self, failure: &Failure) {
        if let Some(l) = &mut self.loaded {
            for id in l.runner.abort_all() {
                if let Some(live) = self.live.remove(&id) {
                    live.fail(failure);
                }
            }
        }
    }
}
