//! A fixed-size set of vCPU indices: routing results without allocation.

/// Most vCPUs a partition may have (matches the 4096 VP indices of a
/// sparse set: 64 banks × 64).
pub const MAX_VCPUS: usize = 4096;

const WORDS: usize = MAX_VCPUS / 64;

/// A bitmap of vCPU indices below [`MAX_VCPUS`].
///
/// Bit `i` of `summary` is set exactly when `words[i]` is non-zero, so
/// iteration, `len` and `is_empty` cost O(non-empty words), not O(64):
/// a one-target request touches one word.
#[derive(Clone, PartialEq, Eq)]
pub struct VcpuSet {
    summary: u64,
    words: [u64; WORDS],
}

impl Default for VcpuSet {
    fn default() -> Self {
        Self {
            summary: 0,
            words: [0; WORDS],
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
    #[inline]
    pub fn insert(&mut self, vcpu: usize) {
        if let Some(w) = self.words.get_mut(vcpu / 64) {
            *w |= 1 << (vcpu % 64);
            self.summary |= 1 << (vcpu / 64);
        }
    }

    /// Removes `vcpu` (ignored when absent or out of range).
    pub(crate) fn remove(&mut self, vcpu: usize) {
        if let Some(w) = self.words.get_mut(vcpu / 64) {
            *w &= !(1 << (vcpu % 64));
            if *w == 0 {
                self.summary &= !(1 << (vcpu / 64));
            }
        }
    }

    /// Adds every member of `other`, one non-empty word at a time.
    pub(crate) fn union_with(&mut self, other: &VcpuSet) {
        for i in SetBits(other.summary) {
            self.words[i] |= other.words[i];
        }
        self.summary |= other.summary;
    }

    /// ORs `bits` into word `word` (vCPUs `64 * word ..= 64 * word + 63`).
    #[inline]
    pub(crate) fn insert_word(&mut self, word: usize, bits: u64) {
        if bits == 0 {
            return;
        }
        if let Some(w) = self.words.get_mut(word) {
            *w |= bits;
            self.summary |= 1 << word;
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
        SetBits(self.summary)
            .map(|i| self.words[i].count_ones() as usize)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.summary == 0
    }

    /// Members, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        Iter {
            words: &self.words,
            summary: self.summary,
            base: 0,
            bits: 0,
        }
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
    words: &'a [u64; WORDS],
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
