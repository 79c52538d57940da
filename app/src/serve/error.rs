//! [`ApiError`]: an error answered in OpenAI's shape, `{"error": {message, type, param, code}}`,
//! with its HTTP status (and `Retry-After` or `WWW-Authenticate` where they belong).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hearth_engine::api::{CloudFailure, ErrorKind};
use serde_json::{Value, json};

/// An error answered in OpenAI's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `server_error`, …
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or asks for something this server does not do.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid or missing API key: send it as `Authorization: Bearer KEY`",
        )
        .code("invalid_api_key")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "permission_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            message,
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request body is larger than the server's limit of {limit} bytes (--body-limit)"
            ),
        )
        .code("request_too_large")
    }

    /// 503 with `Retry-After`: too many requests in flight, or the model is still loading.
    pub fn unavailable(message: impl Into<String>, code: &'static str) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code(code)
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// An upstream (cloud endpoint) failure: 502, or 504 for a timeout, 429 for rate limits.
    pub fn upstream(
        status: StatusCode,
        message: impl Into<String>,
        code: &'static str,
    ) -> ApiError {
        ApiError::new(status, "server_error", message).code(code)
    }

    /// The engine's failure as an HTTP error, by its kind (never by its wording).
    pub fn engine(kind: ErrorKind, message: String) -> ApiError {
        match kind {
            ErrorKind::BadRequest => ApiError::invalid(message),
            ErrorKind::PromptTooLong | ErrorKind::ContextFull => {
                ApiError::invalid(message).code("context_length_exceeded")
            }
            ErrorKind::NoModel | ErrorKind::LoadFailed(_) => {
                ApiError::unavailable(message, "model_not_loaded")
            }
            ErrorKind::Shutdown => ApiError::unavailable(message, "shutting_down"),
            ErrorKind::Cloud(failure) => {
                let (status, code) = match failure {
                    CloudFailure::RateLimited => {
                        (StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited")
                    }
                    CloudFailure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                    CloudFailure::NotConfigured => {
                        return ApiError::invalid(message).code("cloud_not_configured");
                    }
                    CloudFailure::ContextTooLong => {
                        return ApiError::invalid(message).code("context_length_exceeded");
                    }
                    _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
                };
                ApiError::upstream(status, message, code)
            }
            ErrorKind::Cancelled => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
                    .code("cancelled")
            }
            // Template, Backend, Internal, and kinds added later: the server's own failure.
            _ => ApiError::internal(message),
        }
    }

    /// The JSON body (also sent as an SSE event when a stream fails after it started).
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
