//! The model manager, minus its UI: which GGUF files the user already has ([`discover`]), whether
//! one fits in memory before it is loaded ([`estimate`]), the recommended models ([`catalog`]),
//! fetching them with progress, cancel, resume and checksum ([`download`]), and getting the default
//! model on first run ([`first_run`]).
//!
//! Everything here touches the disk or the network, so none of it may run on the UI thread
//! (invariant 1): the desktop app calls [`discover::discover`] and [`estimate::available_memory`]
//! from a named worker thread, and [`download::Download`] and [`first_run::FirstRun`] spawn their
//! own named threads and report progress through a callback.

pub mod catalog;
pub mod discover;
pub mod download;
pub mod estimate;
pub mod first_run;
#[cfg(test)]
pub(crate) mod test_server;
