//! Per-vCPU state shared between the vCPU's own thread and initiators:
//! run state, pending flag, the L1 and L2 queues, counters and the nested
//! context.

use super::counters::{Level, VcpuCounters};
use super::queue::FlushQueue;
use super::sync::{AtomicBool, AtomicU8, AtomicU64, Mutex};

/// Run state values.
pub(crate) const OUTSIDE: u8 = 0;
pub(crate) const IN_GUEST: u8 = 1;
pub(crate) const STOPPED: u8 = 2;

/// The nested (L2) context loaded on a vCPU, as the VMM reports it: set at
/// L2 entry, kept while the vCPU runs L1, cleared when L1 releases it
/// (`Partition::load_nested_context`, `Partition::release_nested_context`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NestedContext {
    /// L2 VM identifier (eVMCS/VMCB `vm_id`).
    pub vm_id: u64,
    /// L2 VP identifier (`vp_id`).
    pub vp_id: u32,
    /// GPA (L1) of L1's partition assist page, where `tlb_lock_count` lives.
    pub partition_assist_gpa: u64,
}

pub(crate) struct VcpuSlot {
    /// OUTSIDE / IN_GUEST / STOPPED, written by the vCPU's thread (SeqCst).
    pub(crate) state: AtomicU8,
    /// Bumped by the vCPU's thread each time it leaves guest mode.
    pub(crate) exits: AtomicU64,
    /// Set by initiators after queueing; taken by the target before entry.
    pub(crate) pending: AtomicBool,
    pub(crate) queues: Mutex<[FlushQueue; 2]>,
    /// A full flush is pending for L1 / L2: set without the queue lock (the
    /// common case: Space calls and long lists), taken with the queues.
    pub(crate) full: [AtomicBool; 2],
    pub(crate) counters: VcpuCounters,
    pub(crate) nested: Mutex<Option<NestedContext>>,
    /// Initiator scratch: (target, exit count) pairs being waited on.
    /// Capacity reserved at creation, so waiting never allocates.
    pub(crate) waits: Mutex<Vec<(usize, u64)>>,
}

impl VcpuSlot {
    pub(crate) fn new(vcpus: usize) -> Self {
        Self {
            state: AtomicU8::new(OUTSIDE),
            exits: AtomicU64::new(0),
            pending: AtomicBool::new(false),
            queues: Mutex::new([FlushQueue::default(), FlushQueue::default()]),
            full: [AtomicBool::new(false), AtomicBool::new(false)],
            counters: VcpuCounters::default(),
            nested: Mutex::new(None),
            waits: Mutex::new(Vec::with_capacity(vcpus)),
        }
    }
}

#[inline]
pub(crate) fn queue_index(level: Level) -> usize {
    match level {
        Level::L1 => 0,
        Level::L2 => 1,
    }
}
