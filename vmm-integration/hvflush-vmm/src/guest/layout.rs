//! Guest-physical memory layout of the reference guest ABI (`docs/guest-abi.md`).
//!
//! Everything the VMM owns lives below 1 MiB (page tables, GDT, control page,
//! steal-time records) or just above the guest's usable limit (the per-vCPU
//! stacks). The guest image is loaded at [`IMAGE_GPA`]; RAM from the end of
//! the image up to [`GuestLayout::usable_limit`] belongs to the guest alone.

use thiserror::Error;
use vmm_integration::kvm::userspace::{REGION_ALIGN, UsedRange, region_size};

/// Size of one small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of one large page; all guest RAM is identity-mapped with these.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;
/// One GiB: the span of one page directory.
const GIB: u64 = 1 << 30;
/// One MiB.
const MIB: u64 = 1 << 20;

/// PML4 (one page), loaded into CR3.
pub const PML4_GPA: u64 = 0x1000;
/// Page-directory-pointer table (one page).
pub const PDPT_GPA: u64 = 0x2000;
/// First of [`MAX_PAGE_DIRECTORIES`] consecutive page directories (2 MiB entries).
pub const PD_GPA: u64 = 0x3000;
/// Page directories needed to map [`MAX_MEMORY_SIZE`].
pub const MAX_PAGE_DIRECTORIES: u64 = 4;
/// Global descriptor table (null, code, data, 64-bit TSS).
pub const GDT_GPA: u64 = 0x7000;
/// The (unused, zero) 64-bit task-state segment the TSS descriptor points at.
pub const TSS_GPA: u64 = 0x7100;
/// Size of a 64-bit TSS.
pub const TSS_SIZE: u64 = 0x68;
/// The VMM control page, passed to every vCPU in RCX; see [`control`].
pub const CONTROL_PAGE_GPA: u64 = 0x8000;
/// First per-vCPU steal-time record (`struct kvm_steal_time`); never shown to the guest.
pub const STEAL_TIME_GPA: u64 = 0x9000;
/// A VMM-owned page for extra stubs the guest is told about, such as the
/// bench's trap-only stub ([`control::TRAP_STUB_GPA`]).
pub const BENCH_STUB_GPA: u64 = 0xA000;
/// Where the flat guest image is loaded; every vCPU starts at its first byte.
pub const IMAGE_GPA: u64 = 0x10_0000;
/// Size of each vCPU's private stack.
pub const STACK_SIZE: u64 = 0x4000;
/// Start of the in-kernel irqchip MMIO windows (IOAPIC 0xFEC00000, LAPIC
/// 0xFEE00000): RAM at or above it is never handed to the guest.
pub const MMIO_HOLE_GPA: u64 = 0xFEC0_0000;

/// Most vCPUs the ABI supports (one steal-time page of records, one MiB of stacks).
pub const MAX_VCPUS: u32 = 64;
/// Bytes reserved for stacks just below the usable-limit ceiling, whatever the vCPU count.
pub const STACK_REGION_SIZE: u64 = MAX_VCPUS as u64 * STACK_SIZE;
/// Smallest supported guest RAM size.
pub const MIN_MEMORY_SIZE: u64 = 64 * MIB;
/// Largest supported guest RAM size.
pub const MAX_MEMORY_SIZE: u64 = 4 * GIB;
/// Guest RAM size a VMM should use when the user does not choose one.
pub const DEFAULT_MEMORY_SIZE: u64 = 64 * MIB;

/// Flat 64-bit code segment selector.
pub const CODE_SELECTOR: u16 = 0x08;
/// Flat data segment selector (DS, ES, FS, GS, SS).
pub const DATA_SELECTOR: u16 = 0x10;
/// 64-bit TSS selector (TR); the descriptor takes two GDT slots.
pub const TSS_SELECTOR: u16 = 0x18;

/// Port 0xE9: every byte written is console output of the writing vCPU.
pub const CONSOLE_PORT: u16 = 0xE9;
/// Port 0xF4: a 32-bit write ends the writing vCPU (0 = pass, else failure code).
pub const EXIT_PORT: u16 = 0xF4;
/// Port 0xF6: a 32-bit write is a bench phase marker the VMM timestamps.
pub const MARKER_PORT: u16 = 0xF6;
/// Port 0x600: Cloud Hypervisor's ACPI shutdown device (PM1 control); a
/// byte write of [`POWER_OFF_VALUE`] powers the VM off.
pub const POWER_PORT: u16 = 0x600;
/// SLP_TYP = S5 (5 << 2) | SLP_EN (1 << 5) (ACPI 6.4 §4.8.3.2.1; CH's S5 value).
pub const POWER_OFF_VALUE: u8 = 0x34;

