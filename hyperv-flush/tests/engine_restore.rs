//! Restoring a partition: counters continue from the saved totals, and
//! every vCPU flushes everything at its first entry.

use hyperv_flush::engine::{CountersSnapshot, Partition, PartitionConfig, QueuedFlush};

#[test]
fn counters_continue_from_the_saved_totals() {
    let p = Partition::new(PartitionConfig::new(4)).unwrap();
    let mut saved = CountersSnapshot {
        targets: 7,
        flushes_taken: 6,
        flushes_executed: 5,
        kicks: 3,
        calls_without_guest_os_id: 2,
        invalid_opcode_injections: 1,
        ..Default::default()
    };
    saved.hypercalls[3] = 11;
    saved.status[0] = 11;
    p.restore_counters(&saved);
    let got = p.counters();
    assert_eq!(got.targets, 7);
    assert_eq!(got.flushes_requested, 7);
    assert_eq!(got.flushes_taken, 6);
    assert_eq!(got.flushes_executed, 5);
    assert_eq!(got.kicks, 3);
    assert_eq!(got.calls_without_guest_os_id, 2);
    assert_eq!(got.invalid_opcode_injections, 1);
    assert_eq!(got.hypercalls[3], 11);
    assert_eq!(got.total_hypercalls(), 11);
    // Twice is additive: restore runs once, into a fresh partition.
    p.restore_counters(&saved);
    assert_eq!(p.counters().targets, 14);
}

#[test]
fn every_vcpu_flushes_everything_at_its_first_entry_after_a_restore() {
    let p = Partition::new(PartitionConfig::new(3)).unwrap();
    p.flush_all_at_next_entry();
    for v in 0..3 {
        assert!(p.has_pending(v));
        let pending = p.before_entry(v).unwrap();
        assert_eq!(pending.l1, QueuedFlush::All, "vCPU {v}");
        assert_eq!(pending.l2, QueuedFlush::All, "vCPU {v}");
        p.after_exit(v).unwrap();
        // Once: the next entry has nothing.
        assert!(!p.before_entry(v).unwrap().is_some());
        p.after_exit(v).unwrap();
    }
    assert_eq!(p.counters().flushes_taken, 6);
}
