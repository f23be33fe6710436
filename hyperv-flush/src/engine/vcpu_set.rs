//! A set of vCPU indices, its storage sized at compile time: routing
//! results without allocation.

/// Most vCPUs a partition may have (matches the 4096 VP indices of a
/// sparse set: 64 banks × 64).
pub const MAX_VCPUS: usize = 4096;

/// Words of a set that holds every vCPU below [`MAX_VCPUS`].
const WORDS: usize = MAX_VCPUS / 64;

/// A bitmap of vCPU indices: routing results without allocation.
///
/// `Words` is the bitmap's storage, one bit per vCPU: `VcpuSet` (the
/// default, `[u64; 64]`) holds every vCPU below [`MAX_VCPUS`]; the engine
/// routes into sets sized to the partition (`[u64; N]`, zeroing 8·N bytes
/// per request, not 512) and lends them as `&VcpuSet<[u64]>`, the same
/// set with its storage size known only at run time (an unsizing
/// coercion from any `&VcpuSet<[u64; N]>`). vCPUs beyond the storage are
/// ignored on insertion.
///
/// Bit `i` of `summary` is set exactly when `words[i]` is non-zero, so
/// iteration, `len` and `is_empty` cost O(non-empty words), not O(64):
/// a one-target request touches one word.
#[derive(Clone)]
pub struct VcpuSet<Words: ?Sized = [u64; WORDS]> {
    summary: u64,
    words: Words,
}

impl<const N: usize> Default for VcpuSet<[u64; N]> {
    #[inline]
    fn default() -> Self {
        // One summary bit per word.
        const { assert!(N <= 64) };
        Self {
            summary: 0,
            words: [0; N],
        }
    }
}

impl<W: AsRef<[u64]> + ?Sized> std::fmt::Debug for VcpuSet<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Same members (whatever the storage holds beyond them).
impl<W: AsRef<[u64]> + ?Sized> PartialEq for VcpuSet<W> {
    fn eq(&self, other: &Self) -> bool {
        self.summary == other.summary
            && SetBits(self.summary).all(|i| self.words.as_ref()[i] == other.words.as_ref()[i])
    }
}

impl<W: AsRef<[u64]> + ?Sized> Eq for VcpuSet<W> {}

impl<W: AsRef<[u64]> + AsMut<[u64]> + ?Sized> VcpuSet<W> {
    /// Adds `vcpu` (ignored when out of range).
    #[inline]
    pub fn insert(&mut self, vcpu: usize) {
        self.insert_word(vcpu / 64, 1 << (vcpu % 64));
    }

    /// Removes `vcpu` (ignored when absent or out of range).
    pub(crate) fn remove(&mut self, vcpu: usize) {
        if let Some(w) = self.words.as_mut().get_mut(vcpu / 64) {
            *w &= !(1 << (vcpu % 64));
            if *w == 0 {
                self.summary &= !(1 << (vcpu / 64));
            }
        }
    }

    /// Adds every member of `other`, one non-empty word at a time
    /// (members beyond this set's storage are ignored).
    pub(crate) fn union_with<V: AsRef<[u64]> + ?Sized>(&mut self, other: &VcpuSet<V>) {
        for i in SetBits(other.summary) {
            self.insert_word(i, other.words.as_ref()[i]);
        }
    }

    /// ORs `bits` into word `word` (vCPUs `64 * word ..= 64 * word + 63`).
    #[inline]
    pub(crate) fn insert_word(&mut self, word: usize, bits: u64) {
        if bits == 0 {
            return;
        }
        if let Some(w) = self.words.as_mut().get_mut(word) {
            // A word outside the summary is 0: the first bits are stored,
            // not or-ed in. The engine routes into a set it has just
            // zeroed, and loading a word back from those stores stalled
            // (store-to-load forwarding fails on the wide zeroing stores).
            if self.summary & (1 << word) == 0 {
                *w = bits;
            } else {
                *w |= bits;
            }
            self.summary |= 1 << word;
        }
    }
}

