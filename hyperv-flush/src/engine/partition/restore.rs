//! Restoring a partition from a snapshot, before any of its vCPUs runs.

use std::sync::atomic::Ordering::{Relaxed, Release};

use super::Partition;
use crate::engine::counters::{CountersSnapshot, Refusal};

impl Partition {
    /// Continues the counters from `saved` (a snapshot's totals): they are
    /// added to vCPU 0's, so every total goes on from where it was. The
    /// latency percentiles start afresh (the snapshot holds no histogram).
    /// Call before any vCPU thread starts.
    pub fn restore_counters(&self, saved: &CountersSnapshot) {
        let Some(slot) = self.slots.first() else {
            return;
        };
        let c = &slot.counters;
        let add = |counter: &std::sync::atomic::AtomicU64, n: u64| {
            counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
        };
        for (a, n) in c.hypercalls.iter().zip(saved.hypercalls) {
            add(a, n);
        }
        for (a, n) in c.status.iter().zip(saved.status) {
            add(a, n);
        }
        // `flushes_requested` is `targets` (one queue entry per target).
        add(&c.targets, saved.targets);
        add(&c.flushes_taken, saved.flushes_taken);
        add(&c.flushes_executed, saved.flushes_executed);
        add(&c.executor_repairs, saved.executor_repairs);
        add(&c.flush_all_fallbacks, saved.flush_all_fallbacks);
        add(&c.kicks, saved.kicks);
        add(&c.preempted_flushes, saved.preempted_flushes);
        add(
            &c.kicked_targets,
            saved.targets.saturating_sub(saved.targets_without_kick),
        );
        add(&c.halted_not_waited_for, saved.halted_not_waited_for);
        add(&c.unresponsive_vcpus, saved.unresponsive_vcpus);
        add(&c.synthetic_exits, saved.synthetic_exits);
        add(
            &c.refused[Refusal::InvalidOpcode as usize],
            saved.invalid_opcode_injections,
        );
        add(
            &c.refused[Refusal::NoGuestOsId as usize],
            saved.calls_without_guest_os_id,
        );
    }

    /// Makes every vCPU flush its whole TLB, both levels, at its next
    /// entry. A restored VM's pending requests are not carried over, so
    /// this over-flushes instead (always allowed); nobody waits on it.
    pub fn flush_all_at_next_entry(&self) {
        for slot in &self.slots {
            for full in &slot.full {
                full.store(true, Release);
            }
            slot.pending.store(true, Release);
        }
    }
}
