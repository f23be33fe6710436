//! The REST API model, the [`FlushService`] contract, the event monitor
//! and, behind features, the HTTP server (`server`) and the client and
//! `hvflush-remote` (`client`).
//!
//! A VMM's lowest crate links it with `default-features = false`: the
//! model, the service trait and the event monitor, with no HTTP stack.
#![deny(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
pub mod counters;
pub mod error_chain;
pub mod events;
pub mod model;
#[cfg(feature = "client")]
pub mod remote;
#[cfg(feature = "server")]
pub mod server;
pub mod service;

#[cfg(feature = "client")]
pub use client::{ApiClient, ClientError};
pub use counters::EngineCounters;
pub use error_chain::{error_chain, error_line};
pub use events::{Event, EventMonitor};
#[cfg(feature = "server")]
pub use server::{ApiServer, ApiServerError, ServerLimits};
pub use service::FlushService;
