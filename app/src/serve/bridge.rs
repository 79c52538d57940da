//! From the engine's blocking reply channel to the async handlers: one blocking-pool thread per
//! request forwards events into a bounded tokio channel. When the handler goes away (a client
//! that disconnects drops its response, and with it the receiver), the thread notices within
//! [`POLL`] even while the engine is silent, cancels the request and drops the engine's receiver.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use hearth_engine::api::{EngineHandle, Event, RequestId};
use tokio::sync::mpsc;

/// How often a forwarding thread looks whether its handler still listens.
pub const POLL: Duration = Duration::from_millis(50);

/// Events buffered between the engine and a slow client (the engine never waits for them).
const BUFFER: usize = 64;

/// Forwards request `id`'s events from `rx` until its `Done` or `Error`. Must be called within
/// a tokio runtime.
pub fn forward(
    engine: Arc<EngineHandle>,
    id: RequestId,
    rx: Receiver<Event>,
) -> mpsc::Receiver<Event> {
    let (tx, out) = mpsc::channel(BUFFER);
    tokio::task::spawn_blocking(move || {
        loop {
            match rx.recv_timeout(POLL) {
                Ok(event) => {
                    let last = matches!(event, Event::Done { .. } | Event::Error { .. });
                    if tx.blocking_send(event).is_err() {
                        engine.cancel(id);
                        return;
                    }
                    if last {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if tx.is_closed() {
                        engine.cancel(id);
                        return;
                    }
                }
                // The engine stopped: the handler sees its channel end without a last event.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hearth_engine::api::{BackendKind, EngineConfig, GenerateParams, Prompt};
    use hearth_engine::sample::SamplerConfig;
    use hearth_engine::source::{self, SMOLLM2_135M_Q4_1};

    use super::*;

    fn running(engine: &EngineHandle) -> usize {
        match engine.stats().recv_timeout(Duration::from_secs(30)) {
            Ok(Event::Stats(s)) => s.running + s.waiting,
            other => panic!("expected engine stats, got {other:?}"),
        }
    }

    #[test]
    fn dropping_the_async_receiver_cancels_the_engine_request() {
        let model = source::fetch(&SMOLLM2_135M_Q4_1).expect("test model");
        let config = EngineConfig {
            backend: BackendKind::Cpu,
            ..EngineConfig::default()
        };
        let (engine, _) = crate::run::load_engine(config, &model, None).unwrap();
        let engine = Arc::new(engine);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (id, rx) = engine.generate(
            Prompt::Text("Once upon a time".into()),
            GenerateParams {
                max_tokens: 100_000,
                sampler: SamplerConfig::greedy(),
                ignore_eos: true,
                ..GenerateParams::default()
            },
        );
        let engine2 = engine.clone();
        runtime.block_on(async move {
            let mut events = forward(engine2, id, rx);
            let mut tokens = 0;
            while tokens < 2 {
                match events.recv().await {
                    Some(Event::Token { .. }) => tokens += 1,
                    Some(Event::Done { .. } | Event::Error { .. }) | None => {
                        panic!("the request ended early")
                    }
                    Some(_) => {}
                }
            }
            // The client goes away.
            drop(events);
        });
        let start = Instant::now();
        while running(&engine) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the engine still runs the request 10 s after its receiver was dropped"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
