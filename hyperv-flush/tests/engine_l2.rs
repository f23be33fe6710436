//! L2 (Direct Virtual Flush) through the engine's public API: routing by
//! (vm_id, vp_id), the L2 queue, the TLB-lock synthetic exit, and the
//! lifetime of a vCPU's nested context, which is KVM's: loaded at L2
//! entry, kept while the vCPU runs L1, dropped only when L1 releases it
//! (vmx/nested.c `copy_enlightened_to_vmcs12`, `nested_release_evmcs`;
//! svm/nested.c `nested_svm_hv_update_vm_vp_ids`).

#[allow(dead_code)]
mod common;

use common::{Call, HOLE, INPUT_GPA, RecordingKicker, VpSet, call, memory, pages, ranges, routed};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::{FlushCall, ProcessorSet};
use hyperv_flush::engine::{
    EngineError, HypercallKind, InputKind, Level, NestedContext, Partition, PartitionConfig,
    QueuedFlush, VcpuSet,
};
use vm_memory::{Bytes, GuestAddress};

fn l2_partition(vcpus: usize) -> Partition {
    let mut config = PartitionConfig::new(vcpus);
    config.l2 = true;
    Partition::new(config).expect("partition")
}

fn sparse(vps: &[u32]) -> ProcessorSet {
    ProcessorSet::from_vps(vps)
}

const ASSIST_GPA: u64 = 0x3000;

fn ctx(vm_id: u64, vp_id: u32) -> NestedContext {
    NestedContext {
        vm_id,
        vp_id,
        partition_assist_gpa: ASSIST_GPA,
    }
}

/// vCPU 0..=3 entered VPs 3, 0, 1, 2 of L2 VM 7; vCPU 4 entered VP 0 of
/// VM 8; vCPU 5 never entered L2.
fn nested_setup(p: &Partition) {
    for (vcpu, vp) in [(0, 3), (1, 0), (2, 1), (3, 2)] {
        p.load_nested_context(vcpu, ctx(7, vp)).unwrap();
    }
    p.load_nested_context(4, ctx(8, 0)).unwrap();
}

// conformance: R30
#[test]
fn l2_routing_by_vm_id_and_vp_id() {
    let p = l2_partition(8);
    nested_setup(&p);
    assert_eq!(routed(&p, 0, Level::L2, &sparse(&[0, 2])), [1, 3]);
    // All processors = every vCPU in the caller's L2 VM, caller included.
    assert_eq!(routed(&p, 0, Level::L2, &ProcessorSet::All), [0, 1, 2, 3]);
    // VM 8's VP 0 never receives VM 7's flushes, and vice versa.
    assert_eq!(routed(&p, 4, Level::L2, &sparse(&[0, 1, 2])), [4]);
    assert_eq!(routed(&p, 4, Level::L2, &ProcessorSet::All), [4]);
    // A large set walks the VM's members instead; same answer.
    let big: Vec<u32> = (0..200).collect();
    assert_eq!(routed(&p, 0, Level::L2, &sparse(&big)), [0, 1, 2, 3]);
    // Loading another context and releasing one move the index.
    p.load_nested_context(2, ctx(7, 9)).unwrap();
    p.release_nested_context(1).unwrap();
    assert_eq!(routed(&p, 0, Level::L2, &sparse(&[0, 1, 9])), [2]);
    p.load_nested_context(6, ctx(7, 9)).unwrap();
    assert_eq!(routed(&p, 0, Level::L2, &sparse(&[9])), [2, 6]);
    assert_eq!(p.loaded_nested_context(6), Some(ctx(7, 9)));
    assert_eq!(p.loaded_nested_context(1), None);
    // The caller's context decides the VM; without one, status 3.
    let mut out = VcpuSet::default();
    assert_eq!(
        p.route(5, Level::L2, &ProcessorSet::All, &mut out),
        Err(HvStatus::INVALID_HYPERCALL_INPUT)
    );
    assert!(matches!(
        p.release_nested_context(8),
        Err(EngineError::NoSuchVcpu(8))
    ));
}

