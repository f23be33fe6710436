//! Probing /dev/kvm: Hyper-V capabilities, the kernel's Hyper-V CPUID,
//! the CPU vendor, nested virtualization, and the userspace path's needs.

use std::path::Path;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;

use super::sys::{self, SysError};
use crate::cpuid::{HvLeaf, KernelHvCpuid, bits};
use crate::facts::{CpuVendor, KvmFacts, KvmHypervCaps, KvmUserspaceCaps, NestedFacts};

/// Errors of the KVM probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// /dev/kvm cannot be opened.
    #[error("Cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// A scratch VM or vCPU for the Hyper-V CPUID query could not be created.
    #[error("Cannot create a scratch vCPU for KVM_GET_SUPPORTED_HV_CPUID")]
    Scratch(#[source] kvm_ioctls::Error),
    /// `KVM_GET_SUPPORTED_HV_CPUID` failed.
    #[error("Cannot read KVM's Hyper-V CPUID")]
    HvCpuid(#[source] SysError),
}

/// Opens /dev/kvm and probes it.
pub fn probe_kvm() -> Result<KvmFacts, ProbeError> {
    let kvm = Kvm::new().map_err(ProbeError::Open)?;
    probe(&kvm)
}

/// Probes an open KVM system fd.
pub fn probe(kvm: &Kvm) -> Result<KvmFacts, ProbeError> {
    let has = |cap: u32| sys::check_extension(kvm, cap) > 0;
    let hyperv = KvmHypervCaps {
        hyperv: has(sys::CAP_HYPERV),
        tlbflush: has(sys::CAP_HYPERV_TLBFLUSH),
        cpuid: has(sys::CAP_HYPERV_CPUID),
        sys_cpuid: has(sys::CAP_SYS_HYPERV_CPUID),
        enforce_cpuid: has(sys::CAP_HYPERV_ENFORCE_CPUID),
        enlightened_vmcs: has(sys::CAP_HYPERV_ENLIGHTENED_VMCS),
        nested_state: has(sys::CAP_NESTED_STATE),
    };
    let supported: Vec<HvLeaf> = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ProbeError::SupportedCpuid)?
        .as_slice()
        .iter()
        .filter(|e| e.index == 0)
        .map(HvLeaf::from)
        .collect();
    let find = |f: u32| {
        supported
            .iter()
            .find(|l| l.function == f)
            .copied()
            .unwrap_or(HvLeaf::zero(f))
    };
    let leaf0 = find(0);
    // CPUID.0 spells the vendor in EBX, EDX, ECX order.
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    sig[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    let vendor = CpuVendor::from_signature(&sig);
    let cpuid_offers = match vendor {
        CpuVendor::Intel => find(1).ecx & bits::LEAF1_ECX_VMX != 0,
        CpuVendor::Amd => find(0x8000_0001).ecx & bits::EXT1_ECX_SVM != 0,
        CpuVendor::Other => false,
    };
    let nested = NestedFacts {
        module_param: vendor
            .kvm_module()
            .and_then(|m| read_nested_param(Path::new("/sys/module"), m)),
        cpuid_offers,
    };
    let kvm_features = find(bits::KVM_LEAF_FEATURES).eax;
    let userspace = KvmUserspaceCaps {
        user_space_msr: has(sys::CAP_X86_USER_SPACE_MSR),
        msr_filter: has(sys::CAP_X86_MSR_FILTER),
        sync_regs: has(sys::CAP_SYNC_REGS),
        immediate_exit: has(sys::CAP_IMMEDIATE_EXIT),
        pv_tlb_flush: kvm_features & bits::KVM_FEATURE_PV_TLB_FLUSH != 0,
        steal_time: kvm_features & bits::KVM_FEATURE_STEAL_TIME != 0,
    };
    let supported_hv_cpuid = if hyperv.sys_cpuid {
        let leaves = sys::supported_hv_cpuid_system(kvm).map_err(ProbeError::HvCpuid)?;
        Some(KernelHvCpuid::new(leaves))
    } else if hyperv.cpuid {
        Some(scratch_vcpu_hv_cpuid(kvm, vendor, &hyperv, &nested)?)
    } else {
        None
    };
    Ok(KvmFacts {
        vendor,
        hyperv,
        supported_hv_cpuid,
        nested,
        userspace,
    })
}

/// Pre-5.11 kernels answer the Hyper-V CPUID only on a vCPU, and report the
/// eVMCS version only once it is enabled there, so enable it first on Intel.
fn scratch_vcpu_hv_cpuid(
    kvm: &Kvm,
    vendor: CpuVendor,
    hyperv: &KvmHypervCaps,
    nested: &NestedFacts,
) -> Result<KernelHvCpuid, ProbeError> {
    let vm = kvm.create_vm().map_err(ProbeError::Scratch)?;
    let vcpu = vm.create_vcpu(0).map_err(ProbeError::Scratch)?;
    if vendor == CpuVendor::Intel && hyperv.enlightened_vmcs && nested.available() {
        // Failure only means no eVMCS; the report then says so.
        let _ = sys::enable_evmcs(&vcpu);
    }
    let leaves = sys::supported_hv_cpuid_vcpu(&vcpu).map_err(ProbeError::HvCpuid)?;
    Ok(KernelHvCpuid::new(leaves))
}

/// Reads `<sysfs_module>/<module>/parameters/nested` ("Y"/"N"/"1"/"0").
/// `None` when the module is not loaded or the file is unreadable.
pub fn read_nested_param(sysfs_module: &Path, module: &str) -> Option<bool> {
    let path = sysfs_module.join(module).join("parameters").join("nested");
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_param_parses_y_n_and_numbers() {
        let dir = std::env::temp_dir().join(format!("hvflush-nested-{}", std::process::id()));
        let params = dir.join("kvm_intel").join("parameters");
        std::fs::create_dir_all(&params).unwrap();
        for (text, want) in [
            ("Y\n", Some(true)),
            ("N\n", Some(false)),
            ("1", Some(true)),
            ("0", Some(false)),
            ("?", None),
        ] {
            std::fs::write(params.join("nested"), text).unwrap();
            assert_eq!(read_nested_param(&dir, "kvm_intel"), want, "{text:?}");
        }
        assert_eq!(read_nested_param(&dir, "kvm_amd"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
