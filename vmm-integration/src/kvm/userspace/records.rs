//! The flush-record region: the guest-physical range the VMM reserves for
//! the executor's per-vCPU steal-time records (docs/cloud-hypervisor.md §2).
//!
//! KVM writes each record on every entry of its vCPU, so the range must be
//! memory the guest never uses and no firmware table sits in: the VMM
//! reserves it (an E820 reserved entry), declares what else it placed in
//! guest memory, and [`RecordRegion::new`] checks the range against both.

use std::fmt;
use std::ops::Range;

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// Bytes of one vCPU's record (`struct kvm_steal_time`, 64-byte aligned).
pub const RECORD_BYTES: u64 = 64;
/// Alignment of the region: a page, so that it is one E820 entry of its own.
pub const REGION_ALIGN: u64 = 4096;

/// Guest-physical bytes the records of `max_vcpus` vCPUs need, rounded up
/// to [`REGION_ALIGN`].
pub const fn region_size(max_vcpus: u32) -> u64 {
    (max_vcpus as u64 * RECORD_BYTES).div_ceil(REGION_ALIGN) * REGION_ALIGN
}

/// A guest-physical range the VMM uses for something else, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedRange {
    /// What is there ("ACPI tables", "SMBIOS", "kernel").
    pub name: String,
    /// The bytes, end exclusive.
    pub range: Range<u64>,
}

impl UsedRange {
    /// `len` bytes at `start` used for `name`.
    pub fn new(name: impl Into<String>, start: u64, len: u64) -> Self {
        Self {
            name: name.into(),
            range: start..start.saturating_add(len),
        }
    }
}

/// A GPA range, printed `0x1000-0x1fff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpa(pub Range<u64>);

impl fmt::Display for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.0.start, self.0.end.saturating_sub(1))
    }
}

/// Why a record region is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegionError {
    /// The base is not page-aligned.
    #[error("Flush-record region {0} is not {REGION_ALIGN}-byte aligned")]
    Unaligned(Gpa),
    /// Too small for the vCPUs.
    #[error(
        "Flush-record region {region} holds {fits} vCPUs' records, {max_vcpus} are needed ({needed} bytes)"
    )]
    TooSmall {
        /// The region.
        region: Gpa,
        /// Records it holds.
        fits: u64,
        /// vCPUs it must serve.
        max_vcpus: u32,
        /// Bytes needed.
        needed: u64,
    },
    /// Past the end of the address space.
    #[error("Flush-record region at {base:#x} of {size} bytes wraps the address space")]
    Wraps {
        /// Base given.
        base: u64,
        /// Size given.
        size: u64,
    },
    /// Not (all) backed by guest memory KVM can write.
    #[error(
        "Flush-record region {0} is not entirely in guest memory (it must be mapped RAM the VMM reserves)"
    )]
    NotMemory(Gpa),
    /// Overlaps something the VMM placed in guest memory.
    #[error("Flush-record region {region} overlaps the {name} at {other}")]
    Overlap {
        /// The region.
        region: Gpa,
        /// What it overlaps.
        name: String,
        /// Where that is.
        other: Gpa,
    },
    /// A vCPU index beyond the region.
    #[error("vCPU {index} has no record: the region serves {max_vcpus} vCPUs")]
    NoRecord {
        /// The index asked for.
        index: usize,
        /// vCPUs the region serves.
        max_vcpus: u32,
    },
}

/// A validated flush-record region for up to `max_vcpus` vCPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRegion {
    base: u64,
    size: u64,
    max_vcpus: u32,
}

