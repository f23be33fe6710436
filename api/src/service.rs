//! The contract between the REST API and the VMM: the endpoints and the
//! [`FlushService`] a VMM implements. No HTTP here, so the VMM side builds
//! without the server.

use hvflush_config::HypervFlushUpdate;

use crate::model::{CountersReport, FlushInfo, UpdateError, UpdateOutcome};

/// URL of the ping endpoint.
pub const PING_PATH: &str = "/api/v1/vmm.ping";
/// URL of the configuration endpoint.
pub const FLUSH_PATH: &str = "/api/v1/vm.hyperv-flush";
/// URL of the counters endpoint.
pub const COUNTERS_PATH: &str = "/api/v1/vm.hyperv-flush-counters";

/// What the VMM provides to the API. Called on the API thread: each call
/// must return promptly (read state, flip flags), never wait on a vCPU.
pub trait FlushService: Send + Sync + 'static {
    /// The configuration and per-feature state.
    fn info(&self) -> FlushInfo;
    /// Applies a partial update (already checked for valid values).
    fn update(&self, update: HypervFlushUpdate) -> Result<UpdateOutcome, UpdateError>;
    /// Counter totals since the VM started.
    fn counters(&self) -> CountersReport;
}
