//! The one CPUID function a VMM calls wherever it computes or checks a
//! vCPU's CPUID: vCPU creation, snapshot, send-migration and the restore /
//! receive-migration compatibility check. Same inputs, same table, so a
//! table saved at one site compares equal at another.
//!
//! What it decides, for the whole hypervisor range:
//! * the Hyper-V leaves (0x40000000-0x4000000A), from the decision;
//! * KVM's PV leaves and the TSC timing leaf 0x40000010: dropped while the
//!   Hyper-V leaves are shown. A Linux guest that also found KVM's
//!   signature (at 0x40000100 or anywhere in 0x40000000-0x4000FFFF) would
//!   pick KVM over Hyper-V: `detect_hypervisor_vendor()` takes the highest
//!   `detect()` value, KVM's is its base leaf (0x40000100) and Hyper-V's
//!   is 0x40000000 (Linux arch/x86/kernel/cpu/hypervisor.c, kvm.c,
//!   mshyperv.c). QEMU drops its timing leaf with Hyper-V too.
//! * KVM_FEATURE_MSI_EXT_DEST_ID, which guests with vCPUs above APIC ID 254
//!   need, is kept through Hyper-V's equivalent: the virtualization-stack
//!   leaves 0x40000081 ("VS#1") and 0x40000082 EAX bit 2
//!   (`HYPERV_VS_PROPERTIES_EAX_EXTENDED_IOAPIC_RTE`), which a Linux guest
//!   on Hyper-V reads in `ms_hyperv_msi_ext_dest_id()` for the same 15-bit
//!   destination format KVM implements.
//! * With the VMM's own Hyper-V enlightenments (Cloud Hypervisor
//!   `kvm_hyperv=on`) in offload mode, the result is their superset: every
//!   bit the VMM set stays, the flush bits the kernel reports are added.

use kvm_bindings::CpuId;

use super::bits;
use super::compose::{EngineSupport, compose_offload, compose_userspace};
use super::leaf::{HvLeaf, KernelHvCpuid};
use super::merge::{MergeError, merge_hyperv_leaves};
use crate::decision::{Decision, FlushPath};

/// `KVM_FEATURE_MSI_EXT_DEST_ID` (KVM features EAX bit 15).
pub const KVM_FEATURE_MSI_EXT_DEST_ID: u32 = 1 << 15;
/// `HYPERV_CPUID_VIRT_STACK_INTERFACE`.
pub const LEAF_VS_INTERFACE: u32 = 0x4000_0081;
/// `HYPERV_CPUID_VIRT_STACK_PROPERTIES`.
pub const LEAF_VS_PROPERTIES: u32 = 0x4000_0082;
/// `HYPERV_VS_INTERFACE_EAX_SIGNATURE`: "VS#1".
pub const VS_INTERFACE_SIGNATURE: u32 = 0x3123_5356;
/// `HYPERV_VS_PROPERTIES_EAX_EXTENDED_IOAPIC_RTE`.
pub const VS_PROPERTIES_EXTENDED_IOAPIC_RTE: u32 = 1 << 2;

/// What the VMM's own vCPU configuration says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmmCpuid {
    /// The VMM shows its own Hyper-V enlightenments (SynIC, synthetic
    /// timers, reference TSC, ...): Cloud Hypervisor's `kvm_hyperv=on`.
    pub kvm_hyperv: bool,
    /// The vCPUs are shown VMX or SVM (Cloud Hypervisor's `cpus.nested`),
    /// from the VMM's vCPU configuration, not from a common table.
    pub nested: bool,
    /// The VM's maximum vCPU count (0x40000005 in userspace mode).
    pub max_vcpus: u32,
}

/// Why the table cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The VMM's own Hyper-V enlightenments need in-kernel Hyper-V.
    #[error(
        "kvm_hyperv=on needs KVM's in-kernel Hyper-V (SynIC, synthetic timers, reference TSC), which this host lacks; the flush enlightenments are served in userspace here: set kvm_hyperv=off"
    )]
    KvmHypervNeedsKernel,
    /// L2 is offered but the vCPUs do not see VMX/SVM.
    #[error(
        "L2 direct flush is offered but the vCPUs are not shown VMX/SVM (nested virtualization off): enable it or set l2=off"
    )]
    NestedHidden,
    /// Offload without the kernel's report.
    #[error("No KVM_GET_SUPPORTED_HV_CPUID report to derive the guest CPUID from")]
    NoKernelReport,
    /// The merged table does not fit.
    #[error("Cannot merge the Hyper-V leaves into the VMM's CPUID")]
    Merge(#[source] MergeError),
}

