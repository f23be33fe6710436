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

/// Most 4 KiB pages a simple entry names (12-bit additional-page count).
pub const MAX_SIMPLE_PAGES: u64 = 4096;

/// Most 4 KiB pages an extended entry names: 2,048 pages of 1 GiB
/// (11-bit additional-page count), 2^29.
pub const MAX_EXTENDED_PAGES: u64 = 2048 << 18;

/// The 4 KiB pages from the page-aligned `start` to the end of the 64-bit
/// address space (1..=2^52), computed without wrapping.
#[inline]
fn pages_to_end(start: u64) -> u64 {
    ((u64::MAX - start) >> 12) + 1
}

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
    /// Decodes a simple-format entry (1..=[`MAX_SIMPLE_PAGES`] pages,
    /// clamped to the end of the address space).
    #[inline]
    pub fn from_simple(entry: u64) -> Self {
        let start = entry & !(PAGE_SIZE - 1);
        Self {
            start,
            pages: ((entry & (PAGE_SIZE - 1)) + 1).min(pages_to_end(start)),
        }
    }

    /// Decodes an extended-format entry (at most 2,048 pages of its size,
    /// clamped to the end of the address space).
    #[inline]
    pub fn from_extended(entry: u64) -> Self {
        let e = ExtendedRange::from(entry);
        // 1..=2048: the product below is at most 2^29, no overflow.
        let count = e.additional_pages() + 1;
        let size: u64 = match (e.large_page(), e.page_size_1g()) {
            (false, _) => PAGE_SIZE,
            (true, false) => 2 << 20,
            (true, true) => 1 << 30,
        };
        let start = entry & !(size - 1);
        Self {
            start,
            pages: (count * (size / PAGE_SIZE)).min(pages_to_end(start)),
        }
    }

    /// One past the last byte of the range, or `None` when the range ends
    /// exactly at 2^64 (never wraps).
    pub fn end(&self) -> Option<u64> {
        self.pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| self.start.checked_add(len))
    }

    /// Whether `start` is canonical for 57-bit (LA57) linear addresses.
    ///
    /// The engine does not know the guest's paging mode, so it applies the
    /// wider rule: an address dropped here is non-canonical in every mode,
    /// so nothing is under-flushed. Non-canonical entries are ignored, not
    /// errors (Linux arch/x86/kvm/hyperv.c `kvm_hv_vcpu_flush_tlb`).
    #[inline]
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

    // conformance: R20 R21
    #[test]
    fn ranges_are_bounded_and_never_wrap() {
        // 1 GiB pages, 2048 of them from 0xFFFF_FFC0_0000_0000: 2 TiB named,
        // 256 GiB left before 2^64.
        let wrap = 0xFFFF_FFC0_0000_0000u64 | 1 << 12 | 1 << 11 | 0x7ff;
        let r = GvaRange::from_extended(wrap);
        assert_eq!(r.start, 0xFFFF_FFC0_0000_0000);
        assert_eq!(r.pages, 256 << 18);
        assert_eq!(r.end(), None, "ends exactly at 2^64");
        assert!(r.start.checked_add(r.pages * PAGE_SIZE - 1).is_some());
        // The largest extended entry that does not reach the end.
        let big = GvaRange::from_extended(1 << 12 | 1 << 11 | 0x7ff);
        assert_eq!(big.pages, MAX_EXTENDED_PAGES);
        assert_eq!(big.end(), Some(2048 << 30));
        // Simple entries: at most 4096 pages, clamped in the last 16 MiB.
        assert_eq!(GvaRange::from_simple(0xfff).pages, MAX_SIMPLE_PAGES);
        let last = GvaRange::from_simple(0xFFFF_FFFF_FFFF_F000 | 0xfff);
        assert_eq!((last.pages, last.end()), (1, None));
        let near = GvaRange::from_simple(0xFFFF_FFFF_FFFF_0000 | 0xfff);
        assert_eq!(near.pages, 16);
        // Extended 4 KiB entries: 2048 at most.
        assert_eq!(GvaRange::from_extended(0x7ff).pages, 2048);
        // Every decoded range stays inside the address space.
        for entry in [u64::MAX, !(1 << 11), 0xffff_ffff_ffe0_0fff] {
            for r in [GvaRange::from_simple(entry), GvaRange::from_extended(entry)] {
                assert!(r.pages >= 1);
                assert!(r.pages - 1 <= (u64::MAX - r.start) >> 12);
            }
        }
    }

    #[test]
    fn canonical_check_accepts_both_halves() {
        assert!(GvaRange::from_simple(0xffff_8000_0000_0000).is_canonical());
        assert!(GvaRange::from_simple(0x0000_7fff_ffff_f000).is_canonical());
        assert!(!GvaRange::from_simple(0x8000_0000_0000_0000).is_canonical());
    }
}
