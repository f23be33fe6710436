//! A fixed-size set of vCPU indices: routing results without allocation.

/// Most vCPUs a partition may have (matches the 4096 VP indices of a
/// sparse set: 64 banks × 64).
pub const MAX_VCPUS: usize = 4096;

/// A bitmap of vCPU indices below [`MAX_VCPUS`].
#[derive(Clone, PartialEq, Eq)]
pub struct VcpuSet {
    words: [u64; MAX_VCPUS / 64],
}

impl Default for VcpuSet {
    fn default() -> Self {
        Self {
            words: [0; MAX_VCPUS / 64],
        }
    }
}

impl std::fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl VcpuSet {
    /// Adds `vcpu` (ignored when out of range).
    pub fn insert(&mut self, vcpu: usize) {
        if let Some(w) = self.words.get_mut(vcpu / 64) {
            *w |= 1 << (vcpu % 64);
        }
    }

    /// Whether `vcpu` is in the set.
    pub fn contains(&self, vcpu: usize) -> bool {
        self.words
            .get(vcpu / 64)
            .is_some_and(|w| w & (1 << (vcpu % 64)) != 0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Members, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i * 64 + b)
            })
        })
    }
}

impl FromIterator<usize> for VcpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = Self::default();
        for v in iter {
            set.insert(v);
        }
        set
    }
}
