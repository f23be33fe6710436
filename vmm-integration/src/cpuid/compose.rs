//! Composition of the guest's Hyper-V leaves (0x40000000..=max) for both
//! flush paths.
//!
//! Offload: every bit is the kernel's report masked by what the operator
//! asked for, so a feature the kernel does not report is never offered.
//! Userspace: the bits the userspace engine implements ([`EngineSupport`]),
//! masked the same way.

use hvflush_config::VendorSignature;
use serde::{Deserialize, Serialize};

use super::bits;
use super::leaf::{HvLeaf, KernelHvCpuid};

/// Which flush features the guest should see, after the path decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushFeatures {
    /// Signature at 0x40000000.
    pub vendor: VendorSignature,
    /// L1 remote flush (0x40000004 EAX bit 2, with hypercall and VP index MSRs).
    pub l1: bool,
    /// Ex processor masks (0x40000004 EAX bit 11).
    pub ex_masks: bool,
    /// XMM fast input (0x40000003 EDX bit 4).
    pub xmm_input: bool,
    /// Extended GVA ranges (0x40000003 EDX bit 14).
    pub extended_ranges: bool,
    /// L2 direct flush (0x4000000A EAX bit 17, with the VP assist page).
    pub l2: bool,
    /// Enlightened VMCS for L2 (Intel): version in 0x4000000A, bit 14 in 0x40000004.
    pub evmcs: bool,
}

impl FlushFeatures {
    /// True when nothing is offered, so no Hyper-V leaves at all are shown.
    pub fn is_empty(&self) -> bool {
        !self.l1 && !self.l2
    }
}

/// What the userspace engine implements (the userspace path never offers
/// L2 or enlightened VMCS: KVM keeps the nested state those need).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSupport {
    /// HV_X64_MSR_GUEST_OS_ID / HV_X64_MSR_HYPERCALL emulated (EAX bit 5).
    pub hypercall_msrs: bool,
    /// HV_X64_MSR_VP_INDEX emulated (EAX bit 6).
    pub vp_index: bool,
    /// XMM fast input decoded (EDX bit 4).
    pub xmm_input: bool,
    /// Extended GVA range format decoded (EDX bit 14).
    pub extended_ranges: bool,
    /// HvFlushVirtualAddressSpace/List served (recommendation bit 2).
    pub remote_flush: bool,
    /// The Ex calls served (recommendation bit 11).
    pub ex_masks: bool,
    /// Maximum virtual processors (0x40000005 EAX).
    pub max_vcpus: u32,
}

impl EngineSupport {
    /// Everything the userspace engine implements, for `max_vcpus` vCPUs.
    pub const fn engine(max_vcpus: u32) -> Self {
        Self {
            hypercall_msrs: true,
            vp_index: true,
            xmm_input: true,
            extended_ranges: true,
            remote_flush: true,
            ex_masks: true,
            max_vcpus,
        }
    }
}

/// Version the userspace path reports at 0x40000002: EBX = major 10, minor 0
/// (TLFS §2.4.3 layout: EBX 31:16 major, 15:0 minor). Guests only print it.
const USERSPACE_VERSION_EBX: u32 = 0x000a_0000;
/// Logical processors reported at 0x40000005 EBX in userspace mode.
const USERSPACE_MAX_LPS: u32 = 64;

/// The signature bytes for the configured vendor.
pub fn vendor_signature(vendor: VendorSignature) -> [u8; 12] {
    match vendor {
        VendorSignature::Microsoft => *b"Microsoft Hv",
        VendorSignature::Kvm => *b"Linux KVM Hv",
    }
}

fn sig_regs(sig: [u8; 12]) -> (u32, u32, u32) {
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    (word(0), word(4), word(8))
}

/// Register values of the leaves that carry flush bits, before layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Plan {
    version: HvLeaf,
    features: HvLeaf,
    recommendations: HvLeaf,
    limits: HvLeaf,
    nested: Option<HvLeaf>,
}

fn layout(vendor: VendorSignature, plan: Plan) -> Vec<HvLeaf> {
    let max = if plan.nested.is_some() {
        bits::LEAF_NESTED_FEATURES
    } else {
        bits::LEAF_MIN_MAX
    };
    let (ebx, ecx, edx) = sig_regs(vendor_signature(vendor));
    (bits::LEAF_VENDOR..=max)
        .map(|function| match function {
            bits::LEAF_VENDOR => HvLeaf {
                function,
                eax: max,
                ebx,
                ecx,
                edx,
            },
            bits::LEAF_INTERFACE => HvLeaf {
                eax: bits::INTERFACE_SIGNATURE_HV1,
                ..HvLeaf::zero(function)
            },
            bits::LEAF_VERSION => HvLeaf {
                function,
                ..plan.version
            },
            bits::LEAF_FEATURES => HvLeaf {
                function,
                ..plan.features
            },
            bits::LEAF_RECOMMENDATIONS => HvLeaf {
                function,
                ..plan.recommendations
            },
            bits::LEAF_LIMITS => HvLeaf {
                function,
                ..plan.limits
            },
            bits::LEAF_NESTED_FEATURES => HvLeaf {
                function,
                ..plan.nested.unwrap_or(HvLeaf::zero(function))
            },
            // Leaves in range that carry nothing here read as zero.
            _ => HvLeaf::zero(function),
        })
        .collect()
}

