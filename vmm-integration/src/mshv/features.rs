//! The partition's synthetic processor features for the flush paths,
//! derived from the decision's [`FlushFeatures`].

use mshv_bindings::{
    MSHV_PT_BIT_NESTED_VIRTUALIZATION, hv_partition_synthetic_processor_features,
    hv_partition_synthetic_processor_features__bindgen_ty_1 as FeatureBits,
};

use crate::cpuid::FlushFeatures;
use crate::facts::MshvSyntheticFeature;

/// Every synthetic feature this module controls.
pub const CONTROLLED: [MshvSyntheticFeature; 6] = [
    MshvSyntheticFeature::AccessHypercallRegs,
    MshvSyntheticFeature::AccessVpIndex,
    MshvSyntheticFeature::ExtendedGvaRanges,
    MshvSyntheticFeature::ExtendedProcessorMasks,
    MshvSyntheticFeature::TbFlushHypercalls,
    MshvSyntheticFeature::EnlightenedVmcs,
];

fn to_u64(bits: FeatureBits) -> u64 {
    let features = hv_partition_synthetic_processor_features {
        __bindgen_anon_1: bits,
    };
    // SAFETY: both union members are 8 bytes of plain integers (the
    // bindings assert the size), so every bit pattern is a valid u64.
    unsafe { features.as_uint64[0] }
}

/// Bank-0 mask of the flush-related synthetic features `req` needs,
/// built with mshv-bindings' own field setters.
pub fn synthetic_features(req: &FlushFeatures) -> u64 {
    let mut b = FeatureBits::default();
    let on = |x: bool| u64::from(x);
    let any = req.l1 || req.l2;
    b.set_access_hypercall_regs(on(any));
    b.set_access_vp_index(on(any));
    b.set_tb_flush_hypercalls(on(req.l1));
    b.set_extended_processor_masks(on(req.l1 && req.ex_masks));
    b.set_enable_extended_gva_ranges_for_flush_virtual_address_list(on(
        req.l1 && req.extended_ranges
    ));
    b.set_enlightened_vmcs(on(req.l2 && req.evmcs));
    to_u64(b)
}

/// Mask of every bit [`synthetic_features`] controls.
pub fn controlled_mask() -> u64 {
    CONTROLLED.iter().fold(0, |m, f| m | (1u64 << f.bit()))
}

/// `base` (e.g. mshv-ioctls' `make_default_synthetic_features_mask`) with
/// the flush-related bits replaced by what `req` needs.
pub fn apply_to_mask(base: u64, req: &FlushFeatures) -> u64 {
    (base & !controlled_mask()) | synthetic_features(req)
}

/// Extra `mshv_create_partition.pt_flags` bits `req` needs: nested
/// virtualization for L2.
pub fn partition_flags(req: &FlushFeatures) -> u64 {
    if req.l2 {
        1u64 << MSHV_PT_BIT_NESTED_VIRTUALIZATION
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLFS bit numbers in `MshvSyntheticFeature` agree with the
    /// bindings' setters, one feature at a time.
    type Setter = fn(&mut FeatureBits);

    #[test]
    fn tlfs_bits_match_bindings() {
        let cases: [(MshvSyntheticFeature, Setter); 6] = [
            (MshvSyntheticFeature::AccessHypercallRegs, |b| {
                b.set_access_hypercall_regs(1)
            }),
            (MshvSyntheticFeature::AccessVpIndex, |b| {
                b.set_access_vp_index(1)
            }),
            (MshvSyntheticFeature::ExtendedGvaRanges, |b| {
                b.set_enable_extended_gva_ranges_for_flush_virtual_address_list(1)
            }),
            (MshvSyntheticFeature::ExtendedProcessorMasks, |b| {
                b.set_extended_processor_masks(1)
            }),
            (MshvSyntheticFeature::TbFlushHypercalls, |b| {
                b.set_tb_flush_hypercalls(1)
            }),
            (MshvSyntheticFeature::EnlightenedVmcs, |b| {
                b.set_enlightened_vmcs(1)
            }),
        ];
        for (feature, set) in cases {
            let mut b = FeatureBits::default();
            set(&mut b);
            assert_eq!(to_u64(b), 1u64 << feature.bit(), "{}", feature.name());
        }
    }
}
