//! MSHV backend: device probing and the partition's synthetic processor
//! features for flush offload. Userspace mode does not exist on MSHV (the
//! hypervisor performs the flushes; see `decision::Refusal::MshvUserspace`).

pub mod features;
pub mod probe;
mod sys;