// conformance: R30 R31 R32 R29
#[test]
fn l2_hypercalls_queue_on_the_l2_queue_and_report_the_tlb_lock() {
    let p = l2_partition(8);
    let mem = memory();
    nested_setup(&p);
    let k = RecordingKicker::default();
    let c = Call::new(FlushCall::ListEx, true)
        .vps(VpSet::sparse(&[0, 2]))
        .gvas(pages(2));
    mem.write_obj(0u32, GuestAddress(ASSIST_GPA)).unwrap();
    let mut regs = c.place(&mem, INPUT_GPA);
    let out = p
        .handle_hypercall(0, Level::L2, &mut regs, &mem, &k)
        .unwrap();
    assert_eq!(out.status, HvStatus::SUCCESS);
    assert!(!out.synthetic_vmexit);
    for v in [1, 3] {
        let work = p.before_entry(v).unwrap();
        assert_eq!(work.l1, QueuedFlush::None);
        assert_eq!(work.l2.ranges(), ranges(&pages(2)));
        p.after_exit(v).unwrap();
    }
    assert!(!p.has_pending(2) && !p.has_pending(4));

    // L1 holds its TLB lock: inject the synthetic exit.
    mem.write_obj(1u32, GuestAddress(ASSIST_GPA)).unwrap();
    let mut regs = c.place(&mem, INPUT_GPA);
    let out = p
        .handle_hypercall(0, Level::L2, &mut regs, &mem, &k)
        .unwrap();
    assert_eq!(out.status, HvStatus::SUCCESS);
    assert!(out.synthetic_vmexit);
    assert_eq!(p.counters().synthetic_exits, 1);

    // Unreadable partition assist page: status 3 (KVM
    // kvm_hv_hypercall_complete), no synthetic exit.
    p.load_nested_context(
        0,
        NestedContext {
            vm_id: 7,
            vp_id: 3,
            partition_assist_gpa: HOLE,
        },
    )
    .unwrap();
    let mut regs = c.place(&mem, INPUT_GPA);
    let out = p
        .handle_hypercall(0, Level::L2, &mut regs, &mem, &k)
        .unwrap();
    assert_eq!(out.status, HvStatus::INVALID_HYPERCALL_INPUT);
    assert!(!out.synthetic_vmexit);

    // Caller without a nested context: 3.
    let mut regs = c.place(&mem, INPUT_GPA);
    let out = p
        .handle_hypercall(5, Level::L2, &mut regs, &mem, &k)
        .unwrap();
    assert_eq!(out.status, HvStatus::INVALID_HYPERCALL_INPUT);

    // L2 flush not offered: 6.
    p.set_l2_offered(false);
    let mut regs = c.place(&mem, INPUT_GPA);
    let out = p
        .handle_hypercall(1, Level::L2, &mut regs, &mem, &k)
        .unwrap();
    assert_eq!(out.status, HvStatus::ACCESS_DENIED);
    // ... while L1 calls still work.
    let l1 = Call::new(FlushCall::Space, true).vps(VpSet::Mask(0b100));
    assert_eq!(call(&p, &mem, 1, Level::L1, &l1, &k), HvStatus::SUCCESS);
    assert_eq!(p.before_entry(2).unwrap().l2, QueuedFlush::None);
    p.after_exit(2).unwrap();
    let l2_path = HypercallKind {
        level: Level::L2,
        call: FlushCall::ListEx,
        input: InputKind::Fast,
    };
    assert_eq!(p.counters().path(l2_path), 5);
    assert_eq!(k.count(), 0);
}

/// An L2 ListEx from `caller` to vp_ids `vps` of its L2 VM (fast input).
fn l2_list(vps: &[u32]) -> Call {
    Call::new(FlushCall::ListEx, true)
        .vps(VpSet::sparse(vps))
        .gvas(pages(1))
}

// conformance: R30
#[test]
fn a_vcpu_back_in_l1_keeps_its_context_and_takes_the_l2_flush_at_its_next_entry() {
    let p = l2_partition(2);
    let mem = memory();
    let k = RecordingKicker::default();
    mem.write_obj(0u32, GuestAddress(ASSIST_GPA)).unwrap();
    // A (vCPU 0) enters L2 as (vm 5, vp 1), runs, and returns to L1: the
    // VMM calls nothing on the L2 exit.
    p.load_nested_context(0, ctx(5, 1)).unwrap();
    p.before_entry(0).unwrap();
    p.after_exit(0).unwrap();
    // A runs L1 code for a while (its entries carry no L2 work).
    assert_eq!(p.before_entry(0).unwrap().l2, QueuedFlush::None);
    p.after_exit(0).unwrap();
    // B (vCPU 1) in vm 5 flushes vp 1: A is a target.
    p.load_nested_context(1, ctx(5, 0)).unwrap();
    assert_eq!(routed(&p, 1, Level::L2, &sparse(&[1])), [0]);
    assert_eq!(
        call(&p, &mem, 1, Level::L2, &l2_list(&[1]), &k),
        HvStatus::SUCCESS
    );
    assert_eq!(p.counters().targets, 1);
    assert!(p.has_pending(0));
    // A's next entry (into L1 or L2) takes the L2 flush.
    let work = p.before_entry(0).unwrap();
    assert_eq!(work.l1, QueuedFlush::None);
    assert_eq!(work.l2.ranges(), ranges(&pages(1)));
    p.after_exit(0).unwrap();
    assert_eq!(p.loaded_nested_context(0), Some(ctx(5, 1)));
}

// conformance: R30
#[test]
fn after_release_the_same_flush_targets_nobody() {
    let p = l2_partition(2);
    let mem = memory();
    let k = RecordingKicker::default();
    mem.write_obj(0u32, GuestAddress(ASSIST_GPA)).unwrap();
    p.load_nested_context(0, ctx(5, 1)).unwrap();
    p.load_nested_context(1, ctx(5, 0)).unwrap();
    // L1 on A releases the enlightened VMCS (VMCLEAR, VMPTRLD of another).
    p.release_nested_context(0).unwrap();
    assert_eq!(p.loaded_nested_context(0), None);
    assert_eq!(routed(&p, 1, Level::L2, &sparse(&[1])), Vec::<usize>::new());
    assert_eq!(
        call(&p, &mem, 1, Level::L2, &l2_list(&[1]), &k),
        HvStatus::SUCCESS
    );
    assert_eq!(p.counters().targets, 0);
    assert!(!p.has_pending(0));
    assert_eq!(p.before_entry(0).unwrap().l2, QueuedFlush::None);
    p.after_exit(0).unwrap();
    // Releasing twice, or a vCPU that never entered L2, is harmless.
    p.release_nested_context(0).unwrap();
    p.release_nested_context(1).unwrap();
    assert_eq!(
        call(&p, &mem, 1, Level::L2, &l2_list(&[1]), &k),
        HvStatus::INVALID_HYPERCALL_INPUT,
        "a caller without a context cannot be routed (R31)"
    );
    // A new entry with another context is routed by the new one.
    p.load_nested_context(0, ctx(5, 1)).unwrap();
    p.load_nested_context(0, ctx(6, 1)).unwrap();
    p.load_nested_context(1, ctx(5, 0)).unwrap();
    assert_eq!(routed(&p, 1, Level::L2, &sparse(&[1])), Vec::<usize>::new());
}
