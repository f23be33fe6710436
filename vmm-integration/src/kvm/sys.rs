//! Raw KVM ioctls that kvm-ioctls 0.25 lacks. Every `unsafe` of the KVM
//! backend is here.
//!
//! Numbers from Linux `include/uapi/linux/kvm.h`.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use kvm_bindings::{CpuId, kvm_enable_cap};
use kvm_ioctls::{Kvm, VcpuFd};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ptr, ioctl_with_ref};

use crate::cpuid::HvLeaf;

/// ioctl numbers (private: the macros generate undocumented `pub fn`s).
mod nr {
    const KVMIO: u32 = 0xAE;
    vmm_sys_util::ioctl_iowr_nr!(
        KVM_GET_SUPPORTED_HV_CPUID,
        KVMIO,
        0xc1,
        kvm_bindings::kvm_cpuid2
    );
    vmm_sys_util::ioctl_iow_nr!(KVM_ENABLE_CAP, KVMIO, 0xa3, kvm_bindings::kvm_enable_cap);
    vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}
use nr::{KVM_ENABLE_CAP, KVM_GET_STATS_FD, KVM_GET_SUPPORTED_HV_CPUID};

/// `KVM_CAP_HYPERV` (44).
pub const CAP_HYPERV: u32 = kvm_bindings::KVM_CAP_HYPERV;
/// `KVM_CAP_HYPERV_TLBFLUSH` (155).
pub const CAP_HYPERV_TLBFLUSH: u32 = kvm_bindings::KVM_CAP_HYPERV_TLBFLUSH;
/// `KVM_CAP_NESTED_STATE` (157).
pub const CAP_NESTED_STATE: u32 = kvm_bindings::KVM_CAP_NESTED_STATE;
/// `KVM_CAP_HYPERV_ENLIGHTENED_VMCS` (163).
pub const CAP_HYPERV_ENLIGHTENED_VMCS: u32 = kvm_bindings::KVM_CAP_HYPERV_ENLIGHTENED_VMCS;
/// `KVM_CAP_HYPERV_CPUID` (167).
pub const CAP_HYPERV_CPUID: u32 = kvm_bindings::KVM_CAP_HYPERV_CPUID;
/// `KVM_CAP_X86_USER_SPACE_MSR` (188).
pub const CAP_X86_USER_SPACE_MSR: u32 = kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR;
/// `KVM_CAP_X86_MSR_FILTER` (189).
pub const CAP_X86_MSR_FILTER: u32 = kvm_bindings::KVM_CAP_X86_MSR_FILTER;
/// `KVM_CAP_SYS_HYPERV_CPUID` (191).
pub const CAP_SYS_HYPERV_CPUID: u32 = kvm_bindings::KVM_CAP_SYS_HYPERV_CPUID;
/// `KVM_CAP_HYPERV_ENFORCE_CPUID` (199).
pub const CAP_HYPERV_ENFORCE_CPUID: u32 = kvm_bindings::KVM_CAP_HYPERV_ENFORCE_CPUID;
/// `KVM_CAP_BINARY_STATS_FD` (203).
pub const CAP_BINARY_STATS_FD: u32 = kvm_bindings::KVM_CAP_BINARY_STATS_FD;
/// `KVM_CAP_SYNC_REGS` (74).
pub const CAP_SYNC_REGS: u32 = kvm_bindings::KVM_CAP_SYNC_REGS;
/// `KVM_CAP_IMMEDIATE_EXIT` (136).
pub const CAP_IMMEDIATE_EXIT: u32 = kvm_bindings::KVM_CAP_IMMEDIATE_EXIT;

/// Room for the Hyper-V leaves: the kernel returns at most 10 today
/// (arch/x86/kvm/hyperv.c `kvm_get_hv_cpuid`) and fails with E2BIG when
/// there is too little room.
const HV_CPUID_ROOM: usize = 32;

