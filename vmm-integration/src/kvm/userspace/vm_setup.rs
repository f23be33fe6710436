//! VM-wide KVM setup of the userspace path: MSR exits for the Hyper-V
//! range, and an MSR filter that (a) forces those exits for the whole
//! synthetic range a guest can reach, 0x40000000-0x400001FF, even where
//! the kernel has in-kernel Hyper-V (whose crash, reenlightenment and
//! TSC-invariant MSRs would otherwise answer behind the component's back),
//! and (b) hides `MSR_KVM_STEAL_TIME` from the guest, so it cannot move or
//! disable the flush executor's records.

use kvm_bindings::{
    KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_UNKNOWN,
    kvm_enable_cap,
};
use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};
use thiserror::Error;

use super::msrs::MSR_KVM_STEAL_TIME;
use hyperv_flush::abi::msr;

/// Errors of the VM-wide setup.
#[derive(Debug, Error)]
pub enum VmSetupError {
    /// `KVM_CAP_X86_USER_SPACE_MSR` could not be enabled.
    #[error("Cannot enable user-space MSR exits (KVM_CAP_X86_USER_SPACE_MSR)")]
    UserSpaceMsr(#[source] kvm_ioctls::Error),
    /// `KVM_X86_SET_MSR_FILTER` failed.
    #[error("Cannot install the MSR filter (KVM_X86_SET_MSR_FILTER)")]
    MsrFilter(#[source] kvm_ioctls::Error),
}

/// Enables the MSR exits and installs the filter.
pub fn setup_msr_exits(vm: &VmFd) -> Result<(), VmSetupError> {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        args: [
            u64::from(KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER),
            0,
            0,
            0,
        ],
        ..Default::default()
    };
    vm.enable_cap(&cap).map_err(VmSetupError::UserSpaceMsr)?;

    // A zero bit denies the access, which then exits to userspace.
    let synthetic_count = msr::SYNTHETIC_LAST - msr::SYNTHETIC_FIRST + 1;
    let deny_synthetic = [0u8; ((msr::SYNTHETIC_LAST - msr::SYNTHETIC_FIRST + 1) / 8) as usize];
    let deny_one = [0u8; 1];
    let both = MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE;
    let ranges = [
        MsrFilterRange {
            flags: both,
            base: msr::SYNTHETIC_FIRST,
            msr_count: synthetic_count,
            bitmap: &deny_synthetic,
        },
        MsrFilterRange {
            flags: both,
            base: MSR_KVM_STEAL_TIME,
            msr_count: 1,
            bitmap: &deny_one,
        },
    ];
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(VmSetupError::MsrFilter)
}
