//! `hearth-engine`: everything in Hearth that is not UI.
//!
//! Today: GGUF model files ([`gguf`]), quantized block formats ([`quant`]), the tokenizer and chat
//! templates ([`tokenizer`]), and where model files come from ([`source`]).

pub mod api;
pub mod backend;
pub mod constrain;
pub mod gguf;
pub mod kv;
pub mod model;
pub mod quant;
pub mod reply;
pub mod route;
pub mod sample;
pub mod sched;
pub mod source;
pub mod tokenizer;

pub use api::{EngineConfig, EngineHandle, spawn};