/// Masks (features EAX, features EDX, recommendations EAX, nested EAX) that
/// `req` asks for.
fn wanted_masks(req: &FlushFeatures) -> (u32, u32, u32, u32) {
    let mut f_eax = 0;
    let mut f_edx = 0;
    let mut r_eax = 0;
    let mut n_eax = 0;
    if req.l1 || req.l2 {
        f_eax |= bits::FEATURES_EAX_HYPERCALL_MSRS | bits::FEATURES_EAX_VP_INDEX;
    }
    if req.l1 {
        r_eax |= bits::RECOMMEND_EAX_REMOTE_TLB_FLUSH;
        if req.ex_masks {
            r_eax |= bits::RECOMMEND_EAX_EX_PROCESSOR_MASKS;
        }
        if req.xmm_input {
            f_edx |= bits::FEATURES_EDX_XMM_INPUT;
        }
        if req.extended_ranges {
            f_edx |= bits::FEATURES_EDX_EXT_GVA_RANGES;
        }
    }
    if req.l2 {
        // L1 enables direct flush in its VP assist page, which the APIC
        // access privilege grants (Linux arch/x86/kvm/hyperv.c
        // `hv_check_msr_access`, HV_X64_MSR_VP_ASSIST_PAGE).
        f_eax |= bits::FEATURES_EAX_APIC_ACCESS;
        n_eax |= bits::NESTED_EAX_DIRECT_FLUSH;
        if req.evmcs {
            r_eax |= bits::RECOMMEND_EAX_ENLIGHTENED_VMCS;
            n_eax |= bits::NESTED_EAX_EVMCS_VERSION_MASK;
        }
    }
    (f_eax, f_edx, r_eax, n_eax)
}

/// Offload mode: the guest's Hyper-V leaves, each bit taken from `kernel`
/// (`KVM_GET_SUPPORTED_HV_CPUID`) and kept only if `req` wants it.
///
/// Returns no leaves when `req` offers nothing.
pub fn compose_offload(req: &FlushFeatures, kernel: &KernelHvCpuid) -> Vec<HvLeaf> {
    if req.is_empty() {
        return Vec::new();
    }
    let (f_eax, f_edx, r_eax, n_eax) = wanted_masks(req);
    let k_features = kernel.leaf_or_zero(bits::LEAF_FEATURES);
    let k_recommend = kernel.leaf_or_zero(bits::LEAF_RECOMMENDATIONS);
    let k_nested = kernel.leaf_or_zero(bits::LEAF_NESTED_FEATURES);
    let nested_eax = k_nested.eax & n_eax;
    let plan = Plan {
        version: kernel.leaf_or_zero(bits::LEAF_VERSION),
        features: HvLeaf {
            eax: k_features.eax & f_eax,
            edx: k_features.edx & f_edx,
            ..HvLeaf::zero(bits::LEAF_FEATURES)
        },
        recommendations: HvLeaf {
            eax: k_recommend.eax & r_eax,
            // Spinlock retry count as the kernel reports it.
            ebx: k_recommend.ebx,
            ..HvLeaf::zero(bits::LEAF_RECOMMENDATIONS)
        },
        limits: HvLeaf {
            eax: kernel.leaf_or_zero(bits::LEAF_LIMITS).eax,
            ebx: kernel.leaf_or_zero(bits::LEAF_LIMITS).ebx,
            ..HvLeaf::zero(bits::LEAF_LIMITS)
        },
        nested: (nested_eax != 0).then_some(HvLeaf {
            eax: nested_eax,
            ..HvLeaf::zero(bits::LEAF_NESTED_FEATURES)
        }),
    };
    layout(req.vendor, plan)
}

/// Userspace mode: the guest's Hyper-V leaves from what the userspace
/// engine implements. L2 and enlightened VMCS are never offered.
pub fn compose_userspace(req: &FlushFeatures, offer: &EngineSupport) -> Vec<HvLeaf> {
    let req = FlushFeatures {
        l2: false,
        evmcs: false,
        ..*req
    };
    if req.is_empty() {
        return Vec::new();
    }
    let (f_eax, f_edx, r_eax, _) = wanted_masks(&req);
    let mut have_f_eax = 0;
    let mut have_f_edx = 0;
    let mut have_r_eax = 0;
    if offer.hypercall_msrs {
        have_f_eax |= bits::FEATURES_EAX_HYPERCALL_MSRS;
    }
    if offer.vp_index {
        have_f_eax |= bits::FEATURES_EAX_VP_INDEX;
    }
    if offer.xmm_input {
        have_f_edx |= bits::FEATURES_EDX_XMM_INPUT;
    }
    if offer.extended_ranges {
        have_f_edx |= bits::FEATURES_EDX_EXT_GVA_RANGES;
    }
    if offer.remote_flush {
        have_r_eax |= bits::RECOMMEND_EAX_REMOTE_TLB_FLUSH;
        if offer.ex_masks {
            have_r_eax |= bits::RECOMMEND_EAX_EX_PROCESSOR_MASKS;
        }
    }
    let plan = Plan {
        version: HvLeaf {
            ebx: USERSPACE_VERSION_EBX,
            ..HvLeaf::zero(bits::LEAF_VERSION)
        },
        features: HvLeaf {
            eax: have_f_eax & f_eax,
            edx: have_f_edx & f_edx,
            ..HvLeaf::zero(bits::LEAF_FEATURES)
        },
        recommendations: HvLeaf {
            eax: have_r_eax & r_eax,
            // No long-spin-wait notification is served in userspace.
            ebx: bits::RECOMMEND_EBX_NEVER_NOTIFY,
            ..HvLeaf::zero(bits::LEAF_RECOMMENDATIONS)
        },
        limits: HvLeaf {
            eax: offer.max_vcpus,
            ebx: USERSPACE_MAX_LPS,
            ..HvLeaf::zero(bits::LEAF_LIMITS)
        },
        nested: None,
    };
    layout(req.vendor, plan)
}
