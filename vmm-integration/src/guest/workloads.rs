//! The built-in guest workloads: flat, position-independent images written in
//! assembly (`asm/*.s`), each in its own read-only section of this binary.
//!
//! `asm/common.s` holds the definitions, macros and routines every workload
//! shares; each workload file emits one image between two exported symbols.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

// One block, so the shared macros are defined exactly once for the assembler.
core::arch::global_asm!(
    include_str!("asm/common.s"),
    include_str!("asm/abi_selftest.s"),
    include_str!("asm/smoke.s"),
    include_str!("asm/conformance.s"),
    include_str!("asm/storm.s"),
    include_str!("asm/bench.s"),
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
}

impl Workload {
    /// Every workload, in documentation order.
    pub const ALL: [Workload; 5] = [
        Workload::AbiSelftest,
        Workload::Smoke,
        Workload::Conformance,
        Workload::Storm,
        Workload::Bench,
    ];

    /// The name used on command lines (`abi-selftest`, `smoke`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Workload::AbiSelftest => "abi-selftest",
            Workload::Smoke => "smoke",
            Workload::Conformance => "conformance",
            Workload::Storm => "storm",
            Workload::Bench => "bench",
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
#[error("Unknown workload {0:?} (expected abi-selftest, smoke, conformance, storm or bench)")]
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

/// The flat image of `workload`, to be loaded at [`IMAGE_GPA`](super::layout::IMAGE_GPA).
pub fn image(workload: Workload) -> &'static [u8] {
    match workload {
        Workload::AbiSelftest => abi_selftest_image(),
        Workload::Smoke => smoke_image(),
        Workload::Conformance => conformance_image(),
        Workload::Storm => storm_image(),
        Workload::Bench => bench_image(),
    }
}

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
