//! VP index ↔ vCPU mapping (HV_X64_MSR_VP_INDEX), identity by default,
//! settable by the VMM; VP indices up to 4095 and sparse.

// Not part of the loom model: plain std atomics.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use thiserror::Error;

/// Highest VP index + 1 (64 banks of 64 VPs).
pub const MAX_VP_INDEX: u32 = 4096;
const NONE: u64 = u64::MAX;

/// Errors of [`VpMap::set`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VpIndexError {
    /// The VP index is out of range.
    #[error("VP index {0} is out of range (max 4095)")]
    OutOfRange(u32),
    /// The VP index belongs to another vCPU.
    #[error("VP index {vp} is already assigned to vCPU {owner}")]
    InUse {
        /// Requested VP index.
        vp: u32,
        /// vCPU holding it.
        owner: usize,
    },
    /// No such vCPU.
    #[error("No vCPU {0}")]
    NoSuchVcpu(usize),
}

/// Lock-free map; writes are rare (VMM setup), reads are on the hot path.
pub(crate) struct VpMap {
    vp_to_vcpu: Box<[AtomicU64]>,
    vcpu_to_vp: Box<[AtomicU64]>,
    /// vCPUs whose VP index is not their vCPU index (KVM's
    /// `num_mismatched_vp_indexes`): while 0, VP `i` is vCPU `i` for every
    /// vCPU and no other VP has one.
    mismatched: AtomicUsize,
}

impl VpMap {
    /// Identity mapping for `vcpus` vCPUs.
    pub(crate) fn identity(vcpus: usize) -> Self {
        let vp_to_vcpu = (0..MAX_VP_INDEX as usize)
            .map(|vp| AtomicU64::new(if vp < vcpus { vp as u64 } else { NONE }))
            .collect();
        let vcpu_to_vp = (0..vcpus).map(|v| AtomicU64::new(v as u64)).collect();
        Self {
            vp_to_vcpu,
            vcpu_to_vp,
            mismatched: AtomicUsize::new(0),
        }
    }

    /// Whether every vCPU has its own index as VP index (the default, and
    /// what KVM and most VMMs assign): routing may then take a bank of VPs
    /// as a word of vCPUs. A racing [`Self::set`] makes the answer as stale
    /// as a racing lookup of [`Self::vcpu`] would be.
    #[inline]
    pub(crate) fn is_identity(&self) -> bool {
        self.mismatched.load(Ordering::Acquire) == 0
    }

    /// The vCPU with VP index `vp`.
    #[inline]
    pub(crate) fn vcpu(&self, vp: u32) -> Option<usize> {
        let v = self.vp_to_vcpu.get(vp as usize)?.load(Ordering::Acquire);
        (v != NONE).then_some(v as usize)
    }

    /// The VP index of `vcpu`.
    pub(crate) fn vp(&self, vcpu: usize) -> Option<u32> {
        let v = self.vcpu_to_vp.get(vcpu)?.load(Ordering::Acquire);
        (v != NONE).then_some(v as u32)
    }

    /// Assigns `vp` to `vcpu`, releasing the vCPU's previous index.
    pub(crate) fn set(&self, vcpu: usize, vp: u32) -> Result<(), VpIndexError> {
        let slot = self
            .vcpu_to_vp
            .get(vcpu)
            .ok_or(VpIndexError::NoSuchVcpu(vcpu))?;
        let target = self
            .vp_to_vcpu
            .get(vp as usize)
            .ok_or(VpIndexError::OutOfRange(vp))?;
        let owner = target.load(Ordering::Acquire);
        if owner != NONE && owner as usize != vcpu {
            return Err(VpIndexError::InUse {
                vp,
                owner: owner as usize,
            });
        }
        let own = vcpu as u64;
        let identity = u64::from(vp) == own;
        if !identity {
            // Counted before the map changes, uncounted after (below), so
            // `is_identity` never holds while the map is not.
            self.mismatched.fetch_add(1, Ordering::AcqRel);
        }
        let old = slot.swap(u64::from(vp), Ordering::AcqRel);
        if old != NONE && old != u64::from(vp) {
            self.vp_to_vcpu[old as usize].store(NONE, Ordering::Release);
        }
        target.store(own, Ordering::Release);
        // `old` was counted when it was assigned (or is the identity).
        if old != own {
            self.mismatched.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_tracked_through_moves_and_swaps() {
        let map = VpMap::identity(4);
        assert!(map.is_identity());
        map.set(3, 3).unwrap(); // its own index again: still the identity
        assert!(map.is_identity());
        map.set(3, 100).unwrap();
        assert!(!map.is_identity());
        map.set(3, 200).unwrap(); // moved again: counted once
        map.set(2, 3).unwrap();
        assert!(!map.is_identity());
        assert_eq!(map.set(1, 3), Err(VpIndexError::InUse { vp: 3, owner: 2 }));
        map.set(2, 2).unwrap();
        assert!(!map.is_identity());
        map.set(3, 3).unwrap();
        assert!(map.is_identity());
        assert_eq!(
            (map.vcpu(3), map.vcpu(100), map.vcpu(200)),
            (Some(3), None, None)
        );
    }
}
