//! Streams of guest RDMSR/WRMSR of HYPERCALL, GUEST_OS_ID, VP_INDEX and
//! their neighbours, through the code the KVM userspace path runs for
//! `KVM_EXIT_X86_RDMSR`/`WRMSR` (`kvm::userspace::HypervMsrs`, which
//! `KvmVcpuFlush::handle_rdmsr`/`handle_wrmsr` call with no KVM fd
//! involved), and the hypercall gate every port exit goes through
//! (`CallerMode::from_sregs`, `hypercall_gate`).
//!
//! Checked against docs/guest-abi.md §6.2-6.3 and conformance R35-R37:
//! every outcome (value, #GP, not ours), the stub written exactly when the
//! page is enabled with a guest OS ID set, nothing written on a #GP, and
//! the gate's answer for the caller's mode and GUEST_OS_ID.
#![no_main]

use arbitrary::Arbitrary;
use hyperv_flush::abi::msr;
use kvm_bindings::kvm_sregs;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_integration::kvm::userspace::{
    CallerMode, HypercallGate, HypervMsrs, KVM_ENOSYS, KVM_EPERM, MSR_KVM_STEAL_TIME, MsrOutcome,
    hypercall_gate, hypercall_stub,
};

/// RAM `0..0x4000`, a hole, and RAM `0x8000..RAM_END`, which ends a few
/// bytes into its last page: a page there is partly RAM.
const RAM_END: u64 = 0xA002;
const LAYOUT: [(u64, u64); 2] = [(0, 0x4000), (0x8000, RAM_END)];

#[derive(Arbitrary, Debug, Clone, Copy)]
// Named after the MSRs (VP_INDEX), not the enum.
#[allow(clippy::enum_variant_names)]
enum Index {
    GuestOsId,
    Hypercall,
    VpIndex,
    /// Another MSR of the Hyper-V range (crash, reenlightenment, ...).
    Synthetic(u16),
    StealTime,
    Any(u32),
}

impl Index {
    fn raw(self) -> u32 {
        match self {
            Self::GuestOsId => msr::GUEST_OS_ID,
            Self::Hypercall => msr::HYPERCALL,
            Self::VpIndex => msr::VP_INDEX,
            Self::Synthetic(i) => msr::SYNTHETIC_FIRST + u32::from(i) % 0x200,
            Self::StealTime => MSR_KVM_STEAL_TIME,
            Self::Any(i) => i,
        }
    }
}

/// HYPERCALL values: a page of RAM, the partial page, the hole, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    RamPage { page: u8, low: u16 },
    PartialPage { low: u16 },
    HolePage { low: u16 },
    Raw(u64),
}

