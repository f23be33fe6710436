//! Synthetic MSRs the flush enlightenment needs (TLFS §2.4 and §3.13;
//! Linux `HV_X64_MSR_*`).

/// `HV_X64_MSR_GUEST_OS_ID`.
pub const GUEST_OS_ID: u32 = 0x4000_0000;
/// `HV_X64_MSR_HYPERCALL`: bit 0 enable, bit 1 locked, GPA page in 63:12.
pub const HYPERCALL: u32 = 0x4000_0001;
/// `HV_X64_MSR_VP_INDEX` (read-only to the guest).
pub const VP_INDEX: u32 = 0x4000_0002;
/// First MSR of the synthetic range.
pub const SYNTHETIC_FIRST: u32 = 0x4000_0000;
/// Last MSR of the synthetic range a guest can reach (0x400001FF): the
/// TLFS synthetic MSRs 0x40000000-0x400000FF plus the crash MSRs
/// 0x40000100-0x40000105, reenlightenment / TSC emulation
/// 0x40000106-0x40000108 and TSC invariant 0x40000118, which Linux KVM
/// serves in-kernel once the guest sees "Hv#1" (arch/x86/kvm/hyperv.c
/// `kvm_hv_msr_partition_wide`, `kvm_hv_set_msr_common`).
pub const SYNTHETIC_LAST: u32 = 0x4000_01ff;
/// `HV_X64_MSR_CRASH_P0`..`HV_X64_MSR_CRASH_CTL`: 0x40000100-0x40000105.
pub const CRASH_FIRST: u32 = 0x4000_0100;
/// `HV_X64_MSR_CRASH_CTL`.
pub const CRASH_LAST: u32 = 0x4000_0105;
/// `HV_X64_MSR_REENLIGHTENMENT_CONTROL`.
pub const REENLIGHTENMENT_CONTROL: u32 = 0x4000_0106;
/// `HV_X64_MSR_TSC_EMULATION_STATUS`.
pub const TSC_EMULATION_STATUS: u32 = 0x4000_0108;
/// `HV_X64_MSR_TSC_INVARIANT_CONTROL`.
pub const TSC_INVARIANT_CONTROL: u32 = 0x4000_0118;

/// `HV_X64_MSR_HYPERCALL` enable bit.
pub const HYPERCALL_ENABLE: u64 = 1 << 0;
/// `HV_X64_MSR_HYPERCALL` lock bit.
pub const HYPERCALL_LOCKED: u64 = 1 << 1;
