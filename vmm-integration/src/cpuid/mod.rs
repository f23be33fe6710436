//! Hyper-V CPUID leaves for the flush enlightenments, for both paths.
//!
//! [`compose_offload`] derives every bit from the kernel's
//! `KVM_GET_SUPPORTED_HV_CPUID` report; [`compose_userspace`] from what the
//! userspace engine implements. `merge_hyperv_leaves` (feature `kvm`) puts
//! the result into a VMM's CPUID table.

pub mod bits;
mod compose;
mod leaf;
#[cfg(feature = "kvm")]
mod merge;

pub use compose::{
    EngineSupport, FlushFeatures, compose_offload, compose_userspace, vendor_signature,
};
pub use leaf::{HvLeaf, KernelHvCpuid};
#[cfg(feature = "kvm")]
pub use merge::{MergeError, merge_hyperv_leaves};