impl Value {
    fn raw(self) -> u64 {
        let low = |l: u16| u64::from(l) & 0xfff;
        match self {
            Self::RamPage { page, low: l } => u64::from(page % 4) * 0x1000 + low(l),
            Self::PartialPage { low: l } => (RAM_END & !0xfff) + low(l),
            Self::HolePage { low: l } => 0x5000 + low(l),
            Self::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Read(Index),
    Write(Index, Value),
    Restore {
        guest_os_id: u64,
        hypercall: u64,
    },
    Gate {
        cr0: u64,
        efer: u64,
        cs_l: u8,
        ss_dpl: u8,
        rflags: u64,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    port: u8,
    vp_index: Option<u32>,
    ops: Vec<Op>,
}

/// Copies all of guest RAM into `out` (reused, so no allocation per op).
fn snapshot(mem: &GuestMemoryMmap, out: &mut Vec<u8>) {
    out.clear();
    for (start, end) in LAYOUT {
        let at = out.len();
        out.resize(at + (end - start) as usize, 0);
        mem.read_slice(&mut out[at..], GuestAddress(start)).unwrap();
    }
}

fn in_ram(gpa: u64, len: u64) -> bool {
    LAYOUT
        .iter()
        .any(|&(s, e)| gpa >= s && gpa.checked_add(len).is_some_and(|end| end <= e))
}

fuzz_target!(|input: Input| {
    let mem = GuestMemoryMmap::<()>::from_ranges(
        &LAYOUT.map(|(s, e)| (GuestAddress(s), (e - s) as usize)),
    )
    .unwrap();
    let msrs = HypervMsrs::new(input.port);
    let (mut guest_os_id, mut hypercall) = (0u64, 0u64);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for op in input.ops.iter().take(64) {
        match *op {
            Op::Read(index) => {
                let i = index.raw();
                let want = if !HypervMsrs::owns(i) {
                    MsrOutcome::NotMine
                } else {
                    match i {
                        msr::GUEST_OS_ID => MsrOutcome::Done(guest_os_id),
                        msr::HYPERCALL => MsrOutcome::Done(hypercall),
                        msr::VP_INDEX => input
                            .vp_index
                            .map_or(MsrOutcome::Fault, |v| MsrOutcome::Done(v.into())),
                        _ => MsrOutcome::Fault,
                    }
                };
                assert_eq!(msrs.read(i, input.vp_index), want, "rdmsr {i:#x}");
            }
            Op::Write(index, value) => {
                let (i, v) = (index.raw(), value.raw());
                snapshot(&mem, &mut before);
                let got = msrs.write(i, v, &mem);
                let page = v & !0xfff;
                let enabling = i == msr::HYPERCALL && guest_os_id != 0 && v & 1 != 0;
                let want = if !HypervMsrs::owns(i) {
                    MsrOutcome::NotMine
                } else {
                    match i {
                        msr::GUEST_OS_ID => {
                            guest_os_id = v;
                            if v == 0 {
                                hypercall &= !msr::HYPERCALL_ENABLE;
                            }
                            MsrOutcome::Done(0)
                        }
                        // Ignored until the guest identifies itself.
                        msr::HYPERCALL if guest_os_id == 0 => MsrOutcome::Done(0),
                        msr::HYPERCALL if !enabling => {
                            hypercall = v;
                            MsrOutcome::Done(0)
                        }
                        msr::HYPERCALL if in_ram(page, 3) => {
                            hypercall = v;
                            MsrOutcome::Done(0)
                        }
                        _ => MsrOutcome::Fault,
                    }
                };
                assert_eq!(got, want, "wrmsr {i:#x} = {v:#x}");
                snapshot(&mem, &mut after);
                if enabling && want == MsrOutcome::Done(0) {
                    let mut stub = [0u8; 3];
                    mem.read_slice(&mut stub, GuestAddress(page)).unwrap();
                    assert_eq!(stub, hypercall_stub(input.port), "stub at {page:#x}");
                } else {
                    // Only enabling the page writes guest memory; a #GP
                    // writes nothing.
                    assert!(before == after, "wrmsr {i:#x} = {v:#x} wrote memory");
                }
            }
            Op::Restore {
                guest_os_id: g,
                hypercall: h,
            } => {
                msrs.restore(g, h);
                (guest_os_id, hypercall) = (g, h);
            }
            Op::Gate {
                cr0,
                efer,
                cs_l,
                ss_dpl,
                rflags,
            } => {
                let mut sregs = kvm_sregs {
                    cr0,
                    efer,
                    ..Default::default()
                };
                sregs.cs.l = cs_l;
                sregs.ss.dpl = ss_dpl;
                let mode = CallerMode::from_sregs(&sregs, rflags);
                // R35: CPL from SS.DPL in protected mode, 3 in
                // virtual-8086 mode, 0 in real mode; 64-bit mode needs
                // CR0.PE, EFER.LMA and CS.L.
                let protected = cr0 & 1 != 0;
                let cpl = match (protected, rflags & (1 << 17) != 0) {
                    (false, _) => 0,
                    (true, true) => 3,
                    (true, false) => ss_dpl & 3,
                };
                let long = protected && efer & (1 << 10) != 0 && cs_l != 0;
                assert_eq!((mode.cpl, mode.long_mode), (cpl, long));
                assert_eq!(msrs.guest_os_id(), guest_os_id);
                assert_eq!(msrs.hypercall_msr(), hypercall);
                let want = if guest_os_id == 0 {
                    // R36: KVM's own hypercall path.
                    let ret = if cpl != 0 { KVM_EPERM } else { KVM_ENOSYS }.wrapping_neg();
                    HypercallGate::NotHyperV {
                        rax: if long { ret } else { ret & 0xffff_ffff },
                    }
                } else if cpl != 0 || !long {
                    HypercallGate::InvalidOpcode
                } else {
                    HypercallGate::Serve
                };
                assert_eq!(hypercall_gate(mode, msrs.guest_os_id()), want);
            }
        }
    }
});
