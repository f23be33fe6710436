//! Hyper-V TLB-flush enlightenments: the TLFS ABI, hypercall decoding and
//! the flush engine (queues, routing, completion, counters).
//!
//! No hypervisor dependency: a backend feeds hypercall exits to
//! [`engine::Partition::handle_hypercall`] and calls
//! [`engine::Partition::before_entry`] / [`engine::Partition::after_exit`]
//! around every guest run.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod decode;
pub mod engine;
