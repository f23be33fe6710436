//! Hyper-V CPUID leaf numbers and bits used by the flush enlightenments.
//!
//! The engine's `hyperv_flush::abi::cpuid` is the source of the flush bits
//! and is re-exported here; the few the engine does not need are defined
//! below. Sources: TLFS 6.0b §2.4 ("Feature and Interface Discovery") and
//! Linux `arch/x86/include/asm/hyperv-tlfs.h` (names in backticks).

pub use hyperv_flush::abi::cpuid::{
    FEATURES_EAX_HYPERCALL_MSRS, FEATURES_EAX_VP_INDEX, FEATURES_EDX_EXT_GVA_RANGES,
    FEATURES_EDX_XMM_INPUT, INTERFACE_SIGNATURE_HV1, LEAF_FEATURES, LEAF_INTERFACE, LEAF_LIMITS,
    LEAF_NESTED_FEATURES, LEAF_RECOMMENDATIONS, LEAF_VENDOR, NESTED_EAX_DIRECT_FLUSH,
    NESTED_EAX_EVMCS_VERSION_MASK, RECOMMEND_EAX_ENLIGHTENED_VMCS,
    RECOMMEND_EAX_EX_PROCESSOR_MASKS, RECOMMEND_EAX_REMOTE_TLB_FLUSH,
};

/// Hypervisor version (`HYPERV_CPUID_VERSION`).
pub const LEAF_VERSION: u32 = 0x4000_0002;
/// Smallest maximum leaf a Hyper-V guest accepts (`HYPERV_CPUID_MIN`).
pub const LEAF_MIN_MAX: u32 = 0x4000_0005;

/// First leaf of the hypervisor range a guest probes.
pub const HYPERVISOR_RANGE_START: u32 = 0x4000_0000;
/// Last leaf of the first hypervisor range (0x40000000-0x400000FF).
pub const HYPERVISOR_RANGE_END: u32 = 0x4000_00ff;
/// Where KVM's own leaves sit when a VMM moves them after Hyper-V's.
pub const KVM_ALT_RANGE_START: u32 = 0x4000_0100;
/// End of that alternative range.
pub const KVM_ALT_RANGE_END: u32 = 0x4000_01ff;

/// "KVMKVMKVM\0\0\0": KVM's signature in EBX/ECX/EDX of its base leaf.
pub const KVM_SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";

/// 0x40000003 EAX bit 4: `HV_MSR_APIC_ACCESS_AVAILABLE` (APIC MSRs and the
/// VP assist page, which L2 direct flush needs).
pub const FEATURES_EAX_APIC_ACCESS: u32 = 1 << 4;

/// 0x40000004 EBX: spinlock retries; all ones means "never notify" (TLFS §2.4.5).
pub const RECOMMEND_EBX_NEVER_NOTIFY: u32 = u32::MAX;

/// CPUID.1 ECX bit 31: hypervisor present.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1 ECX bit 5: VMX (Intel nested virtualization offered).
pub const LEAF1_ECX_VMX: u32 = 1 << 5;
/// CPUID.0x80000001 ECX bit 2: SVM (AMD nested virtualization offered).
pub const EXT1_ECX_SVM: u32 = 1 << 2;

/// KVM's PV feature leaf (`KVM_CPUID_FEATURES`, Documentation/virt/kvm/x86/cpuid.rst).
pub const KVM_LEAF_FEATURES: u32 = 0x4000_0001;
/// `KVM_FEATURE_STEAL_TIME` (EAX bit 5).
pub const KVM_FEATURE_STEAL_TIME: u32 = 1 << 5;
/// `KVM_FEATURE_PV_TLB_FLUSH` (EAX bit 9).
pub const KVM_FEATURE_PV_TLB_FLUSH: u32 = 1 << 9;
