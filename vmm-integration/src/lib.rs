//! Backends (KVM, MSHV), vCPU-loop hooks and the reference VMM.
#![deny(missing_docs)]

pub mod cpuid;
pub mod decision;
pub mod error_chain;
#[cfg(feature = "kvm")]
pub mod guest;
#[cfg(feature = "kvm")]
pub mod kvm;
#[cfg(feature = "mshv")]
pub mod mshv;
#[cfg(feature = "kvm")]
pub mod vmm;
