//! KVM backend: capability probing, in-kernel Hyper-V offload setup,
//! binary statistics and tracepoint counters, and the userspace flush path.

pub mod hv_trace;
pub mod offload;
pub mod probe;
pub mod stats;
pub mod sys;
pub mod userspace;
