//! What a VMM links to serve the Hyper-V flush hypercalls: the KVM and
//! MSHV backends (features `kvm`, `mshv`), CPUID composition, the host
//! facts and the `mode=auto` decision, and the VMM-side pieces of the
//! REST API and the event monitor. No binary, no guest code, no HTTP.
#![deny(missing_docs)]

pub mod cpuid;
pub mod decision;
#[cfg(feature = "kvm")]
pub mod events;
pub mod facts;
#[cfg(feature = "kvm")]
pub mod kernel_counters;
#[cfg(feature = "kvm")]
pub mod kvm;
#[cfg(feature = "mshv")]
pub mod mshv;
pub mod probe;
#[cfg(feature = "kvm")]
pub mod service;
#[cfg(feature = "kvm")]
pub mod state;
