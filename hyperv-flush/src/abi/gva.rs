//! GVA range list entries, normalised when read.
//!
//! TLFS `HV_GVA_RANGE_SIMPLE`: page-aligned GVA, low 12 bits = additional
//! pages (1..=4096 pages). `HV_GVA_RANGE_EXTENDED` (flag
//! `HV_FLUSH_USE_EXTENDED_RANGE_FORMAT`): bits 10:0 additional pages, bit
//! 11 large page, then either a 4 KiB page number (bits 63:12) or a page
//! size bit 12 (0 = 2 MiB, 1 = 1 GiB) and a large page number (63:21).

use bitfield_struct::bitfield;

/// The guest page size the ranges are counted in.
pub const PAGE_SIZE: u64 = 4096;

#[bitfield(u64)]
struct ExtendedRange {
    #[bits(11)]
    additional_pages: u64,
    large_page: bool,
    page_size_1g: bool,
    #[bits(51)]
    _upper: u64,
}

/// A normalised range: `pages` 4 KiB pages from the page-aligned `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GvaRange {
    /// First GVA, 4 KiB aligned.
    pub start: u64,
    /// Number of 4 KiB pages (≥ 1).
    pub pages: u64,
}

impl GvaRange {
    /// Decodes a simple-format entry.
    pub fn from_simple(entry: u64) -> Self {
        Self {
            start: entry & !(PAGE_SIZE - 1),
            pages: (entry & (PAGE_SIZE - 1)) + 1,
        }
    }

    /// Decodes an extended-format entry.
    pub fn from_extended(entry: u64) -> Self {
        let e = ExtendedRange::from(entry);
        let count = e.additional_pages() + 1;
        if !e.large_page() {
            return Self {
                start: entry & !(PAGE_SIZE - 1),
                pages: count,
            };
        }
        let size: u64 = if e.page_size_1g() { 1 << 30 } else { 2 << 20 };
        Self {
            start: entry & !(size - 1),
            pages: count * (size / PAGE_SIZE),
        }
    }

    /// Whether `start` is canonical for 57-bit (LA57) linear addresses.
    ///
    /// The engine does not know the guest's paging mode, so it applies the
    /// wider rule: an address dropped here is non-canonical in every mode,
    /// so nothing is under-flushed. Non-canonical entries are ignored, not
    /// errors (Linux arch/x86/kvm/hyperv.c `kvm_hv_vcpu_flush_tlb`).
    pub fn is_canonical(&self) -> bool {
        let shifted = ((self.start << 7) as i64) >> 7;
        shifted as u64 == self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_entries_encode_additional_pages_in_the_low_bits() {
        assert_eq!(
            GvaRange::from_simple(0x7000_0000_0000 | 0xfff),
            GvaRange {
                start: 0x7000_0000_0000,
                pages: 4096
            }
        );
        assert_eq!(GvaRange::from_simple(0x1234).pages, 0x235);
    }

    #[test]
    fn extended_large_pages_are_expanded_to_4k_pages() {
        let two_mib = (0x4020_0000u64) | 1 << 11 | 1;
        assert_eq!(
            GvaRange::from_extended(two_mib),
            GvaRange {
                start: 0x4020_0000,
                pages: 2 * 512
            }
        );
        let one_gib = (0x4000_0000u64) | 1 << 11 | 1 << 12;
        assert_eq!(
            GvaRange::from_extended(one_gib),
            GvaRange {
                start: 0x4000_0000,
                pages: 262_144
            }
        );
        assert_eq!(GvaRange::from_extended(0x5000 | 0x7ff).pages, 2048);
    }

    #[test]
    fn canonical_check_accepts_both_halves() {
        assert!(GvaRange::from_simple(0xffff_8000_0000_0000).is_canonical());
        assert!(GvaRange::from_simple(0x0000_7fff_ffff_f000).is_canonical());
        assert!(!GvaRange::from_simple(0x8000_0000_0000_0000).is_canonical());
    }
}