/// Offsets inside the control page at [`CONTROL_PAGE_GPA`] (all `u64`, little endian).
///
/// The VMM writes the page; the guest only reads it. Bytes not named here are
/// reserved and zero.
pub mod control {
    /// Set to 1 by the VMM to ask long-running workloads (`storm`, bench targets) to finish.
    pub const STOP: u64 = 0;
    /// Number of calls per bench phase.
    pub const ITERATIONS: u64 = 8;
    /// Workload parameter (bench: number of running targets).
    pub const PARAM: u64 = 16;
    /// GPA of the bench's trap-only stub (`out <trap port>, al; ret`), 0 if none.
    pub const TRAP_STUB_GPA: u64 = 24;
    /// GPA of the PVH boot code's exit hook, written by that boot code (0 in
    /// flat boot): where a vCPU goes when a VMM resumes it after its exit-port write.
    pub const EXIT_HOOK: u64 = 32;
    /// Bytes of the page that carry meaning; the rest is reserved.
    pub const USED_SIZE: u64 = 40;
}

/// PVH boot of the built-in images (`docs/guest-abi.md` §10): what the image,
/// its boot code and the VMM place where.
pub mod pvh {
    use super::{CONTROL_PAGE_GPA, IMAGE_GPA, PAGE_SIZE};

    /// VMM-owned (hvflush-vmm): `struct hvm_start_info` (Xen
    /// public/arch-x86/hvm/start_info.h), passed in EBX. Cloud Hypervisor
    /// puts its own at 0x6000.
    pub const START_INFO_GPA: u64 = 0xB000;
    /// VMM-owned: the module list (one `struct hvm_modlist_entry`).
    pub const MODLIST_GPA: u64 = 0xB040;
    /// VMM-owned: module 0, the [parameter block](PARAMS_MAGIC).
    pub const PARAMS_GPA: u64 = 0xB080;
    /// VMM-owned: the memory map (`struct hvm_memmap_table_entry` array).
    pub const MEMMAP_GPA: u64 = 0xB100;
    /// Most memory-map entries the VMM writes (the page ends there).
    pub const MAX_MEMMAP_ENTRIES: u64 = (PAGE_SIZE - 0x100) / 24;
    /// Guest-owned: the page the boot code copies its real-mode AP trampoline
    /// to; SIPI vector = this >> 12. Free in hvflush-vmm's layout and in Cloud
    /// Hypervisor's (which uses 0x500-0x7FFF and 0x9000-0xBFFF, cmdline 0x20000).
    pub const TRAMPOLINE_GPA: u64 = 0x1_0000;
    /// `"HVTR"` at trampoline + 4: workloads check it before sending SIPIs.
    pub const TRAMPOLINE_SIGNATURE: u32 = u32::from_le_bytes(*b"HVTR");
    /// The boot code: the ELF's PT_LOAD starts here; PVH entry = this.
    pub const BOOT_GPA: u64 = IMAGE_GPA;
    /// Largest boot code (its blob is checked against it at build time).
    pub const BOOT_CODE_SIZE: u64 = 0x2000;
    /// The boot code's variables (zero when loaded, kept across INIT).
    pub const BOOT_DATA_GPA: u64 = BOOT_GPA + BOOT_CODE_SIZE;
    /// The boot code's PML4 (CR3); then the PDPT and four page directories
    /// identity-mapping 4 GiB with 2 MiB pages.
    pub const BOOT_PML4_GPA: u64 = BOOT_DATA_GPA + PAGE_SIZE;
    /// The boot code's PDPT.
    pub const BOOT_PDPT_GPA: u64 = BOOT_PML4_GPA + PAGE_SIZE;
    /// The first of the boot code's four page directories.
    pub const BOOT_PD_GPA: u64 = BOOT_PDPT_GPA + PAGE_SIZE;
    /// Where the workload's flat image sits in a PVH image; the boot code
    /// enters it here with the flat-ABI registers.
    pub const WORKLOAD_GPA: u64 = BOOT_PD_GPA + 4 * PAGE_SIZE;
    /// Control page the boot code uses (and zeroes) when no parameter block names one.
    pub const FALLBACK_CONTROL_GPA: u64 = CONTROL_PAGE_GPA;
    /// Parameter block (module 0) magic, `"HVFP"`: `u32 magic, u32 version,
    /// u32 vcpu_count, u32 reserved, u64 usable_limit, u64 control_gpa`.
    pub const PARAMS_MAGIC: u32 = u32::from_le_bytes(*b"HVFP");
    /// Parameter block version.
    pub const PARAMS_VERSION: u32 = 1;
    /// Parameter block size in bytes.
    pub const PARAMS_SIZE: usize = 32;
    /// xAPIC MMIO base (Intel SDM Vol. 3A §11.4.1, IA32_APIC_BASE default).
    pub const LAPIC_GPA: u64 = 0xFEE0_0000;
    /// hvflush-vmm's reset ROM: 64 KiB ending at 4 GiB, read-only, so the
    /// reset vector 0xFFFFFFF0 re-enters the PVH entry (`reboot`).
    pub const ROM_GPA: u64 = 0xFFFF_0000;
    /// Size of the reset ROM.
    pub const ROM_SIZE: u64 = 0x1_0000;
    /// Offset in the ROM's last page of the patched start_info GPA (u32).
    pub const FW_START_INFO: u64 = 0x60;
    /// Offset in the ROM's last page of the patched PVH entry (u32).
    pub const FW_ENTRY: u64 = 0x64;
    /// Log2 of [`STACK_SIZE`](super::STACK_SIZE), for the boot code.
    pub const STACK_SHIFT: u32 = super::STACK_SIZE.trailing_zeros();

