//! The hypercall hot path (decode + route + enqueue + complete through
//! `Partition::handle_hypercall`) performs no heap allocation: a counting
//! global allocator in this test binary proves it.

#[allow(dead_code)]
mod common;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use common::{Call, INPUT_GPA, Mem, Regs, VpSet, memory};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::FlushCall;
use hyperv_flush::engine::{Level, NestedContext, Partition, PartitionConfig, Refusal, VcpuKicker};
use vm_memory::{Bytes, GuestAddress};

/// A running target leaves the guest the moment it is kicked.
struct ExitingKicker<'a>(&'a Partition);

impl VcpuKicker for ExitingKicker<'_> {
    fn kick(&self, vcpu: usize) {
        self.0.after_exit(vcpu).expect("vCPU exists");
    }
}

fn gvas(n: u64) -> Vec<u64> {
    (0..n).map(|i| 0x7000_0000 + (i << 12)).collect()
}

/// Issues `regs` (restored from `template` each time) from vCPU 0.
fn hypercall(p: &Partition, mem: &Mem, level: Level, template: &Regs) -> HvStatus {
    let mut regs = template.clone();
    let k = ExitingKicker(p);
    p.handle_hypercall(0, level, &mut regs, mem, &k)
        .expect("caller exists")
        .status
}

#[test]
fn hot_path_does_not_allocate() {
    let mut config = PartitionConfig::new(8);
    config.l2 = true;
    let p = Partition::new(config).expect("partition");
    let mem = memory();
    mem.write_obj(0u32, GuestAddress(0x3000))
        .expect("assist page");
    for v in 0..8 {
        let ctx = NestedContext {
            vm_id: 1,
            vp_id: v as u32,
            partition_assist_gpa: 0x3000,
        };
        p.load_nested_context(v, ctx).expect("context");
    }
    // Targets 1-4: a memory-input List call with 16 GVAs (the hot
    // path), 15 GVAs (queued ranges), fast calls, and an L2 call.
    let to_four = VpSet::Mask(0b1_1110);
    let calls = [
        (
            Level::L1,
            Call::new(FlushCall::List, false)
                .vps(to_four.clone())
                .gvas(gvas(16)),
        ),
        (
            Level::L1,
            Call::new(FlushCall::List, false)
                .vps(to_four.clone())
                .gvas(gvas(15)),
        ),
        (
            Level::L1,
            Call::new(FlushCall::Space, true).vps(to_four.clone()),
        ),
        (
            Level::L1,
            Call::new(FlushCall::ListEx, true)
                .vps(VpSet::sparse(&[1, 2, 3, 4]))
                .gvas(gvas(6)),
        ),
        (
            Level::L2,
            Call::new(FlushCall::List, false).vps(to_four).gvas(gvas(4)),
        ),
    ];
    let templates: Vec<(Level, Regs)> = calls
        .iter()
        .map(|(level, c)| (*level, c.place(&mem, INPUT_GPA)))
        .collect();

    for in_guest in [false, true] {
        for (level, regs) in &templates {
            // Warm up: first-use bookkeeping, lazily initialised statics.
            assert_eq!(hypercall(&p, &mem, *level, regs), HvStatus::SUCCESS);
            for t in 1..5 {
                p.before_entry(t).expect("vCPU");
                if !in_guest {
                    p.after_exit(t).expect("vCPU");
                }
            }
            let mut status = HvStatus::INVALID_PARAMETER;
            let n = allocations_in(|| status = hypercall(&p, &mem, *level, regs));
            assert_eq!(status, HvStatus::SUCCESS);
            assert_eq!(
                n, 0,
                "{level:?} control {:#x}, targets in guest: {in_guest}",
                regs.control
            );
            // The vCPU side (taking the queued work) does not allocate either.
            let n = allocations_in(|| {
                for t in 1..5 {
                    if in_guest {
                        // Kicked out by the call above.
                        assert!(!p.in_guest(t));
                    }
                    assert!(p.before_entry(t).expect("vCPU").is_some());
                    p.after_exit(t).expect("vCPU");
                }
            });
            assert_eq!(n, 0);
        }
    }
    // Calls a backend refuses before decoding (#UD, GUEST_OS_ID 0) are
    // counted without allocating.
    let before = p.counters();
    let n = allocations_in(|| {
        p.hypercall_refused(0, Refusal::InvalidOpcode)
            .expect("vCPU");
        p.hypercall_refused(0, Refusal::NoGuestOsId).expect("vCPU");
    });
    assert_eq!(n, 0);
    let after = p.counters();
    assert_eq!(
        after.invalid_opcode_injections,
        before.invalid_opcode_injections + 1
    );
    assert_eq!(
        after.calls_without_guest_os_id,
        before.calls_without_guest_os_id + 1
    );
    assert_eq!(after.targets, before.targets, "refused calls flush nobody");
    // The counting itself works (so the zeros above mean something).
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 64]))) > 0);
    assert!(p.counters().kicks > 0);
}
