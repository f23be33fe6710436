//! Hyper-V CPUID leaf numbers and bits used by the flush enlightenments.
//!
//! Defined here because the engine's `hyperv_flush::abi::cpuid` was not yet
//! exported when this module was written; the values are the same. Sources:
//! TLFS 6.0b §2.4 ("Feature and Interface Discovery") and Linux
//! `arch/x86/include/asm/hyperv-tlfs.h` (names in backticks).

/// Vendor signature and maximum leaf (`HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS`).
pub const LEAF_VENDOR: u32 = 0x4000_0000;
/// Interface signature "Hv#1" (`HYPERV_CPUID_INTERFACE`).
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// Hypervisor version (`HYPERV_CPUID_VERSION`).
pub const LEAF_VERSION: u32 = 0x4000_0002;
/// Partition privileges and features (`HYPERV_CPUID_FEATURES`).
pub const LEAF_FEATURES: u32 = 0x4000_0003;
/// Implementation recommendations (`HYPERV_CPUID_ENLIGHTMENT_INFO`).
pub const LEAF_RECOMMENDATIONS: u32 = 0x4000_0004;
/// Implementation limits (`HYPERV_CPUID_IMPLEMENT_LIMITS`).
pub const LEAF_LIMITS: u32 = 0x4000_0005;
/// Nested features (`HYPERV_CPUID_NESTED_FEATURES`).
pub const LEAF_NESTED_FEATURES: u32 = 0x4000_000a;
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

/// "Hv#1" as read in EAX of [`LEAF_INTERFACE`] (`HYPERV_CPUID_SIGNATURE_EAX`).
pub const INTERFACE_SIGNATURE_HV1: u32 = 0x3123_7648;
/// "KVMKVMKVM\0\0\0": KVM's signature in EBX/ECX/EDX of its base leaf.
pub const KVM_SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";

/// 0x40000003 EAX bit 4: `HV_MSR_APIC_ACCESS_AVAILABLE` (APIC MSRs and the
/// VP assist page, which L2 direct flush needs).
pub const FEATURES_EAX_APIC_ACCESS: u32 = 1 << 4;
/// 0x40000003 EAX bit 5: `HV_MSR_HYPERCALL_AVAILABLE` (GUEST_OS_ID + HYPERCALL).
pub const FEATURES_EAX_HYPERCALL_MSRS: u32 = 1 << 5;
/// 0x40000003 EAX bit 6: `HV_MSR_VP_INDEX_AVAILABLE`.
pub const FEATURES_EAX_VP_INDEX: u32 = 1 << 6;
/// 0x40000003 EDX bit 4: `HV_X64_HYPERCALL_XMM_INPUT_AVAILABLE`.
pub const FEATURES_EDX_XMM_INPUT: u32 = 1 << 4;
/// 0x40000003 EDX bit 14: `HV_FEATURE_EXT_GVA_RANGES_FLUSH`.
pub const FEATURES_EDX_EXT_GVA_RANGES: u32 = 1 << 14;

/// 0x40000004 EAX bit 2: `HV_X64_REMOTE_TLB_FLUSH_RECOMMENDED`.
pub const RECOMMEND_EAX_REMOTE_TLB_FLUSH: u32 = 1 << 2;
/// 0x40000004 EAX bit 11: `HV_X64_EX_PROCESSOR_MASKS_RECOMMENDED`.
pub const RECOMMEND_EAX_EX_PROCESSOR_MASKS: u32 = 1 << 11;
/// 0x40000004 EAX bit 14: `HV_X64_ENLIGHTENED_VMCS_RECOMMENDED`.
pub const RECOMMEND_EAX_ENLIGHTENED_VMCS: u32 = 1 << 14;
/// 0x40000004 EBX: spinlock retries; all ones means "never notify" (TLFS §2.4.5).
pub const RECOMMEND_EBX_NEVER_NOTIFY: u32 = u32::MAX;

/// 0x4000000A EAX bits 15:0: enlightened VMCS version range (low byte =
/// lowest, high byte = highest supported version).
pub const NESTED_EAX_EVMCS_VERSION_MASK: u32 = 0xffff;
/// 0x4000000A EAX bit 17: `HV_X64_NESTED_DIRECT_FLUSH` (L2 TLB flush).
pub const NESTED_EAX_DIRECT_FLUSH: u32 = 1 << 17;

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
