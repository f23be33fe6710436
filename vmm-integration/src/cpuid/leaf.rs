//! One CPUID leaf as plain data, and the kernel's Hyper-V CPUID report.

use serde::{Deserialize, Serialize};

use super::bits;

/// One CPUID leaf (sub-leaf 0): function number and the four registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HvLeaf {
    /// CPUID function (EAX input).
    pub function: u32,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

impl HvLeaf {
    /// A leaf with every register zero.
    pub const fn zero(function: u32) -> Self {
        Self {
            function,
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        }
    }

    /// EBX, ECX, EDX as the 12-byte signature they spell.
    pub fn signature(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..4].copy_from_slice(&self.ebx.to_le_bytes());
        out[4..8].copy_from_slice(&self.ecx.to_le_bytes());
        out[8..12].copy_from_slice(&self.edx.to_le_bytes());
        out
    }
}

/// What `KVM_GET_SUPPORTED_HV_CPUID` returned: the only source of bits in
/// offload mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KernelHvCpuid {
    leaves: Vec<HvLeaf>,
}

impl KernelHvCpuid {
    /// Wraps the leaves as reported (any order, duplicates keep the first).
    pub fn new(leaves: Vec<HvLeaf>) -> Self {
        Self { leaves }
    }

    /// The reported leaves.
    pub fn leaves(&self) -> &[HvLeaf] {
        &self.leaves
    }

    /// The leaf for `function`, if the kernel reported it.
    pub fn leaf(&self, function: u32) -> Option<&HvLeaf> {
        self.leaves.iter().find(|l| l.function == function)
    }

    /// The leaf for `function`, or all zeros when not reported.
    pub fn leaf_or_zero(&self, function: u32) -> HvLeaf {
        self.leaf(function)
            .copied()
            .unwrap_or(HvLeaf::zero(function))
    }

    /// Remote TLB flush recommended (0x40000004 EAX bit 2).
    pub fn remote_flush(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_RECOMMENDATIONS).eax & bits::RECOMMEND_EAX_REMOTE_TLB_FLUSH
            != 0
    }

    /// Hypercall MSRs and VP index MSR available (0x40000003 EAX bits 5, 6).
    pub fn hypercall_and_vp_index(&self) -> bool {
        let want = bits::FEATURES_EAX_HYPERCALL_MSRS | bits::FEATURES_EAX_VP_INDEX;
        self.leaf_or_zero(bits::LEAF_FEATURES).eax & want == want
    }

    /// Ex processor masks recommended (0x40000004 EAX bit 11).
    pub fn ex_masks(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_RECOMMENDATIONS).eax & bits::RECOMMEND_EAX_EX_PROCESSOR_MASKS
            != 0
    }

    /// XMM fast hypercall input (0x40000003 EDX bit 4).
    pub fn xmm_input(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_FEATURES).edx & bits::FEATURES_EDX_XMM_INPUT != 0
    }

    /// Extended GVA ranges for flushes (0x40000003 EDX bit 14).
    pub fn extended_ranges(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_FEATURES).edx & bits::FEATURES_EDX_EXT_GVA_RANGES != 0
    }

    /// VP assist page / APIC MSRs (0x40000003 EAX bit 4).
    pub fn apic_access(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_FEATURES).eax & bits::FEATURES_EAX_APIC_ACCESS != 0
    }

    /// L2 direct flush (0x4000000A EAX bit 17).
    pub fn direct_flush(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_NESTED_FEATURES).eax & bits::NESTED_EAX_DIRECT_FLUSH != 0
    }

    /// Enlightened VMCS version range (0x4000000A EAX bits 15:0), 0 if none.
    pub fn evmcs_version(&self) -> u16 {
        // Masked to 16 bits first, so the conversion cannot lose bits.
        (self.leaf_or_zero(bits::LEAF_NESTED_FEATURES).eax & bits::NESTED_EAX_EVMCS_VERSION_MASK)
            as u16
    }

    /// Enlightened VMCS recommended (0x40000004 EAX bit 14).
    pub fn evmcs_recommended(&self) -> bool {
        self.leaf_or_zero(bits::LEAF_RECOMMENDATIONS).eax & bits::RECOMMEND_EAX_ENLIGHTENED_VMCS
            != 0
    }
}