    const _: () = {
        assert!(TRAMPOLINE_GPA % PAGE_SIZE == 0 && TRAMPOLINE_GPA < 0xA_0000);
        assert!(1 << STACK_SHIFT == super::STACK_SIZE);
        assert!(ROM_GPA + ROM_SIZE == 1 << 32 && ROM_GPA >= super::MMIO_HOLE_GPA);
        assert!(super::BENCH_STUB_GPA + PAGE_SIZE <= START_INFO_GPA);
        assert!(MEMMAP_GPA + MAX_MEMMAP_ENTRIES * 24 <= START_INFO_GPA + PAGE_SIZE);
    };
}

/// Bench phase markers written to [`MARKER_PORT`] by vCPU 0.
pub mod marker {
    /// Written just before the trap-stub loop starts.
    pub const TRAP_START: u32 = 1;
    /// Written after the trap-stub loop, just before the hypercall loop starts.
    pub const HYPERCALL_START: u32 = 2;
    /// Written after the hypercall loop.
    pub const HYPERCALL_END: u32 = 3;
    /// With idle targets only: written just before the self-flush loop (the
    /// List call at vCPU 0 alone, which arms the executor at every re-entry).
    pub const SELF_FLUSH_START: u32 = 4;
    /// Written after the self-flush loop, just before a trap-stub loop that
    /// the VMM runs without the flush hooks on vCPU 0's thread.
    pub const HOOKS_OFF_START: u32 = 5;
    /// Written after that loop, just before the same loop with the hooks.
    pub const HOOKS_ON_START: u32 = 6;
    /// Written after the loop with the hooks.
    pub const HOOKS_ON_END: u32 = 7;
    /// With halted targets: written by each target once the wake IPI ran
    /// its handler (guest code after the flushes; `bench.s`).
    pub const TARGET_WOKEN: u32 = 8;
}

/// Bench `param` bit: the targets that do not run halt (blocked in the
/// host's in-kernel LAPIC) instead of exiting; PVH boot only. The low 32
/// bits are the running targets.
pub const BENCH_HALTED_TARGETS: u64 = 1 << 32;

// Layout invariants, checked at compile time.
const _: () = {
    assert!(TSS_GPA + TSS_SIZE <= GDT_GPA + PAGE_SIZE);
    assert!(STEAL_TIME_GPA % REGION_ALIGN == 0);
    assert!(MAX_PAGE_DIRECTORIES * GIB >= MAX_MEMORY_SIZE);
    assert!(STACK_SIZE % 16 == 0);
};

/// Errors of the layout rules.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The RAM size is out of range or not a multiple of 2 MiB.
    #[error("Guest memory size {0:#x} is not a multiple of 2 MiB between 64 MiB and 4 GiB")]
    MemorySize(u64),
    /// The vCPU count is 0 or above [`MAX_VCPUS`].
    #[error("Guest vCPU count {0} is not between 1 and 64")]
    VcpuCount(u32),
    /// A vCPU index is not below the vCPU count.
    #[error("vCPU index {index} is out of range for {count} vCPUs")]
    VcpuIndex {
        /// The index asked for.
        index: u32,
        /// The layout's vCPU count.
        count: u32,
    },
}

