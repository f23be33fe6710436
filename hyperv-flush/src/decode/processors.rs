//! The target processors of a flush request, as VP indices.

use crate::abi::MAX_SPARSE_BANKS;

/// Target processors, as VP indices of the caller's level.
///
/// Equality is by value of the sparse form: [`ProcessorSet::Mask`]`(m)`
/// equals `Sparse { valid_bank_mask: 1, banks: [m, 0, ..] }`.
#[derive(Clone, Copy, Debug)]
// Inline on purpose: requests live on the stack, the hot path never allocates.
#[allow(clippy::large_enum_variant)]
pub enum ProcessorSet {
    /// Every VP (flag, non-Ex mask 0, or Ex format ≠ SPARSE_4K).
    All,
    /// VPs 0..=63, the non-Ex `processor_mask`: the sparse set whose only
    /// present bank is bank 0. Its own variant so that a non-Ex request
    /// writes 8 bytes, not a 512-byte bank array.
    Mask(u64),
    /// A sparse set: bank `i` present when bit `i` of `valid_bank_mask`
    /// is set; `banks[i]` holds VPs `64*i ..= 64*i+63`. Absent banks are 0.
    Sparse {
        /// Which banks are present.
        valid_bank_mask: u64,
        /// Bank contents indexed by bank number.
        banks: [u64; MAX_SPARSE_BANKS],
    },
}

impl ProcessorSet {
    /// The empty sparse set.
    pub const EMPTY: Self = Self::Sparse {
        valid_bank_mask: 0,
        banks: [0; MAX_SPARSE_BANKS],
    };

    /// The sparse set of `vps` (each below 4096; larger ones are ignored).
    pub fn from_vps(vps: &[u32]) -> Self {
        let mut banks = [0u64; MAX_SPARSE_BANKS];
        let mut valid_bank_mask = 0u64;
        for &vp in vps
            .iter()
            .filter(|vp| (**vp as usize) < MAX_SPARSE_BANKS * 64)
        {
            banks[vp as usize / 64] |= 1 << (vp % 64);
            valid_bank_mask |= 1 << (vp / 64);
        }
        Self::Sparse {
            valid_bank_mask,
            banks,
        }
    }

    /// The sparse form: the valid bank mask and the banks indexed by bank
    /// number (a [`ProcessorSet::Mask`] has just bank 0; every bank of the
    /// mask is inside the slice). `None` for [`ProcessorSet::All`].
    #[inline]
    pub fn banks(&self) -> Option<(u64, &[u64])> {
        match self {
            Self::All => None,
            Self::Mask(mask) => Some((1, std::slice::from_ref(mask))),
            Self::Sparse {
                valid_bank_mask,
                banks,
            } => Some((*valid_bank_mask, banks)),
        }
    }

    /// Iterates the VP indices in the set (not for [`ProcessorSet::All`]).
    pub fn vp_indices(&self) -> impl Iterator<Item = u32> + '_ {
        let (mask, banks) = self.banks().unwrap_or((0, &[]));
        SetBits(mask).flat_map(move |bank| {
            let bits = banks.get(bank as usize).copied().unwrap_or(0);
            SetBits(bits).map(move |bit| bank * 64 + bit)
        })
    }

    /// Whether `vp` is in the set.
    pub fn contains(&self, vp: u32) -> bool {
        match self.banks() {
            None => true,
            Some((_, banks)) => banks
                .get(vp as usize / 64)
                .is_some_and(|b| b & (1 << (vp % 64)) != 0),
        }
    }

    /// Number of VPs in a sparse set (`None` for all).
    pub fn len(&self) -> Option<u32> {
        self.banks()
            .map(|(_, banks)| banks.iter().map(|b| b.count_ones()).sum())
    }

    /// Whether a sparse set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

impl PartialEq for ProcessorSet {
    fn eq(&self, other: &Self) -> bool {
        match (self.banks(), other.banks()) {
            (None, None) => true,
            (Some((mask_a, a)), Some((mask_b, b))) => {
                // Banks past the end of the shorter slice are 0.
                let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                mask_a == mask_b
                    && long[..short.len()] == *short
                    && long[short.len()..].iter().all(|&bank| bank == 0)
            }
            _ => false,
        }
    }
}

impl Eq for ProcessorSet {}

/// Iterator over the set bits of a u64, lowest first.
pub(crate) struct SetBits(pub(crate) u64);

impl Iterator for SetBits {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_is_the_sparse_set_of_bank_0() {
        let mask = ProcessorSet::Mask(0b1010);
        assert_eq!(mask, ProcessorSet::from_vps(&[1, 3]));
        assert_eq!(ProcessorSet::from_vps(&[1, 3]), mask);
        assert_ne!(mask, ProcessorSet::from_vps(&[1, 3, 64]));
        assert_ne!(mask, ProcessorSet::All);
        assert_eq!(mask.vp_indices().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(mask.len(), Some(2));
        assert!(mask.contains(3) && !mask.contains(2) && !mask.contains(67));
        // The valid bank mask is compared too: bank 0 present but empty is
        // not the same set value as no bank present.
        assert_ne!(ProcessorSet::Mask(0), ProcessorSet::EMPTY);
        assert!(ProcessorSet::Mask(0).is_empty());
    }
}
