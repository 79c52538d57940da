//! End-to-end tests of the `hearth` product, one test binary (see ARCHITECTURE.md).

mod bench;
mod chat;
mod cli;
mod gui;
mod run;
mod serve;
mod serve_cloud;
