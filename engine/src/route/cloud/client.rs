//! [`CloudClient`]: sending a request with its key, classifying error statuses, the retry loop,
//! and folding an SSE stream into an answer under the first-token and between-tokens deadlines.
//! Every attempt runs on the client's runtime; the calling thread blocks in `block_on`.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};
use sse_stream::SseByteStream;
use tokio::time::Instant;

use super::key::is_loopback_host;
use super::wire::{self, Accumulator, ErrorInfo, RequestBody, Step, StreamFault};
use super::{
    ApiKey, CancelToken, ChatRequest, CloudConfig, CloudError, Completion, Delta, ModelInfo,
    Partial, TimeoutPhase, Timeouts, plain_http_warning,
};

/// Largest error or non-streaming body read into memory.
const MAX_BODY_BYTES: usize = 8 << 20;

/// A failed attempt and whether it may be retried.
struct Failure {
    error: CloudError,
    retry: Retry,
}

enum Retry {
    No,
    Backoff,
    After(Duration),
}

impl Failure {
    fn no_retry(error: CloudError) -> Failure {
        Failure {
            error,
            retry: Retry::No,
        }
    }
}

/// A client for one OpenAI-compatible endpoint and model. Calls block the calling thread (never
/// call them from async code or the UI thread); several threads may call at once.
pub struct CloudClient {
    config: CloudConfig,
    base: Url,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudClient")
            .field("endpoint", &redact(&self.base))
            .field("model", &self.config.model)
            .field("api_key", &self.config.api_key)
            .finish_non_exhaustive()
    }
}

/// `url` without user name, password, query or fragment: safe to show.
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    // Cannot fail for http(s) URLs, which always have a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The error's message with its causes, without the URL (which we name ourselves, redacted).
fn describe(error: reqwest::Error) -> String {
    error_chain(&error.without_url())
}

