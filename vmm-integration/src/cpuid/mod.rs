//! Hyper-V CPUID leaves for the flush enlightenments, for both paths.
//!
//! [`compose_offload`] derives every bit from the kernel's
//! `KVM_GET_SUPPORTED_HV_CPUID` report; [`compose_userspace`] from what the
//! userspace engine implements. [`apply_hyperv_cpuid`] (feature `kvm`) is
//! the one function a VMM calls at every CPUID site.

pub mod bits;
mod compose;
mod leaf;
#[cfg(feature = "kvm")]
mod merge;
#[cfg(feature = "kvm")]
mod site;

pub use compose::{
    EngineSupport, FlushFeatures, compose_offload, compose_userspace, vendor_signature,
};
pub use leaf::{HvLeaf, KernelHvCpuid};
#[cfg(feature = "kvm")]
pub use merge::{MergeError, merge_hyperv_leaves};
#[cfg(feature = "kvm")]
pub use site::{
    CpuidError, KVM_FEATURE_MSI_EXT_DEST_ID, LEAF_VS_INTERFACE, LEAF_VS_PROPERTIES,
    VS_INTERFACE_SIGNATURE, VS_PROPERTIES_EXTENDED_IOAPIC_RTE, VmmCpuid, apply_hyperv_cpuid,
};