impl<W: AsRef<[u64]> + ?Sized> VcpuSet<W> {
    /// Whether `vcpu` is in the set.
    pub fn contains(&self, vcpu: usize) -> bool {
        self.words
            .as_ref()
            .get(vcpu / 64)
            .is_some_and(|w| w & (1 << (vcpu % 64)) != 0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        SetBits(self.summary)
            .map(|i| self.words.as_ref()[i].count_ones() as usize)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.summary == 0
    }

    /// How many vCPUs the storage holds: `0..capacity` are never ignored.
    pub(crate) fn capacity(&self) -> usize {
        self.words.as_ref().len() * 64
    }

    /// Members, lowest first.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        Iter {
            words: self.words.as_ref(),
            summary: self.summary,
            base: 0,
            bits: 0,
        }
    }
}

impl<const N: usize> FromIterator<usize> for VcpuSet<[u64; N]> {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = Self::default();
        for v in iter {
            set.insert(v);
        }
        set
    }
}

/// Indices of the set bits of a `u64`, lowest first.
pub(crate) struct SetBits(pub(crate) u64);

impl Iterator for SetBits {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// Walks the non-empty words named by the summary, then their bits.
struct Iter<'a> {
    words: &'a [u64],
    /// Non-empty words not yet started.
    summary: u64,
    /// First vCPU of the current word.
    base: usize,
    /// Members of the current word not yet returned.
    bits: u64,
}

impl Iterator for Iter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            if self.summary == 0 {
                return None;
            }
            let word = self.summary.trailing_zeros() as usize;
            self.summary &= self.summary - 1;
            self.base = word * 64;
            self.bits = self.words[word];
        }
        let bit = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(self.base + bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary names exactly the non-empty words.
    fn summary_is_exact(s: &VcpuSet) -> bool {
        (0..WORDS).all(|i| (s.summary >> i) & 1 == u64::from(s.words[i] != 0))
    }

    #[test]
    fn iteration_len_and_emptiness_follow_the_members() {
        let members = [0usize, 1, 63, 64, 700, 4095];
        let mut s: VcpuSet = members.into_iter().collect();
        s.insert(MAX_VCPUS); // out of range: ignored
        assert!(summary_is_exact(&s));
        assert_eq!(s.iter().collect::<Vec<_>>(), members);
        assert_eq!(s.len(), members.len());
        assert!(!s.is_empty());
        for m in members {
            s.remove(m);
            assert!(!s.contains(m));
            assert!(summary_is_exact(&s));
        }
        assert!(s.is_empty());
        assert_eq!(s, VcpuSet::default());
        assert_eq!(s.iter().next(), None);
    }

    #[test]
    fn removing_one_of_two_in_a_word_keeps_the_word() {
        let mut s: VcpuSet = [130usize, 131].into_iter().collect();
        s.remove(130);
        assert!(summary_is_exact(&s));
        assert_eq!(s.iter().collect::<Vec<_>>(), [131]);
    }

    #[test]
    fn a_set_sized_to_a_partition_works_through_the_unsized_view() {
        let mut small = VcpuSet::<[u64; 2]>::default();
        let view: &mut VcpuSet<[u64]> = &mut small;
        assert_eq!(view.capacity(), 128);
        view.insert(3);
        view.insert(127);
        view.insert(128); // beyond the storage: ignored
        view.insert_word(2, 1); // likewise
        assert_eq!(view.iter().collect::<Vec<_>>(), [3, 127]);
        assert_eq!(view.len(), 2);
        assert!(view.contains(127) && !view.contains(128));
        // A full set folds into a small one up to the small one's storage.
        let full: VcpuSet = [5usize, 64, 700].into_iter().collect();
        view.union_with(&full);
        assert_eq!(view.iter().collect::<Vec<_>>(), [3, 5, 64, 127]);
        assert_eq!(small, [3usize, 5, 64, 127].into_iter().collect());
        assert_eq!(format!("{small:?}"), "{3, 5, 64, 127}");
    }

    #[test]
    fn word_insert_and_union_keep_the_summary() {
        let mut a = VcpuSet::default();
        a.insert_word(3, 0);
        assert!(a.is_empty());
        a.insert_word(3, 0b101);
        a.insert_word(WORDS, 1); // out of range: ignored
        let b: VcpuSet = [5usize, 4000].into_iter().collect();
        a.union_with(&b);
        assert!(summary_is_exact(&a));
        assert_eq!(a.iter().collect::<Vec<_>>(), [5, 192, 194, 4000]);
    }
}
