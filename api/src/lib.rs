//! Configuration, REST API, event monitor and client for `hyperv-flush`.
#![deny(missing_docs)]

pub mod config;
