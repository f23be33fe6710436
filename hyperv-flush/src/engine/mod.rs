//! The flush engine: per-vCPU queues, VP and L2 routing, the completion
//! protocol and counters. Backend independent.

mod completion;
mod counters;
mod kick_slot;
mod l2_index;
mod observer;
mod partition;
mod queue;
mod sync;
mod vcpu_set;
mod vcpu_slot;
mod vp_map;

pub use completion::{VcpuKicker, WaitPolicy};
pub use counters::{CountersSnapshot, HypercallKind, InputKind, Level, Refusal};
pub use kick_slot::KickSlot;
pub use observer::{FlushObserver, NoopObserver};
pub use partition::{EngineError, HypercallOutcome, Partition, PartitionConfig, PendingFlush};
pub use queue::{QUEUE_CAPACITY, QueuedFlush};
pub use vcpu_set::{MAX_VCPUS, VcpuSet};
pub use vcpu_slot::NestedContext;
pub use vp_map::{MAX_VP_INDEX, VpIndexError};