impl CloudClient {
    /// Checks the base URL and builds the HTTP client (rustls) and the runtime. Sends nothing.
    pub fn new(config: CloudConfig) -> Result<CloudClient, CloudError> {
        let invalid = |reason: String| CloudError::InvalidEndpoint {
            url: config.base_url.clone(),
            reason,
        };
        let mut base = Url::parse(config.base_url.trim()).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid(
                "expected an http:// or https:// URL with a host".into(),
            ));
        }
        if !base.path().ends_with('/') {
            // So that joining "chat/completions" keeps the last segment (`/v1`).
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let shown = redact(&base);
        let setup = |message: String| CloudError::Setup {
            url: shown.clone(),
            message,
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect)
            .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")));
        if is_loopback_host(&base) {
            // A server on this machine is never reached through an HTTP(S)_PROXY.
            http = http.no_proxy();
        }
        let http = http.build().map_err(|e| setup(describe(e)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hearth-cloud")
            .enable_all()
            .build()
            .map_err(|e| setup(format!("cannot start the network runtime: {e}")))?;
        Ok(CloudClient {
            config,
            base,
            http,
            runtime,
        })
    }

    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    /// The base URL as it may be shown (no credentials, no query).
    pub fn endpoint(&self) -> String {
        redact(&self.base)
    }

    /// A warning when this client would send its key unencrypted (see [`plain_http_warning`]).
    pub fn key_warning(&self) -> Option<String> {
        self.config.api_key.as_ref()?;
        plain_http_warning(self.base.as_str())
    }

    /// Streams an answer: `on_delta` gets each piece of answer and reasoning text as it arrives;
    /// the result is the whole answer with its finish reason and usage, or an error that keeps
    /// the partial text.
    pub fn chat_stream(
        &self,
        request: &ChatRequest,
        cancel: &CancelToken,
        mut on_delta: impl FnMut(Delta<'_>),
    ) -> Result<Completion, CloudError> {
        let url = self.url("chat/completions");
        let body = self.body(request, true)?;
        let mut acc = Accumulator::default();
        self.runtime.block_on(async {
            let mut retry = 0;
            loop {
                if cancel.is_cancelled() {
                    return Err(self.cancelled(&url, &acc));
                }
                acc = Accumulator::default();
                let attempt = tokio::select! {
                    biased;
                    () = cancel.cancelled() => None,
                    r = self.stream_once(&url, &body, &mut acc, &mut on_delta) => Some(r),
                };
                // The attempt's future, and with it the response, is dropped here: on cancel
                // that closes the connection.
                match attempt {
                    None => return Err(self.cancelled(&url, &acc)),
                    Some(Ok(completion)) => return Ok(completion),
                    Some(Err(failure)) if acc.has_text() => return Err(failure.error),
                    Some(Err(failure)) => self.backoff(failure, &mut retry, cancel, &url).await?,
                }
            }
        })
    }

    /// Asks for the whole answer at once (`stream: false`).
    pub fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancelToken,
    ) -> Result<Completion, CloudError> {
        let url = self.url("chat/completions");
        let body = self.body(request, false)?;
        let (url, body) = (&url, &body);
        self.with_retries(url, cancel, move || async move {
            let bytes = self.fetch(url, Some(body)).await?;
            wire::parse_completion(&bytes, &mut |_| {})
                .map_err(|fault| Failure::no_retry(self.fault(url, fault, Box::default())))
        })
    }

    /// Lists the endpoint's models (`GET /models`).
    pub fn models(&self, cancel: &CancelToken) -> Result<Vec<ModelInfo>, CloudError> {
        let url = self.url("models");
        let url = &url;
        self.with_retries(url, cancel, move || async move {
            let bytes = self.fetch(url, None).await?;
            wire::parse_models(&bytes).map_err(|message| {
                Failure::no_retry(CloudError::Malformed {
                    url: redact(url),
                    message,
                    partial: Box::default(),
                })
            })
        })
    }

    pub(super) fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>, CloudError> {
        serde_json::to_vec(&RequestBody::new(&self.config.model, request, stream)).map_err(|e| {
            CloudError::Setup {
                url: self.endpoint(),
                message: format!("cannot encode the request: {e}"),
            }
        })
    }

    fn cancelled(&self, url: &Url, acc: &Accumulator) -> CloudError {
        CloudError::Cancelled {
            url: redact(url),
            partial: Box::new(acc.partial()),
        }
    }

    /// Waits before the next retry, or returns the error when there is none.
    async fn backoff(
        &self,
        failure: Failure,
        retry: &mut u32,
        cancel: &CancelToken,
        url: &Url,
    ) -> Result<(), CloudError> {
        let retry_after = match failure.retry {
            Retry::No => return Err(failure.error),
            Retry::Backoff => None,
            Retry::After(after) => Some(after),
        };
        let Some(delay) = self.config.retry.delay(*retry, retry_after) else {
            return Err(failure.error);
        };
        *retry += 1;
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(CloudError::Cancelled {
                url: redact(url),
                partial: Box::default(),
            }),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Runs `attempt` on the runtime with cancellation and the retry policy.
    fn with_retries<T, F, Fut>(
        &self,
        url: &Url,
        cancel: &CancelToken,
        attempt: F,
    ) -> Result<T, CloudError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.runtime.block_on(async {
            let mut retry = 0;
            loop {
                let outcome = tokio::select! {
                    biased;
                    () = cancel.cancelled() => None,
                    r = attempt() => Some(r),
                };
                match outcome {
                    None => {
                        return Err(CloudError::Cancelled {
                            url: redact(url),
                            partial: Box::default(),
                        });
                    }
                    Some(Ok(value)) => return Ok(value),
                    Some(Err(failure)) => self.backoff(failure, &mut retry, cancel, url).await?,
                }
            }
        })
    }

    /// Sends the request and waits for a success status; error statuses become [`Failure`]s.
    async fn send(
        &self,
        url: &Url,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        let mut request = match body {
            Some(body) => self
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream, application/json")
                .body(body.to_vec()),
            None => self.http.get(url.clone()),
        };
        if let Some(value) = self.config.api_key.as_ref().and_then(ApiKey::bearer_header) {
            request = request.header(AUTHORIZATION, value);
        }
        // The URL without credentials; never the headers (the key is one).
        tracing::debug!(
            "cloud: {} {} (model {}, key {})",
            if body.is_some() { "POST" } else { "GET" },
            redact(url),
            self.config.model,
            if self.config.api_key.is_some() {
                "set"
            } else {
                "none"
            }
        );
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => {
                return Err(Failure::no_retry(CloudError::Timeout {
                    url: redact(url),
                    phase: TimeoutPhase::FirstToken,
                    limit: self.config.timeouts.first_token,
                    partial: Box::default(),
                }));
            }
            Ok(Err(e)) => {
                let failure = self.send_failure(url, e);
                tracing::debug!("cloud: {}", failure.error);
                return Err(failure);
            }
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.status_failure(url, response).await)
        }
    }

    fn send_failure(&self, url: &Url, error: reqwest::Error) -> Failure {
        let connect = error.is_connect();
        let error = if connect && error.is_timeout() {
            CloudError::Timeout {
                url: redact(url),
                phase: TimeoutPhase::Connect,
                limit: self.config.timeouts.connect,
                partial: Box::default(),
            }
        } else {
            CloudError::Network {
                url: redact(url),
                message: self.scrub(&describe(error)),
            }
        };
        // A request that never reached the server is safe to send again.
        let retry = if connect { Retry::Backoff } else { Retry::No };
        Failure { error, retry }
    }

    /// Classifies an error status from its code, body and `Retry-After`.
    async fn status_failure(&self, url: &Url, mut response: Response) -> Failure {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| wire::parse_retry_after(v, SystemTime::now()));
        let limit = self.config.timeouts.between_tokens;
        let body = read_body(&mut response, limit).await.unwrap_or_default();
        let mut info = ErrorInfo::from_body(&body);
        info.message = self.scrub(&info.message);
        if info.message.is_empty() {
            info.message = status.canonical_reason().unwrap_or("no message").to_owned();
        }
        let url = redact(url);
        let message = info.message.clone();
        let code = status.as_u16();
        let retry = match retry_after {
            Some(after) => Retry::After(after),
            None => Retry::Backoff,
        };
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Failure::no_retry(CloudError::Auth {
                    url,
                    status: code,
                    message,
                })
            }
            _ if info.is_context_too_long() => Failure::no_retry(CloudError::ContextTooLong {
                url,
                n_prompt_tokens: info.n_prompt_tokens,
                n_ctx: info.n_ctx,
                message,
            }),
            StatusCode::TOO_MANY_REQUESTS => Failure {
                error: CloudError::RateLimited {
                    url,
                    retry_after,
                    message,
                },
                retry,
            },
            StatusCode::SERVICE_UNAVAILABLE => Failure {
                error: CloudError::ServerBusy {
                    url,
                    retry_after,
                    message,
                },
                retry,
            },
            _ => {
                let error = CloudError::Http {
                    url,
                    status: code,
                    message,
                };
                if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
                    Failure { error, retry }
                } else {
                    Failure::no_retry(error)
                }
            }
        }
    }

    /// One request whose whole body is wanted (non-streaming chat, models).
    async fn fetch(&self, url: &Url, body: Option<&[u8]>) -> Result<Vec<u8>, Failure> {
        let deadline = Instant::now() + self.config.timeouts.first_token;
        let mut response = self.send(url, body, deadline).await?;
        read_body(&mut response, self.config.timeouts.between_tokens)
            .await
            .map_err(|e| Failure::no_retry(self.body_error(url, e, Box::default())))
    }

    /// One streaming attempt: send, then fold SSE events into `acc` until an ending.
    async fn stream_once(
        &self,
        url: &Url,
        body: &[u8],
        acc: &mut Accumulator,
        on_delta: &mut dyn FnMut(Delta<'_>),
    ) -> Result<Completion, Failure> {
        let timeouts = self.config.timeouts;
        let deadline = Instant::now() + timeouts.first_token;
        let mut response = self.send(url, Some(body), deadline).await?;
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            // The server ignored `stream: true` and sent the whole answer.
            let bytes = read_body(&mut response, timeouts.between_tokens)
                .await
                .map_err(|e| Failure::no_retry(self.body_error(url, e, Box::default())))?;
            return wire::parse_completion(&bytes, on_delta)
                .map_err(|fault| Failure::no_retry(self.fault(url, fault, Box::default())));
        }
        let chunks = futures_util::stream::unfold(response, |mut response| async move {
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), response)),
                Ok(None) => None,
                Err(e) => Some((Err(e), response)),
            }
        });
        fold_events(
            SseByteStream::new(Box::pin(chunks)),
            acc,
            on_delta,
            timeouts,
            deadline,
        )
        .await
        .map_err(|ending| {
            Failure::no_retry(self.ending_error(url, ending, Box::new(acc.partial())))
        })
    }

    fn ending_error(&self, url: &Url, ending: StreamEnd, partial: Box<Partial>) -> CloudError {
        let url_text = redact(url);
        match ending {
            StreamEnd::Fault(fault) => self.fault(url, fault, partial),
            StreamEnd::Early(detail) => CloudError::EndedEarly {
                url: url_text,
                detail: detail.map(|d| self.scrub(&d)),
                partial,
            },
            StreamEnd::Timeout(phase) => CloudError::Timeout {
                url: url_text,
                phase,
                limit: match phase {
                    TimeoutPhase::Connect => self.config.timeouts.connect,
                    TimeoutPhase::FirstToken => self.config.timeouts.first_token,
                    TimeoutPhase::BetweenTokens => self.config.timeouts.between_tokens,
                },
                partial,
            },
        }
    }

    fn fault(&self, url: &Url, fault: StreamFault, partial: Box<Partial>) -> CloudError {
        match fault {
            StreamFault::Server(info) => CloudError::Server {
                url: redact(url),
                code: info.code,
                kind: info.kind,
                message: self.scrub(&info.message),
                partial,
            },
            StreamFault::Malformed(message) => CloudError::Malformed {
                url: redact(url),
                message,
                partial,
            },
        }
    }

    fn body_error(&self, url: &Url, error: BodyError, partial: Box<Partial>) -> CloudError {
        match error {
            BodyError::Timeout => CloudError::Timeout {
                url: redact(url),
                phase: TimeoutPhase::BetweenTokens,
                limit: self.config.timeouts.between_tokens,
                partial,
            },
            BodyError::TooLarge => CloudError::Malformed {
                url: redact(url),
                message: format!("the response is larger than {MAX_BODY_BYTES} bytes"),
                partial,
            },
            BodyError::Read(e) => CloudError::Network {
                url: redact(url),
                message: self.scrub(&describe(e)),
            },
        }
    }

    fn scrub(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) => key.scrub(text),
            None => text.to_owned(),
        }
    }
}

