//! End-to-end tests of the `hearth` product, one test binary (see ARCHITECTURE.md).

mod bench;
mod chat;
mod cli;
mod run;
mod serve;
