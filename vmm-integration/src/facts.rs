//! Host facts the decision is made from, as plain data: filled by the
//! probes (`kvm::probe`, `mshv::probe`) or by test fixtures.

use serde::{Deserialize, Serialize};

use crate::cpuid::KernelHvCpuid;

/// Which hypervisor device the VMM can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// /dev/kvm.
    Kvm,
    /// /dev/mshv.
    Mshv,
    /// Neither.
    None,
}

/// Host CPU vendor (CPUID.0 signature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuVendor {
    /// "GenuineIntel": nested VMX, enlightened VMCS.
    Intel,
    /// "AuthenticAMD" / "HygonGenuine": nested SVM.
    Amd,
    /// Anything else.
    Other,
}

impl CpuVendor {
    /// The vendor for a CPUID.0 signature (EBX, EDX, ECX order).
    pub fn from_signature(sig: &[u8; 12]) -> Self {
        match sig {
            b"GenuineIntel" => Self::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Self::Amd,
            _ => Self::Other,
        }
    }

    /// The kernel module that owns nested virtualization for this vendor.
    pub fn kvm_module(self) -> Option<&'static str> {
        match self {
            Self::Intel => Some("kvm_intel"),
            Self::Amd => Some("kvm_amd"),
            Self::Other => None,
        }
    }
}

/// The Hyper-V related KVM capabilities (`KVM_CHECK_EXTENSION` > 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmHypervCaps {
    /// `KVM_CAP_HYPERV` (44).
    pub hyperv: bool,
    /// `KVM_CAP_HYPERV_TLBFLUSH` (155).
    pub tlbflush: bool,
    /// `KVM_CAP_HYPERV_CPUID` (167): `KVM_GET_SUPPORTED_HV_CPUID` on a vCPU.
    pub cpuid: bool,
    /// `KVM_CAP_SYS_HYPERV_CPUID` (191): the same as a system ioctl.
    pub sys_cpuid: bool,
    /// `KVM_CAP_HYPERV_ENFORCE_CPUID` (199).
    pub enforce_cpuid: bool,
    /// `KVM_CAP_HYPERV_ENLIGHTENED_VMCS` (163).
    pub enlightened_vmcs: bool,
    /// `KVM_CAP_NESTED_STATE` (157).
    pub nested_state: bool,
}

/// What the KVM userspace flush path needs (docs/host-facts.md §1-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmUserspaceCaps {
    /// `KVM_CAP_X86_USER_SPACE_MSR` (188).
    pub user_space_msr: bool,
    /// `KVM_CAP_X86_MSR_FILTER` (189).
    pub msr_filter: bool,
    /// `KVM_CAP_SYNC_REGS` (74): optional, makes register access cheap.
    pub sync_regs: bool,
    /// `KVM_CAP_IMMEDIATE_EXIT` (136).
    pub immediate_exit: bool,
    /// Supported CPUID 0x40000001 EAX bit 9 (`KVM_FEATURE_PV_TLB_FLUSH`).
    pub pv_tlb_flush: bool,
    /// Supported CPUID 0x40000001 EAX bit 5 (`KVM_FEATURE_STEAL_TIME`).
    pub steal_time: bool,
}

/// Whether guests can be offered nested virtualization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NestedFacts {
    /// `/sys/module/kvm_{intel,amd}/parameters/nested`, if readable.
    pub module_param: Option<bool>,
    /// KVM's supported CPUID has VMX (Intel) or SVM (AMD).
    pub cpuid_offers: bool,
}

impl NestedFacts {
    /// Nested virtualization can be offered to guests.
    pub fn available(&self) -> bool {
        self.cpuid_offers && self.module_param != Some(false)
    }
}

/// Everything probed on /dev/kvm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmFacts {
    /// Host CPU vendor.
    pub vendor: CpuVendor,
    /// Hyper-V capabilities.
    pub hyperv: KvmHypervCaps,
    /// `KVM_GET_SUPPORTED_HV_CPUID`, when the kernel has it.
    pub supported_hv_cpuid: Option<KernelHvCpuid>,
    /// Nested virtualization.
    pub nested: NestedFacts,
    /// Userspace-path prerequisites.
    pub userspace: KvmUserspaceCaps,
}

/// Everything probed on /dev/mshv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MshvFacts {
    /// Host CPU vendor.
    pub vendor: CpuVendor,
    /// VMM capability `assignable_synthetic_proc_features`: the hypervisor
    /// tells which synthetic features a VMM may assign.
    pub assignable_query: bool,
    /// The assignable synthetic processor features (bank 0), when queryable.
    pub assignable_features: Option<u64>,
}

/// The host, as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Which backend is used (KVM preferred when both are present).
    pub backend: Backend,
    /// KVM facts, when backend is KVM.
    pub kvm: Option<KvmFacts>,
    /// MSHV facts, when backend is MSHV.
    pub mshv: Option<MshvFacts>,
    /// Why a device could not be used (open errors), for the report.
    pub notes: Vec<String>,
}

impl HostFacts {
    /// A host without any usable hypervisor device.
    pub fn none(notes: Vec<String>) -> Self {
        Self {
            backend: Backend::None,
            kvm: None,
            mshv: None,
            notes,
        }
    }

    /// A KVM host.
    pub fn kvm(facts: KvmFacts) -> Self {
        Self {
            backend: Backend::Kvm,
            kvm: Some(facts),
            mshv: None,
            notes: Vec::new(),
        }
    }

    /// An MSHV host.
    pub fn mshv(facts: MshvFacts) -> Self {
        Self {
            backend: Backend::Mshv,
            kvm: None,
            mshv: Some(facts),
            notes: Vec::new(),
        }
    }
}

/// MSHV synthetic processor features the flush paths use, with their bit in
/// `HV_PARTITION_SYNTHETIC_PROCESSOR_FEATURES` bank 0 (TLFS 6.0b, partition
/// properties; same order as mshv-bindings 0.7
/// `hv_partition_synthetic_processor_features`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MshvSyntheticFeature {
    /// `access_hypercall_regs` (bit 7).
    AccessHypercallRegs,
    /// `access_vp_index` (bit 8).
    AccessVpIndex,
    /// `enable_extended_gva_ranges_for_flush_virtual_address_list` (bit 15).
    ExtendedGvaRanges,
    /// `extended_processor_masks` (bit 24).
    ExtendedProcessorMasks,
    /// `tb_flush_hypercalls` (bit 25).
    TbFlushHypercalls,
    /// `enlightened_vmcs` (bit 32).
    EnlightenedVmcs,
}

impl MshvSyntheticFeature {
    /// Bit position in bank 0.
    pub const fn bit(self) -> u32 {
        match self {
            Self::AccessHypercallRegs => 7,
            Self::AccessVpIndex => 8,
            Self::ExtendedGvaRanges => 15,
            Self::ExtendedProcessorMasks => 24,
            Self::TbFlushHypercalls => 25,
            Self::EnlightenedVmcs => 32,
        }
    }

    /// The field name in mshv-bindings.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AccessHypercallRegs => "access_hypercall_regs",
            Self::AccessVpIndex => "access_vp_index",
            Self::ExtendedGvaRanges => "enable_extended_gva_ranges_for_flush_virtual_address_list",
            Self::ExtendedProcessorMasks => "extended_processor_masks",
            Self::TbFlushHypercalls => "tb_flush_hypercalls",
            Self::EnlightenedVmcs => "enlightened_vmcs",
        }
    }

    /// Whether `mask` has this feature.
    pub const fn is_in(self, mask: u64) -> bool {
        mask & (1u64 << self.bit()) != 0
    }
}