/// The layout of one VM: RAM size and vCPU count, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLayout {
    memory_size: u64,
    vcpu_count: u32,
}

impl GuestLayout {
    /// Validates `memory_size` (bytes, 2 MiB multiple, 64 MiB..=4 GiB) and `vcpu_count` (1..=64).
    pub fn new(memory_size: u64, vcpu_count: u32) -> Result<Self, LayoutError> {
        if !(MIN_MEMORY_SIZE..=MAX_MEMORY_SIZE).contains(&memory_size)
            || memory_size % LARGE_PAGE_SIZE != 0
        {
            return Err(LayoutError::MemorySize(memory_size));
        }
        if vcpu_count == 0 || vcpu_count > MAX_VCPUS {
            return Err(LayoutError::VcpuCount(vcpu_count));
        }
        Ok(Self {
            memory_size,
            vcpu_count,
        })
    }

    /// Guest RAM size in bytes (one region at GPA 0).
    pub fn memory_size(&self) -> u64 {
        self.memory_size
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpu_count
    }

    /// End of the guest's usable RAM (passed in RDX): the stacks start here.
    ///
    /// RAM above `usable_limit + STACK_REGION_SIZE` (only when RAM reaches the
    /// MMIO hole) is mapped but unused.
    pub fn usable_limit(&self) -> u64 {
        self.memory_size.min(MMIO_HOLE_GPA) - STACK_REGION_SIZE
    }

    /// Largest image that fits between [`IMAGE_GPA`] and the usable limit.
    pub fn max_image_size(&self) -> u64 {
        self.usable_limit() - IMAGE_GPA
    }

    /// Number of page directories that map all RAM.
    pub fn page_directories(&self) -> u64 {
        self.memory_size.div_ceil(GIB)
    }

    /// Initial RSP of vCPU `index`: the top of its 16 KiB stack (16-byte aligned).
    pub fn stack_top(&self, index: u32) -> Result<u64, LayoutError> {
        self.check_index(index)?;
        Ok(self.usable_limit() + (u64::from(index) + 1) * STACK_SIZE)
    }

    fn check_index(&self, index: u32) -> Result<(), LayoutError> {
        if index < self.vcpu_count {
            Ok(())
        } else {
            Err(LayoutError::VcpuIndex {
                index,
                count: self.vcpu_count,
            })
        }
    }
}

/// The flush-record region: the records of [`MAX_VCPUS`] vCPUs, one page,
/// reserved in the guest's memory map.
pub fn record_range() -> std::ops::Range<u64> {
    STEAL_TIME_GPA..STEAL_TIME_GPA + region_size(MAX_VCPUS)
}

