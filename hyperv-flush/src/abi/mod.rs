//! The Hyper-V TLB-flush ABI, typed once.
//!
//! Sources: Microsoft Hypervisor Top Level Functional Specification (TLFS)
//! 6.0b, and Linux `include/hyperv/hvgdk_mini.h` / `arch/x86/kvm/hyperv.c`,
//! named per item.

mod call_code;
mod control;
pub mod cpuid;
mod flush;
mod gva;
pub mod msr;
mod status;
pub mod synthetic_exit;

pub use call_code::HvCallCode;
pub use control::HypercallControl;
pub use flush::{
    HV_GENERIC_SET_ALL, HV_GENERIC_SET_SPARSE_4K, HvFlushFlags, HvTlbFlushExHeader,
    HvTlbFlushHeader, MAX_SPARSE_BANKS, VPS_PER_BANK,
};
pub use gva::{GvaRange, MAX_EXTENDED_PAGES, MAX_SIMPLE_PAGES, PAGE_SIZE};
pub use status::HvStatus;
