//! Turning KVM's in-kernel Hyper-V flush on for a VM: the composed CPUID,
//! enlightened VMCS (Intel, L2) and CPUID enforcement on every vCPU.
//!
//! Call [`KvmOffload::new`] once per VM, `cpuid::apply_hyperv_cpuid` on
//! the VMM's CPUID table (as at every CPUID site), then
//! [`KvmOffload::setup_vcpu`] on every vCPU before its first `KVM_RUN`.

use kvm_bindings::{CpuId, KVM_CAP_HYPERV_ENFORCE_CPUID, kvm_enable_cap};
use kvm_ioctls::VcpuFd;

use super::sys::{self, SysError};
use crate::cpuid::{self, FlushFeatures, HvLeaf};
use crate::facts::KvmFacts;

/// Errors of the offload setup.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The kernel gave no Hyper-V CPUID report to derive the leaves from.
    #[error("No KVM_GET_SUPPORTED_HV_CPUID report to derive the guest CPUID from")]
    NoReport,
    /// Enabling enlightened VMCS failed.
    #[error("Cannot enable enlightened VMCS on vCPU")]
    Evmcs(#[source] SysError),
    /// The kernel's eVMCS version range does not include the offered one.
    #[error("vCPU supports eVMCS versions {got:#06x}, the guest is offered {offered:#06x}")]
    EvmcsVersion {
        /// Range the kernel returned.
        got: u16,
        /// Range in the composed 0x4000000A.
        offered: u16,
    },
    /// `KVM_SET_CPUID2` failed.
    #[error("KVM_SET_CPUID2 failed")]
    SetCpuid(#[source] kvm_ioctls::Error),
    /// Enabling `KVM_CAP_HYPERV_ENFORCE_CPUID` failed.
    #[error("Cannot enable KVM_CAP_HYPERV_ENFORCE_CPUID")]
    Enforce(#[source] kvm_ioctls::Error),
}

/// The per-VM offload configuration, from the features an offload
/// decision offers (`Decision::kvm_offload_features`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmOffload {
    leaves: Vec<HvLeaf>,
    evmcs: bool,
    enforce: bool,
}

impl KvmOffload {
    /// Derives the offload setup for `features` on the host `facts`.
    pub fn new(features: &FlushFeatures, facts: &KvmFacts) -> Result<Self, OffloadError> {
        let report = facts
            .supported_hv_cpuid
            .as_ref()
            .ok_or(OffloadError::NoReport)?;
        Ok(Self {
            leaves: cpuid::compose_offload(features, report),
            evmcs: features.l2 && features.evmcs,
            enforce: facts.hyperv.enforce_cpuid,
        })
    }

    /// The Hyper-V leaves composed from the kernel's report (what
    /// `cpuid::apply_hyperv_cpuid` puts in a table without `kvm_hyperv`).
    pub fn leaves(&self) -> &[HvLeaf] {
        &self.leaves
    }

    /// Whether enlightened VMCS is enabled on each vCPU.
    pub fn evmcs(&self) -> bool {
        self.evmcs
    }

    /// Whether `KVM_CAP_HYPERV_ENFORCE_CPUID` is enabled on each vCPU.
    pub fn enforce(&self) -> bool {
        self.enforce
    }

    /// Configures one vCPU before its first `KVM_RUN`: enlightened VMCS
    /// (Intel L2), `KVM_SET_CPUID2` with `cpuid` (already merged), then
    /// CPUID enforcement so the guest can use exactly what it was offered.
    pub fn setup_vcpu(&self, vcpu: &VcpuFd, cpuid: &CpuId) -> Result<(), OffloadError> {
        if self.evmcs {
            let got = sys::enable_evmcs(vcpu).map_err(OffloadError::Evmcs)?;
            let offered = self
                .leaves
                .iter()
                .find(|l| l.function == cpuid::bits::LEAF_NESTED_FEATURES)
                .map_or(0, |l| {
                    (l.eax & cpuid::bits::NESTED_EAX_EVMCS_VERSION_MASK) as u16
                });
            if !evmcs_range_covers(got, offered) {
                return Err(OffloadError::EvmcsVersion { got, offered });
            }
        }
        vcpu.set_cpuid2(cpuid).map_err(OffloadError::SetCpuid)?;
        if self.enforce {
            let mut cap = kvm_enable_cap {
                cap: KVM_CAP_HYPERV_ENFORCE_CPUID,
                ..Default::default()
            };
            cap.args[0] = 1;
            vcpu.enable_cap(&cap).map_err(OffloadError::Enforce)?;
        }
        Ok(())
    }
}

/// An eVMCS version range (low byte lowest, high byte highest) covers the
/// offered range when it is not narrower on either side.
fn evmcs_range_covers(got: u16, offered: u16) -> bool {
    let [got_lo, got_hi] = got.to_le_bytes();
    let [off_lo, off_hi] = offered.to_le_bytes();
    offered != 0 && got_lo <= off_lo && got_hi >= off_hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evmcs_range_checks_both_ends() {
        assert!(evmcs_range_covers(0x0101, 0x0101));
        assert!(evmcs_range_covers(0x0201, 0x0101));
        assert!(!evmcs_range_covers(0x0101, 0x0201));
        assert!(!evmcs_range_covers(0x0102, 0x0101));
        assert!(!evmcs_range_covers(0x0101, 0));
    }
}
