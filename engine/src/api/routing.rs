//! The router on the engine thread: each request's [`RouteMode`] becomes a local generation, a
//! cloud stream, or (in `Auto`) a local prefill whose probe verdict decides (see
//! [`crate::route`]). The facts are gathered here, the decision is [`decide::decide`]'s, and
//! cloud answers stream through [`super::cloud::CloudStreams`].

use std::sync::Arc;

use super::prepare::prepare;
use super::worker::Engine;
use super::{CloudFailure, ErrorKind, Failure, FaultStage, Prompt, Reply, Request, Route};
use crate::route::cloud::CloudClient;
use crate::route::decide::{self, Decision, Facts};

impl Engine {
    /// Starts a request on the route [`decide::decide`] chooses from the facts gathered here.
    /// Where the decision needs the prompt's length, the prompt is prepared (rendered and
    /// tokenized) once, and a local answer reuses it.
    pub(super) fn route(&mut self, request: Request, reply: Reply) {
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
                match prepare(
                    &l.tokenizer,
                    l.template.as_ref(),
                    &request.prompt,
                    &request.params,
                ) {
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

    /// Streams the answer from the cloud ([`CloudStreams::start`]).
    pub(super) fn start_cloud(
        &mut self,
        client: Arc<CloudClient>,
        request: Request,
        reply: Reply,
        route: Route,
        fallback: bool,
    ) {
        let own = self.own.clone();
        self.cloud
            .start(client, request, reply, (route, fallback), own);
    }
}
