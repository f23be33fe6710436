//! The synthetic VM exit injected into L1 after an L2 flush when L1 holds
//! its TLB lock (Linux arch/x86/kvm/vmx/hyperv.h and svm/hyperv.h).

/// Intel: `HV_VMX_SYNTHETIC_EXIT_REASON_TRAP_AFTER_FLUSH`.
pub const VMX_EXIT_REASON_TRAP_AFTER_FLUSH: u32 = 0x1000_0031;
/// AMD: `HV_SVM_EXITCODE_ENL`.
pub const SVM_EXITCODE_ENLIGHTENMENT: u64 = 0xf000_0000;
/// AMD: `HV_SVM_ENL_EXITCODE_TRAP_AFTER_FLUSH` (exit_info_1).
pub const SVM_ENL_EXITCODE_TRAP_AFTER_FLUSH: u64 = 1;
/// Offset of the u32 `tlb_lock_count` in the partition assist page
/// (`struct hv_partition_assist_pg`).
pub const PARTITION_ASSIST_TLB_LOCK_COUNT_OFFSET: u64 = 0;
