//! Notifications for the rare, interesting events on the flush paths
//! (first use of a path, overflow, invalid input, ...). Never called once
//! per hypercall on the success path; implementations must not block.

use super::counters::{HypercallKind, Level};
use super::vcpu_set::VcpuSet;
use crate::abi::{HvCallCode, HvStatus};

/// Receives flush-path events; every method has a no-op default so an
/// embedder implements only what it reports.
pub trait FlushObserver: Send + Sync {
    /// A path was used for the first time in this partition, by `caller`.
    fn path_first_use(&self, _caller: usize, _path: HypercallKind) {}
    /// A target's queue overflowed into a full flush.
    fn queue_overflow(&self, _target: usize, _level: Level) {}
    /// A hypercall with call code `call` was rejected with `status`.
    fn invalid_input(&self, _caller: usize, _call: HvCallCode, _status: HvStatus) {}
    /// An L2 flush found L1's TLB lock held (`tlb_lock_count` ≠ 0): the
    /// backend injects the synthetic exit.
    fn synthetic_vmexit(&self, _caller: usize, _tlb_lock_count: u32) {}
    /// A request from `caller` completed: every vCPU in `targets` has its
    /// flush queued and, if it was in guest mode, has left it. For tests
    /// and tracing; implementations must be cheap (called per request).
    fn flush_completed(&self, _caller: usize, _level: Level, _targets: &VcpuSet<[u64]>) {}
    /// A kicked target has not left guest mode after `waited`.
    fn vcpu_unresponsive(&self, _initiator: usize, _target: usize, _waited: std::time::Duration) {}
    /// The executor of `vcpu` found the host had dropped its flush
    /// registration (INIT or RESET of the vCPU) and restored it.
    fn executor_repaired(&self, _vcpu: usize) {}
}

/// The observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl FlushObserver for NoopObserver {}
