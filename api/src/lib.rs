//! Configuration, REST API, event monitor and client for `hyperv-flush`.
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod config_file;
pub mod events;
pub mod hypercall_port;
pub mod model;
pub mod option;
pub mod server;

pub use client::{ApiClient, ClientError};
pub use config::{HypervFlushConfig, HypervFlushUpdate};
pub use config_file::{load_vm_config, merge_config};
pub use events::{Event, EventMonitor};
pub use option::{ApiSocketConfig, EventMonitorConfig};
pub use server::{ApiServer, ApiServerError, FlushService, ServerLimits};