impl RecordRegion {
    /// Checks `[base, base + size)` for `max_vcpus` vCPUs: page alignment,
    /// size (at least [`region_size`]), backed by `mem`, and no overlap with
    /// any of `used` (every other thing the VMM put in guest memory:
    /// firmware tables, boot data, the kernel, ...).
    pub fn new<M: GuestMemory + ?Sized>(
        mem: &M,
        base: u64,
        size: u64,
        max_vcpus: u32,
        used: &[UsedRange],
    ) -> Result<Self, RegionError> {
        let end = base
            .checked_add(size)
            .ok_or(RegionError::Wraps { base, size })?;
        let region = Gpa(base..end);
        if base % REGION_ALIGN != 0 {
            return Err(RegionError::Unaligned(region));
        }
        let needed = region_size(max_vcpus);
        if size < needed {
            return Err(RegionError::TooSmall {
                region,
                fits: size / RECORD_BYTES,
                max_vcpus,
                needed,
            });
        }
        // Every byte mapped: a hole inside the range would leave a record
        // KVM cannot write.
        let mapped =
            size == 0 || mem.check_range(GuestAddress(base), size as usize, Permissions::ReadWrite);
        if !mapped {
            return Err(RegionError::NotMemory(region));
        }
        if let Some(u) = used
            .iter()
            .find(|u| u.range.start < end && base < u.range.end)
        {
            return Err(RegionError::Overlap {
                region,
                name: u.name.clone(),
                other: Gpa(u.range.clone()),
            });
        }
        Ok(Self {
            base,
            size,
            max_vcpus,
        })
    }

    /// The region's range, for the VMM's E820 reserved entry.
    pub fn range(&self) -> Range<u64> {
        self.base..self.base + self.size
    }

    /// vCPUs it serves.
    pub fn max_vcpus(&self) -> u32 {
        self.max_vcpus
    }

    /// The GPA of vCPU `index`'s record.
    pub fn record_gpa(&self, index: usize) -> Result<u64, RegionError> {
        if index >= self.max_vcpus as usize {
            return Err(RegionError::NoRecord {
                index,
                max_vcpus: self.max_vcpus,
            });
        }
        Ok(self.base + index as u64 * RECORD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    fn mem() -> GuestMemoryMmap {
        // 0-640 KiB and 1-2 MiB, with a hole between (like a PC).
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0xA_0000),
            (GuestAddress(0x10_0000), 0x10_0000),
        ])
        .unwrap()
    }

    #[test]
    fn size_is_64_bytes_per_vcpu_in_pages() {
        assert_eq!(region_size(1), 4096);
        assert_eq!(region_size(64), 4096);
        assert_eq!(region_size(65), 8192);
        assert_eq!(region_size(8192), 512 * 1024);
    }

    #[test]
    fn a_good_region_gives_one_record_per_vcpu() {
        let used = [UsedRange::new("kernel", 0x10_0000, 0x1000)];
        let r = RecordRegion::new(&mem(), 0x11_0000, 0x2000, 128, &used).unwrap();
        assert_eq!(r.record_gpa(0), Ok(0x11_0000));
        assert_eq!(r.record_gpa(127), Ok(0x11_0000 + 127 * 64));
        assert_eq!(
            r.record_gpa(128),
            Err(RegionError::NoRecord {
                index: 128,
                max_vcpus: 128
            })
        );
        assert_eq!(r.range(), 0x11_0000..0x11_2000);
    }

    #[test]
    fn bad_regions_are_refused_naming_the_range_and_the_conflict() {
        let m = mem();
        let e = RecordRegion::new(&m, 0x11_0040, 0x1000, 1, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Flush-record region 0x110040-0x11103f is not 4096-byte aligned"
        );
        let e = RecordRegion::new(&m, 0x11_0000, 0x1000, 65, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds 64 vCPUs' records, 65 are needed"),
            "{e}"
        );
        // Straddling the hole at 640 KiB, and outside memory.
        for base in [0x9_F000, 0x20_0000] {
            let e = RecordRegion::new(&m, base, 0x2000, 1, &[]).unwrap_err();
            assert!(matches!(e, RegionError::NotMemory(_)), "{e}");
        }
        let used = [UsedRange::new("ACPI tables", 0x11_1000, 0x800)];
        let e = RecordRegion::new(&m, 0x11_0000, 0x2000, 1, &used).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Flush-record region 0x110000-0x111fff overlaps the ACPI tables at 0x111000-0x1117ff"
        );
        let e = RecordRegion::new(&m, u64::MAX - 0xFFF, 0x2000, 1, &[]).unwrap_err();
        assert!(matches!(e, RegionError::Wraps { .. }));
    }
}