/// Puts the flush enlightenments of `decision` into the VMM's `table`
/// (see the module documentation). `kernel` is the host's
/// `KVM_GET_SUPPORTED_HV_CPUID` report (needed in offload mode). With the
/// enlightenments off the table is left as the VMM made it.
pub fn apply_hyperv_cpuid(
    table: &mut CpuId,
    decision: &Decision,
    kernel: Option<&KernelHvCpuid>,
    vmm: &VmmCpuid,
) -> Result<(), CpuidError> {
    let features = &decision.features;
    let mut leaves = match decision.selected_mode {
        FlushPath::Off => return Ok(()),
        _ if features.is_empty() => return Ok(()),
        FlushPath::Userspace if vmm.kvm_hyperv => return Err(CpuidError::KvmHypervNeedsKernel),
        FlushPath::Userspace => compose_userspace(features, &EngineSupport::engine(vmm.max_vcpus)),
        FlushPath::Offload => {
            if features.l2 && !vmm.nested {
                return Err(CpuidError::NestedHidden);
            }
            let kernel = kernel.ok_or(CpuidError::NoKernelReport)?;
            let mut leaves = compose_offload(features, kernel);
            if vmm.kvm_hyperv {
                keep_vmm_enlightenments(&mut leaves, &vmm_leaves(table));
            }
            leaves
        }
    };
    if kvm_features(table).is_some_and(|eax| eax & KVM_FEATURE_MSI_EXT_DEST_ID != 0) {
        leaves.push(HvLeaf {
            eax: VS_INTERFACE_SIGNATURE,
            ..HvLeaf::zero(LEAF_VS_INTERFACE)
        });
        leaves.push(HvLeaf {
            eax: VS_PROPERTIES_EXTENDED_IOAPIC_RTE,
            ..HvLeaf::zero(LEAF_VS_PROPERTIES)
        });
    }
    merge_hyperv_leaves(table, &leaves).map_err(CpuidError::Merge)
}

/// KVM's features EAX, when the table shows KVM's signature at 0x40000000.
fn kvm_features(table: &CpuId) -> Option<u32> {
    let leaf = |f: u32| table.as_slice().iter().find(|e| e.function == f);
    let base = leaf(bits::HYPERVISOR_RANGE_START)?;
    (HvLeaf::from(base).signature() == bits::KVM_SIGNATURE)
        .then(|| leaf(bits::KVM_LEAF_FEATURES).map_or(0, |e| e.eax))
}

/// The VMM's own Hyper-V leaves, when it put "Hv#1" at 0x40000001.
fn vmm_leaves(table: &CpuId) -> Vec<HvLeaf> {
    let leaves: Vec<HvLeaf> = table
        .as_slice()
        .iter()
        .filter(|e| {
            (bits::HYPERVISOR_RANGE_START..=bits::HYPERVISOR_RANGE_END).contains(&e.function)
        })
        .map(HvLeaf::from)
        .collect();
    let hv1 = leaves
        .iter()
        .any(|l| l.function == bits::LEAF_INTERFACE && l.eax == bits::INTERFACE_SIGNATURE_HV1);
    if hv1 { leaves } else { Vec::new() }
}

/// Every bit of the VMM's feature and recommendation leaves stays: they are
/// ORed into ours, the VMM's spinlock retry count is kept, and the range
/// reaches at least as far as the VMM's.
fn keep_vmm_enlightenments(ours: &mut Vec<HvLeaf>, vmm: &[HvLeaf]) {
    for theirs in vmm {
        match theirs.function {
            bits::LEAF_VENDOR | bits::LEAF_INTERFACE => continue,
            f => match ours.iter_mut().find(|l| l.function == f) {
                Some(l) if f == bits::LEAF_RECOMMENDATIONS => {
                    l.eax |= theirs.eax;
                    l.ebx = theirs.ebx;
                    l.ecx |= theirs.ecx;
                    l.edx |= theirs.edx;
                }
                Some(_) if f == bits::LEAF_VERSION => {}
                Some(l) => {
                    l.eax |= theirs.eax;
                    l.ebx |= theirs.ebx;
                    l.ecx |= theirs.ecx;
                    l.edx |= theirs.edx;
                }
                None => ours.push(*theirs),
            },
        }
    }
    let max = ours
        .iter()
        .map(|l| l.function)
        .filter(|f| *f <= bits::LEAF_NESTED_FEATURES)
        .max()
        .unwrap_or(bits::LEAF_MIN_MAX);
    if let Some(vendor) = ours.iter_mut().find(|l| l.function == bits::LEAF_VENDOR) {
        vendor.eax = vendor.eax.max(max);
    }
    ours.sort_by_key(|l| l.function);
}