/// Everything this VMM puts in low guest memory but the flush records, by
/// name: what the record region is checked against.
pub fn used_ranges() -> Vec<UsedRange> {
    vec![
        UsedRange::new("PML4", PML4_GPA, PAGE_SIZE),
        UsedRange::new("PDPT", PDPT_GPA, PAGE_SIZE),
        UsedRange::new("page directories", PD_GPA, MAX_PAGE_DIRECTORIES * PAGE_SIZE),
        UsedRange::new("GDT and TSS", GDT_GPA, TSS_GPA - GDT_GPA + TSS_SIZE),
        UsedRange::new("control page", CONTROL_PAGE_GPA, PAGE_SIZE),
        UsedRange::new("stub page", BENCH_STUB_GPA, PAGE_SIZE),
        UsedRange::new("PVH start info", pvh::START_INFO_GPA, 0x40),
        UsedRange::new("PVH module list", pvh::MODLIST_GPA, 0x20),
        UsedRange::new("parameter block", pvh::PARAMS_GPA, pvh::PARAMS_SIZE as u64),
        UsedRange::new(
            "PVH memory map",
            pvh::MEMMAP_GPA,
            pvh::MAX_MEMMAP_ENTRIES * 24,
        ),
        UsedRange::new("AP trampoline", pvh::TRAMPOLINE_GPA, PAGE_SIZE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_areas_stay_below_the_image_and_do_not_overlap() {
        let records = record_range();
        let mut areas: Vec<(u64, u64)> = used_ranges()
            .iter()
            .map(|u| (u.range.start, u.range.end - u.range.start))
            .collect();
        areas.push((records.start, records.end - records.start));
        for (i, &(start, len)) in areas.iter().enumerate() {
            assert!(start + len <= IMAGE_GPA, "area {i} reaches the image");
            for &(other, other_len) in &areas[i + 1..] {
                assert!(start + len <= other || other + other_len <= start);
            }
        }
    }

    #[test]
    fn pvh_image_areas_follow_each_other_below_the_workload() {
        let areas = [
            (pvh::BOOT_GPA, pvh::BOOT_CODE_SIZE),
            (pvh::BOOT_DATA_GPA, PAGE_SIZE),
            (pvh::BOOT_PML4_GPA, PAGE_SIZE),
            (pvh::BOOT_PDPT_GPA, PAGE_SIZE),
            (pvh::BOOT_PD_GPA, MAX_PAGE_DIRECTORIES * PAGE_SIZE),
        ];
        for pair in areas.windows(2) {
            assert_eq!(pair[0].0 + pair[0].1, pair[1].0);
        }
        assert_eq!(pvh::BOOT_PD_GPA + 4 * PAGE_SIZE, pvh::WORKLOAD_GPA);
    }

    #[test]
    fn rejects_bad_sizes_and_counts() {
        for size in [
            0,
            MIN_MEMORY_SIZE - LARGE_PAGE_SIZE,
            MIN_MEMORY_SIZE + PAGE_SIZE,
        ] {
            assert_eq!(
                GuestLayout::new(size, 1),
                Err(LayoutError::MemorySize(size))
            );
        }
        let too_big = MAX_MEMORY_SIZE + LARGE_PAGE_SIZE;
        assert_eq!(
            GuestLayout::new(too_big, 1),
            Err(LayoutError::MemorySize(too_big))
        );
        assert_eq!(
            GuestLayout::new(MIN_MEMORY_SIZE, 0),
            Err(LayoutError::VcpuCount(0))
        );
        assert_eq!(
            GuestLayout::new(MIN_MEMORY_SIZE, 65),
            Err(LayoutError::VcpuCount(65))
        );
        assert!(GuestLayout::new(MIN_MEMORY_SIZE, 64).is_ok());
        assert!(GuestLayout::new(MAX_MEMORY_SIZE, 1).is_ok());
    }

    #[test]
    fn stacks_sit_above_the_usable_limit() {
        let layout = GuestLayout::new(64 << 20, 4).unwrap();
        assert_eq!(layout.usable_limit(), 63 << 20);
        assert_eq!(layout.stack_top(0), Ok((63 << 20) + 0x4000));
        assert_eq!(layout.stack_top(3), Ok((63 << 20) + 0x10000));
        assert_eq!(
            layout.stack_top(4),
            Err(LayoutError::VcpuIndex { index: 4, count: 4 })
        );
        assert_eq!(layout.max_image_size(), (63 << 20) - IMAGE_GPA);
        assert_eq!(layout.page_directories(), 1);
        // The last possible stack ends exactly at the end of RAM.
        let full = GuestLayout::new(64 << 20, 64).unwrap();
        assert_eq!(full.stack_top(63), Ok(64 << 20));
    }

    #[test]
    fn large_memory_keeps_clear_of_the_mmio_hole() {
        let layout = GuestLayout::new(MAX_MEMORY_SIZE, 64).unwrap();
        assert_eq!(layout.usable_limit(), MMIO_HOLE_GPA - STACK_REGION_SIZE);
        assert_eq!(layout.stack_top(63), Ok(MMIO_HOLE_GPA));
        assert_eq!(layout.page_directories(), 4);
        let odd = GuestLayout::new(GIB + LARGE_PAGE_SIZE, 1).unwrap();
        assert_eq!(odd.page_directories(), 2);
    }

    #[test]
    fn the_record_region_is_one_page_that_passes_the_component_checks() {
        use vmm_integration::kvm::userspace::RecordRegion;
        assert_eq!(record_range(), 0x9000..0xA000);
        let mem = crate::guest::boot::create_guest_memory(
            &GuestLayout::new(MIN_MEMORY_SIZE, 64).unwrap(),
        )
        .unwrap();
        let region =
            RecordRegion::new(&mem, STEAL_TIME_GPA, 0x1000, MAX_VCPUS, &used_ranges()).unwrap();
        assert_eq!(region.record_gpa(63), Ok(0x9FC0));
        assert!(region.record_gpa(64).is_err());
    }
}
