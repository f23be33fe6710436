//! The built-in guest workloads: flat, position-independent images written in
//! assembly (`asm/*.s`), each in its own read-only section of this binary.
//!
//! `asm/common.s` holds the definitions, macros and routines every workload
//! shares; each workload file emits one image between two exported symbols.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::layout::{self, MAX_VCPUS, MMIO_HOLE_GPA, STACK_REGION_SIZE, control, pvh};

// One block, so the shared macros are defined exactly once for the assembler.
// The layout facts the assembly needs come from `layout` (defined once).
core::arch::global_asm!(
    ".equ BOOT_GPA, {boot}",
    ".equ BOOT_DATA, {boot_data}",
    ".equ BOOT_PML4, {pml4}",
    ".equ BOOT_PDPT, {pdpt}",
    ".equ BOOT_PD, {pd}",
    ".equ PVH_WORKLOAD, {workload}",
    ".equ TRAMPOLINE_GPA, {trampoline}",
    ".equ TRAMPOLINE_SIGNATURE, {trampoline_sig}",
    ".equ FALLBACK_CONTROL, {fallback_control}",
    ".equ PARAMS_MAGIC, {params_magic}",
    ".equ PARAMS_VERSION, {params_version}",
    ".equ MAX_VCPUS, {max_vcpus}",
    ".equ MMIO_HOLE, {mmio_hole}",
    ".equ STACK_REGION, {stack_region}",
    ".equ STACK_SHIFT, {stack_shift}",
    ".equ LAPIC_GPA, {lapic}",
    ".equ CTL_EXIT_HOOK, {exit_hook}",
    ".equ ROM_GPA, {rom}",
    ".equ ROM_SIZE, {rom_size}",
    ".equ FW_START_INFO, {fw_start_info}",
    ".equ FW_ENTRY, {fw_entry}",
    ".equ PORT_POWER, {power}",
    ".equ POWER_S5, {power_s5}",
    include_str!("asm/common.s"),
    include_str!("asm/boot.s"),
    include_str!("asm/firmware.s"),
    include_str!("asm/abi_selftest.s"),
    include_str!("asm/smoke.s"),
    include_str!("asm/conformance.s"),
    include_str!("asm/storm.s"),
    include_str!("asm/bench.s"),
    include_str!("asm/restart.s"),
    include_str!("asm/reboot.s"),
    include_str!("asm/faults.s"),
    boot = const pvh::BOOT_GPA,
    boot_data = const pvh::BOOT_DATA_GPA,
    pml4 = const pvh::BOOT_PML4_GPA,
    pdpt = const pvh::BOOT_PDPT_GPA,
    pd = const pvh::BOOT_PD_GPA,
    workload = const pvh::WORKLOAD_GPA,
    trampoline = const pvh::TRAMPOLINE_GPA,
    trampoline_sig = const pvh::TRAMPOLINE_SIGNATURE,
    fallback_control = const pvh::FALLBACK_CONTROL_GPA,
    params_magic = const pvh::PARAMS_MAGIC,
    params_version = const pvh::PARAMS_VERSION,
    max_vcpus = const MAX_VCPUS,
    mmio_hole = const MMIO_HOLE_GPA,
    stack_region = const STACK_REGION_SIZE,
    stack_shift = const pvh::STACK_SHIFT,
    lapic = const pvh::LAPIC_GPA,
    exit_hook = const control::EXIT_HOOK,
    rom = const pvh::ROM_GPA,
    rom_size = const pvh::ROM_SIZE,
    fw_start_info = const pvh::FW_START_INFO,
    fw_entry = const pvh::FW_ENTRY,
    power = const layout::POWER_PORT,
    power_s5 = const layout::POWER_OFF_VALUE,
);

/// A built-in guest program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Checks the ABI start state (no hypercalls); see `asm/abi_selftest.s`.
    AbiSelftest,
    /// Hyper-V init, then a few flushes of every kind at the other vCPUs.
    Smoke,
    /// Every call × input kind × target form and every malformed-input class, status checked.
    Conformance,
    /// Random flushes from every vCPU until the control page's `stop` is set.
    Storm,
    /// Trap-stub and hypercall round trips between bench markers.
    Bench,
    /// A storm in which vCPU 1 is restarted with INIT/SIPI and flushed again (PVH boot, >= 2 vCPUs).
    Restart,
    /// Flushes, a full VM reset by INIT to all including self, a second boot and more flushes (PVH boot).
    Reboot,
    /// Hypercall input and the hypercall page at GPAs that are not RAM; prints what each got.
    Faults,
}

impl Workload {
    /// Every workload, in documentation order.
    pub const ALL: [Workload; 8] = [
        Workload::AbiSelftest,
        Workload::Smoke,
        Workload::Conformance,
        Workload::Storm,
        Workload::Bench,
        Workload::Restart,
        Workload::Reboot,
        Workload::Faults,
    ];

