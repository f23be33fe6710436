//! Merging the composed Hyper-V leaves into a VMM's `kvm_bindings::CpuId`.
//!
//! The Hyper-V leaves replace everything in 0x40000000-0x400000FF (KVM's own
//! PV leaves included). KVM's leaves are not moved to 0x40000100: a Linux
//! guest that finds them there picks KVM over Hyper-V
//! (arch/x86/kernel/cpu/hypervisor.c picks the highest-priority match), so a
//! KVM signature already at 0x40000100 is dropped as well.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2};

use super::bits;
use super::leaf::HvLeaf;

/// Errors of [`merge_hyperv_leaves`].
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The merged table does not fit `KVM_SET_CPUID2`.
    #[error("Merged CPUID has {0} entries, more than KVM accepts")]
    TooManyEntries(usize),
    /// `CpuId` could not be rebuilt.
    #[error("Failed to build the merged CPUID table")]
    Build(#[source] vmm_sys_util::fam::Error),
}

impl From<&HvLeaf> for kvm_cpuid_entry2 {
    fn from(leaf: &HvLeaf) -> Self {
        kvm_cpuid_entry2 {
            function: leaf.function,
            index: 0,
            flags: 0,
            eax: leaf.eax,
            ebx: leaf.ebx,
            ecx: leaf.ecx,
            edx: leaf.edx,
            ..Default::default()
        }
    }
}

impl From<&kvm_cpuid_entry2> for HvLeaf {
    fn from(e: &kvm_cpuid_entry2) -> Self {
        HvLeaf {
            function: e.function,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        }
    }
}

fn is_kvm_alt_range_with_kvm_signature(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .find(|e| e.function == bits::KVM_ALT_RANGE_START)
        .is_some_and(|e| HvLeaf::from(e).signature() == bits::KVM_SIGNATURE)
}

/// Replaces the hypervisor range of `cpuid` with `hv_leaves`, keeping every
/// other entry of the VMM untouched, and sets CPUID.1 ECX bit 31
/// (hypervisor present) so the guest looks at the range at all.
///
/// With empty `hv_leaves` (flush enlightenments off) `cpuid` is left as is.
pub fn merge_hyperv_leaves(cpuid: &mut CpuId, hv_leaves: &[HvLeaf]) -> Result<(), MergeError> {
    if hv_leaves.is_empty() {
        return Ok(());
    }
    let old = cpuid.as_slice();
    let drop_alt = is_kvm_alt_range_with_kvm_signature(old);
    let mut merged: Vec<kvm_cpuid_entry2> = old
        .iter()
        .filter(|e| {
            let f = e.function;
            let in_hv = (bits::HYPERVISOR_RANGE_START..=bits::HYPERVISOR_RANGE_END).contains(&f);
            let in_alt = (bits::KVM_ALT_RANGE_START..=bits::KVM_ALT_RANGE_END).contains(&f);
            let dropped = in_hv || (drop_alt && in_alt);
            !dropped
        })
        .copied()
        .collect();
    for e in merged.iter_mut().filter(|e| e.function == 1) {
        e.ecx |= bits::LEAF1_ECX_HYPERVISOR;
    }
    merged.extend(hv_leaves.iter().map(kvm_cpuid_entry2::from));
    if merged.len() > KVM_MAX_CPUID_ENTRIES {
        return Err(MergeError::TooManyEntries(merged.len()));
    }
    *cpuid = CpuId::from_entries(&merged).map_err(MergeError::Build)?;
    Ok(())
}
