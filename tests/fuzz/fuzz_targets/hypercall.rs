//! The hypercall path end to end, without KVM: control word, RDX/R8, the
//! XMM halves and a guest page of input go through
//! `Partition::handle_hypercall` (decode, routing, enqueue, completion)
//! on a partition of 1..=64 vCPUs with identity, strided or shuffled
//! sparse VP indices, interleaved with vCPU entries and exits, runtime
//! offer changes and L2 context loads/releases.
//!
//! Everything the engine does is checked against a model written from
//! docs/conformance.md, not from the engine's code:
//! * the status follows the documented precedence for every rule whose
//!   inputs the model can see (access, reserved bits, code, rep rules,
//!   non-Ex header, fast without XMM, alignment, not RAM, header past the
//!   page, Ex popcount, empty sparse set), and is always one of 0, 2, 3, 4,
//!   6 (R01-R24; 5 is never returned);
//! * RAX is the status with the rep count in bits 43:32 on success (R24);
//! * the targets are exactly the vCPUs whose VP index (L1) or loaded
//!   nested context (L2, R30) the set names: a subset of the vCPUs, and
//!   nobody the set names is missed;
//! * each target's queues hold what R25 says (16 ranges, then a full
//!   flush) and are handed out at its next entry, never more than 16;
//! * the counters add up (calls, statuses, paths, targets, taken, kicks,
//!   preempted flushes, fallbacks), and no vCPU is ever unresponsive.
#![no_main]

#[path = "hypercall/model.rs"]
mod model;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use model::Model;

/// Which known call, or any code.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Code {
    Space,
    List,
    SpaceEx,
    ListEx,
    Other(u16),
}

/// A control word built from fields, so valid-looking calls are common;
/// `reserved` ORs bits into the reserved ranges.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Control {
    pub code: Code,
    pub fast: bool,
    pub var_header: u16,
    pub rep_count: u16,
    pub rep_start: u16,
    pub reserved: Option<u64>,
}

/// Where the memory input lies: RAM pages, the last page before the
/// hole, the hole, the page where RAM ends mid-page, the last page of the
/// 64-bit space, or any GPA.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Gpa {
    Ram(u8),
    BeforeHole,
    Hole,
    EndOfRam,
    TopOfSpace,
    Raw(u64),
}

/// One hypercall exit.
#[derive(Arbitrary, Debug, Clone)]
pub struct CallOp {
    pub caller: u8,
    pub l2: bool,
    pub control: Control,
    pub rdx: u64,
    pub r8: u64,
    pub xmm: [u128; 6],
    pub gpa: Gpa,
    /// Offset in the page; only multiples of 8 unless `misaligned`.
    pub offset: u16,
    pub misaligned: bool,
    /// Qwords written at the input GPA (clipped to RAM and the page).
    pub input: Vec<u64>,
    /// Bank indices (< 64) forced into an Ex header's mask, so sparse sets
    /// that name this partition's VPs are common.
    pub ex_mask_hint: Option<u64>,
    /// What the kicker's `flush_if_preempted` answers.
    pub preempted: bool,
}

/// One step of the scenario.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    Call(Box<CallOp>),
    /// `before_entry` of a vCPU (it stays in the guest until `Exit`).
    Enter(u8),
    Exit(u8),
    SetOffer {
        remote_flush: bool,
        ex_masks: bool,
        xmm_input: bool,
    },
    SetL2(bool),
    LoadNested {
        vcpu: u8,
        vm_id: u8,
        vp_id: u16,
        /// Assist page: a RAM GPA, or (false) one in the hole.
        assist_in_ram: bool,
        tlb_lock_count: u32,
    },
    Release(u8),
    SetVpIndex {
        vcpu: u8,
        vp: u16,
    },
}

/// How VP indices are assigned at creation.
#[derive(Arbitrary, Debug, Clone)]
pub enum VpLayout {
    Identity,
    Stride(u8),
    /// vCPU i gets `vps[i] % 4096` when unused, else the identity.
    Sparse(Vec<u16>),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Scenario {
    pub vcpus: u8,
    pub layout: VpLayout,
    pub remote_flush: bool,
    pub ex_masks: bool,
    pub xmm_input: bool,
    pub l2: bool,
    pub ops: Vec<Op>,
}

/// Ops per input: enough for queues to fill and overflow, bounded so one
/// input stays fast.
const MAX_OPS: usize = 48;

fuzz_target!(|s: Scenario| {
    let mut model = Model::new(&s);
    for op in s.ops.iter().take(MAX_OPS) {
        model.step(op);
    }
    model.finish();
});
