//! Tests of `hearth-engine` on the real test models, one test binary (see ARCHITECTURE.md).

mod api;
mod arch;
mod cloud;
mod families;
mod gguf;
mod inference;
mod reply;
mod route;
mod source;
mod tokenizer;
