//! Hyper-V CPUID leaves and the bits involved in TLB-flush enlightenments
//! (TLFS §2.4; Linux `hvgdk_mini.h`, `arch/x86/kvm/hyperv.c`
//! `kvm_get_hv_cpuid`).

/// Vendor and maximum leaf.
pub const LEAF_VENDOR: u32 = 0x4000_0000;
/// Interface signature ("Hv#1").
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// Partition privileges (EAX/EBX) and features (EDX).
pub const LEAF_FEATURES: u32 = 0x4000_0003;
/// Implementation recommendations.
pub const LEAF_RECOMMENDATIONS: u32 = 0x4000_0004;
/// Implementation limits.
pub const LEAF_LIMITS: u32 = 0x4000_0005;
/// Nested features.
pub const LEAF_NESTED_FEATURES: u32 = 0x4000_000a;

/// "Hv#1" as read in EAX of [`LEAF_INTERFACE`].
pub const INTERFACE_SIGNATURE_HV1: u32 = 0x3123_7648;

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

/// 0x4000000A EAX bit 17: `HV_X64_NESTED_DIRECT_FLUSH` (L2 TLB flush).
pub const NESTED_EAX_DIRECT_FLUSH: u32 = 1 << 17;
/// 0x4000000A EAX bits 15:0: enlightened VMCS version range (low/high byte).
pub const NESTED_EAX_EVMCS_VERSION_MASK: u32 = 0xffff;
