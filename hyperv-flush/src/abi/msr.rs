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
/// Last MSR of the synthetic range (0x400000FF).
pub const SYNTHETIC_LAST: u32 = 0x4000_00ff;

/// `HV_X64_MSR_HYPERCALL` enable bit.
pub const HYPERCALL_ENABLE: u64 = 1 << 0;
/// `HV_X64_MSR_HYPERCALL` lock bit.
pub const HYPERCALL_LOCKED: u64 = 1 << 1;
