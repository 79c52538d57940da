//! Where an answer runs: on the local model or on a cloud endpoint.
//!
//! The routing policy (local / cloud / auto, with the reason recorded for every answer) will live
//! here. Today this module holds its first part, the client for OpenAI-compatible cloud
//! endpoints ([`cloud`]): streaming over SSE, timeouts, bounded retries, cancellation that closes
//! the connection, and API keys that never reach logs or error messages.

pub mod cloud;
pub mod eval;