/// Errors of the raw ioctls.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// `KVM_GET_SUPPORTED_HV_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_HV_CPUID failed")]
    GetHvCpuid(#[source] errno::Error),
    /// The CPUID buffer could not be allocated.
    #[error("Failed to allocate the CPUID buffer")]
    CpuidBuffer(#[source] vmm_sys_util::fam::Error),
    /// `KVM_ENABLE_CAP(KVM_CAP_HYPERV_ENLIGHTENED_VMCS)` failed.
    #[error("Enabling enlightened VMCS failed")]
    EnableEvmcs(#[source] errno::Error),
    /// `KVM_GET_STATS_FD` failed.
    #[error("KVM_GET_STATS_FD failed")]
    StatsFd(#[source] errno::Error),
}

/// `KVM_CHECK_EXTENSION` on the system fd, as a raw value (0 = absent).
pub fn check_extension(kvm: &Kvm, cap: u32) -> i32 {
    kvm.check_extension_raw(libc::c_ulong::from(cap))
}

fn hv_cpuid_on<F: AsRawFd>(fd: &F) -> Result<Vec<HvLeaf>, SysError> {
    let mut cpuid = CpuId::new(HV_CPUID_ROOM).map_err(SysError::CpuidBuffer)?;
    // SAFETY: `fd` is a KVM system or vCPU fd; the kernel reads `nent` and
    // writes at most `nent` entries into the buffer `cpuid` owns, which was
    // allocated for exactly that many, then updates `nent`.
    let ret = unsafe {
        ioctl_with_mut_ptr(
            fd,
            KVM_GET_SUPPORTED_HV_CPUID(),
            cpuid.as_mut_fam_struct_ptr(),
        )
    };
    if ret != 0 {
        return Err(SysError::GetHvCpuid(errno::Error::last()));
    }
    Ok(cpuid.as_slice().iter().map(HvLeaf::from).collect())
}

/// `KVM_GET_SUPPORTED_HV_CPUID` as a system ioctl (`KVM_CAP_SYS_HYPERV_CPUID`).
pub fn supported_hv_cpuid_system(kvm: &Kvm) -> Result<Vec<HvLeaf>, SysError> {
    hv_cpuid_on(kvm)
}

/// `KVM_GET_SUPPORTED_HV_CPUID` on a vCPU (`KVM_CAP_HYPERV_CPUID`).
pub fn supported_hv_cpuid_vcpu(vcpu: &VcpuFd) -> Result<Vec<HvLeaf>, SysError> {
    hv_cpuid_on(vcpu)
}

/// Enables enlightened VMCS on `vcpu`; returns the supported version range
/// (low byte lowest, high byte highest), which the kernel writes through
/// the pointer in `args[0]` (Documentation/virt/kvm/api.rst, 7.x
/// `KVM_CAP_HYPERV_ENLIGHTENED_VMCS`).
pub fn enable_evmcs(vcpu: &VcpuFd) -> Result<u16, SysError> {
    let mut version: u16 = 0;
    let cap = kvm_enable_cap {
        cap: CAP_HYPERV_ENLIGHTENED_VMCS,
        args: [std::ptr::addr_of_mut!(version) as u64, 0, 0, 0],
        ..Default::default()
    };
    // SAFETY: `vcpu` is a vCPU fd; `cap` lives across the call and its
    // args[0] points at `version`, a live, writable u16 the kernel fills.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_ENABLE_CAP(), &cap) };
    if ret != 0 {
        return Err(SysError::EnableEvmcs(errno::Error::last()));
    }
    // The kernel wrote through a pointer the compiler cannot see; read it
    // back volatile so the store is not assumed absent.
    // SAFETY: `version` is a valid, aligned, initialised u16.
    Ok(unsafe { std::ptr::read_volatile(std::ptr::addr_of!(version)) })
}

/// `KVM_GET_STATS_FD` on a VM or vCPU fd: the binary statistics file.
pub fn stats_fd<F: AsRawFd>(fd: &F) -> Result<File, SysError> {
    // SAFETY: `fd` is a KVM VM or vCPU fd; the ioctl takes no argument and
    // returns a new fd or -1.
    let ret = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if ret < 0 {
        return Err(SysError::StatsFd(errno::Error::last()));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(ret) })
}