    /// The name used on command lines (`abi-selftest`, `smoke`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Workload::AbiSelftest => "abi-selftest",
            Workload::Smoke => "smoke",
            Workload::Conformance => "conformance",
            Workload::Storm => "storm",
            Workload::Bench => "bench",
            Workload::Restart => "restart",
            Workload::Reboot => "reboot",
            Workload::Faults => "faults",
        }
    }

    /// Whether the workload starts or resets vCPUs itself, so it runs only
    /// under PVH boot (it fails with its documented code under flat boot).
    pub fn needs_pvh(self) -> bool {
        matches!(self, Workload::Restart | Workload::Reboot)
    }

    /// Whether the workload runs until the control page's `stop` is set.
    pub fn runs_until_stop(self) -> bool {
        matches!(self, Workload::Storm | Workload::Restart)
    }

    /// Fewest vCPUs the workload runs on.
    pub fn min_vcpus(self) -> u32 {
        match self {
            Workload::Restart => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A workload name that is not built in.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "Unknown workload {0:?} (expected abi-selftest, smoke, conformance, storm, bench, restart, reboot or faults)"
)]
pub struct UnknownWorkload(pub String);

impl FromStr for Workload {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| UnknownWorkload(s.to_owned()))
    }
}

/// Declares the start/end symbols of one image and a function returning its bytes.
macro_rules! image_symbols {
    ($fn_name:ident, $start:ident, $end:ident) => {
        fn $fn_name() -> &'static [u8] {
            unsafe extern "C" {
                static $start: u8;
                static $end: u8;
            }
            let start = &raw const $start;
            let end = &raw const $end;
            let len = (end as usize) - (start as usize);
            // SAFETY: both symbols are defined by the global_asm! block above
            // around one image in a read-only (`"a"`) section, end after start,
            // so the range is initialised, immutable data for the whole program.
            unsafe { std::slice::from_raw_parts(start, len) }
        }
    };
}

image_symbols!(
    abi_selftest_image,
    hvflush_guest_abi_selftest_start,
    hvflush_guest_abi_selftest_end
);
image_symbols!(
    smoke_image,
    hvflush_guest_smoke_start,
    hvflush_guest_smoke_end
);
image_symbols!(
    conformance_image,
    hvflush_guest_conformance_start,
    hvflush_guest_conformance_end
);
image_symbols!(
    storm_image,
    hvflush_guest_storm_start,
    hvflush_guest_storm_end
);
image_symbols!(
    bench_image,
    hvflush_guest_bench_start,
    hvflush_guest_bench_end
);
image_symbols!(
    restart_image,
    hvflush_guest_restart_start,
    hvflush_guest_restart_end
);
image_symbols!(
    reboot_image,
    hvflush_guest_reboot_start,
    hvflush_guest_reboot_end
);
image_symbols!(
    faults_image,
    hvflush_guest_faults_start,
    hvflush_guest_faults_end
);
image_symbols!(boot_image, hvflush_guest_boot_start, hvflush_guest_boot_end);
image_symbols!(
    firmware_image,
    hvflush_guest_firmware_start,
    hvflush_guest_firmware_end
);

/// The PVH boot code (`asm/boot.s`), to be loaded at [`pvh::BOOT_GPA`].
pub fn boot_code() -> &'static [u8] {
    boot_image()
}

/// The last page of the reset ROM (`asm/firmware.s`), unpatched.
pub fn firmware_page() -> &'static [u8] {
    firmware_image()
}

/// The flat image of `workload`, to be loaded at [`IMAGE_GPA`](super::layout::IMAGE_GPA).
pub fn image(workload: Workload) -> &'static [u8] {
    match workload {
        Workload::AbiSelftest => abi_selftest_image(),
        Workload::Smoke => smoke_image(),
        Workload::Conformance => conformance_image(),
        Workload::Storm => storm_image(),
        Workload::Bench => bench_image(),
        Workload::Restart => restart_image(),
        Workload::Reboot => reboot_image(),
        Workload::Faults => faults_image(),
    }
}

const _: () = assert!(pvh::WORKLOAD_GPA - pvh::BOOT_GPA >= pvh::BOOT_CODE_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
        assert_eq!(
            "nope".parse::<Workload>(),
            Err(UnknownWorkload("nope".to_owned()))
        );
    }

    #[test]
    fn boot_code_fits_and_keeps_its_fixed_offsets() {
        let boot = boot_code();
        assert!(boot.len() as u64 <= pvh::BOOT_CODE_SIZE);
        // The trampoline's signature (checked by restart/reboot).
        assert_eq!(&boot[0x104..0x108], b"HVTR");
        // GDTR: 6 descriptors at BOOT_GPA + 0x40.
        assert_eq!(u16::from_le_bytes([boot[0x70], boot[0x71]]), 47);
        let base = u32::from_le_bytes(boot[0x72..0x76].try_into().unwrap());
        assert_eq!(u64::from(base), pvh::BOOT_GPA + 0x40);
        let fw = firmware_page();
        assert_eq!(fw.len(), 0x1000);
        assert_eq!(fw[0xff0], 0xe9, "reset vector is a near jmp");
    }

    #[test]
    fn images_are_distinct_and_non_empty() {
        for w in Workload::ALL {
            let bytes = image(w);
            assert!(bytes.len() > 16, "{w} is empty");
            assert_eq!(bytes.len() % 16, 0, "{w} ends unaligned");
            for other in Workload::ALL {
                if other != w {
                    assert_ne!(bytes, image(other), "{w} and {other} share an image");
                }
            }
        }
    }
}