/// How a stream ended other than with a completion.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    Fault(StreamFault),
    /// No finish reason and no `[DONE]` before the end (with the transport error, if any).
    Early(Option<String>),
    Timeout(TimeoutPhase),
}

/// Folds a stream of SSE events into `acc`, enforcing the first-token deadline and then the
/// between-tokens limit. Generic over the byte source so unit tests can feed split bytes.
pub(crate) async fn fold_events<S>(
    events: SseByteStream<S>,
    acc: &mut Accumulator,
    on_delta: &mut dyn FnMut(Delta<'_>),
    timeouts: Timeouts,
    first_token_deadline: Instant,
) -> Result<Completion, StreamEnd>
where
    S: futures_util::TryStream + Unpin,
    S::Ok: bytes::Buf,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let mut events = std::pin::pin!(events);
    let mut deadline = first_token_deadline;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let phase = if acc.has_text() {
            TimeoutPhase::BetweenTokens
        } else {
            TimeoutPhase::FirstToken
        };
        let Ok(next) = next else {
            return Err(StreamEnd::Timeout(phase));
        };
        let event = match next {
            None => None,
            Some(Ok(event)) => Some(event),
            Some(Err(sse_stream::Error::Body(e))) => {
                if acc.has_ending() {
                    return Ok(std::mem::take(acc).into_completion());
                }
                return Err(StreamEnd::Early(Some(error_chain(&*e))));
            }
            Some(Err(e)) => {
                return Err(StreamEnd::Fault(StreamFault::Malformed(format!(
                    "bad event stream: {e}"
                ))));
            }
        };
        let Some(event) = event else {
            // The connection closed: fine after a finish reason, an error before one.
            if acc.has_ending() {
                return Ok(std::mem::take(acc).into_completion());
            }
            return Err(StreamEnd::Early(None));
        };
        let Some(data) = event.data else {
            continue;
        };
        match acc.apply(event.event.as_deref(), &data, on_delta) {
            Ok(Step::Done) => return Ok(std::mem::take(acc).into_completion()),
            Ok(Step::Continue) => {}
            Err(fault) => return Err(StreamEnd::Fault(fault)),
        }
        if acc.has_text() {
            deadline = Instant::now() + timeouts.between_tokens;
        }
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

enum BodyError {
    Timeout,
    TooLarge,
    Read(reqwest::Error),
}

/// Reads a whole body, at most [`MAX_BODY_BYTES`], each read within `gap`.
async fn read_body(response: &mut Response, gap: Duration) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(gap, response.chunk()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(Err(e)) => return Err(BodyError::Read(e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
