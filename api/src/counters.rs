//! The engine's scalar counters: defined once here, for the REST counters,
//! the `flush-summary` and `shutdown` events, `hvflush-remote counters`
//! and the reference VMM's run report.
//!
//! # Identities
//!
//! Totals read after the vCPUs stopped (the `shutdown` event, the run
//! report) obey:
//!
//! * `flushes_requested = targets`: one queue entry per target per request.
//! * `flushes_taken ≤ flushes_requested`. The difference is the requests
//!   **coalesced** in a target's queue (a request that found the target's
//!   flush still pending joins it: one take serves both) plus those still
//!   pending when the vCPUs stopped.
//! * `flushes_executed ≤ flushes_taken`. The difference is the flushes
//!   **merged** into one the executor had already armed (one host flush
//!   serves every take before it), plus at most one still armed per vCPU
//!   when it stopped.
//! * `preempted_flushes ≤ targets_without_kick ≤ targets`, and
//!   `kicks ≥ targets - targets_without_kick`: every other target was
//!   kicked at least once (re-kicks add to `kicks`). On the KVM userspace
//!   path a halted target is blocked inside `KVM_RUN`, so it is kicked
//!   (docs/performance.md, "Halted targets").
//! * `halted_not_waited_for ≤ targets - targets_without_kick`: only kicked
//!   targets are reported halted.
//! * Each counter only grows, so the `flush-summary` counts (each since the
//!   previous summary, the last one after the vCPUs stopped) add up to the
//!   `shutdown` totals, which are the run report's counters.
//! * On the KVM userspace path KVM's own `tlb_flush` statistic
//!   (`kernel.tlb_flushes`) is at least `flushes_executed` at any moment.
//!
//! `vmm-integration/hvflush-vmm/tests/faults.rs` checks them after a
//! SIGTERM in the middle of an 8-vCPU storm, and `hvflush-vmm soak` during
//! a long one (docs/reliability.md).

use serde::{Deserialize, Serialize};

macro_rules! engine_counters {
    ($( $(#[doc = $doc:literal])+ $field:ident => $label:literal, )*) => {
        /// The engine's scalar counters, totals since the VM started (or,
        /// in `flush-summary`, since the previous summary). JSON names are
        /// the field names; `hvflush-remote` prints the labels.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct EngineCounters {
            $( $(#[doc = $doc])+ pub $field: u64, )*
        }

        impl EngineCounters {
            /// Every counter as (JSON name, text label), in report order.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$( (stringify!($field), $label), )*];

            /// Every counter as (JSON name, text label, value), in
            /// [`Self::FIELDS`] order.
            pub fn values(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
                [$( (stringify!($field), $label, self.$field), )*].into_iter()
            }

            /// The counts since `earlier`, a previous copy of the same totals.
            pub fn since(&self, earlier: &Self) -> Self {
                Self { $( $field: self.$field.saturating_sub(earlier.$field), )* }
            }
        }
    };
}

engine_counters! {
    /// Target vCPUs addressed by successful requests.
    targets => "targets",
    /// Per-vCPU flushes queued (one per target per request).
    flushes_requested => "flushes requested",
    /// Queued flushes a target took before entering the guest and handed
    /// to the executor.
    flushes_taken => "flushes taken",
    /// Per-vCPU flushes the host confirmed it carried out. One host flush
    /// serves every flush taken since the previous one.
    flushes_executed => "flushes executed",
    /// Times the flush executor found a vCPU's registration with the host
    /// dropped (an INIT or RESET of that vCPU) and restored it.
    executor_repairs => "executor repairs",
    /// Requests turned into a flush-all (queue full, too many entries).
    flush_all_fallbacks => "flush-all fallbacks",
    /// Kicks sent to running target vCPUs (including re-kicks).
    kicks => "kicks",
    /// Targets flushed through the host's preempted marker, without a kick.
    preempted_flushes => "preempted flushes",
    /// Targets handled without a kick: outside guest mode when the request
    /// was queued (they flush on their next entry, never woken or waited
    /// for) or flushed through the preempted marker (a subset).
    targets_without_kick => "targets without a kick",
    /// Kicked targets the host reported halted right after the kick: they
    /// cannot run guest code before they take the flush, so the initiator
    /// did not wait for them (they are still woken).
    halted_not_waited_for => "halted targets not waited for",
    /// Times a kicked target did not leave guest mode in time.
    unresponsive_vcpus => "unresponsive vCPUs",
    /// Synthetic VM exits to L1 after L2 flushes (TLB lock held).
    synthetic_exits => "synthetic exits",
    /// Hypercalls answered with #UD (CPL > 0, or not in 64-bit mode).
    invalid_opcode_injections => "refused with #UD",
    /// Hypercall instructions while GUEST_OS_ID was 0: not Hyper-V calls,
    /// completed with -KVM_ENOSYS and never flushed.
    calls_without_guest_os_id => "refused, GUEST_OS_ID 0",
}

impl EngineCounters {
    /// The identities of the module docs that these totals break, by name
    /// (empty when every one holds). Meant for totals read after the vCPUs
    /// stopped; a live read may catch one vCPU between two of its updates.
    pub fn broken_identities(&self) -> Vec<&'static str> {
        let c = self;
        let kicked = c.targets.saturating_sub(c.targets_without_kick);
        [
            (
                c.flushes_requested == c.targets,
                "flushes_requested = targets",
            ),
            (
                c.flushes_taken <= c.flushes_requested,
                "flushes_taken <= flushes_requested",
            ),
            (
                c.flushes_executed <= c.flushes_taken,
                "flushes_executed <= flushes_taken",
            ),
            (
                c.preempted_flushes <= c.targets_without_kick,
                "preempted_flushes <= targets_without_kick",
            ),
            (
                c.targets_without_kick <= c.targets,
                "targets_without_kick <= targets",
            ),
            (c.kicks >= kicked, "kicks >= targets - targets_without_kick"),
            (
                c.halted_not_waited_for <= kicked,
                "halted_not_waited_for <= targets - targets_without_kick",
            ),
        ]
        .into_iter()
        .filter_map(|(holds, name)| (!holds).then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::EngineCounters;

    #[test]
    fn identities_hold_for_consistent_totals_and_name_what_breaks() {
        let ok = EngineCounters {
            targets: 10,
            flushes_requested: 10,
            flushes_taken: 8,
            flushes_executed: 7,
            kicks: 5,
            preempted_flushes: 1,
            targets_without_kick: 6,
            ..EngineCounters::default()
        };
        assert!(ok.broken_identities().is_empty());
        assert!(EngineCounters::default().broken_identities().is_empty());
        let unkicked = EngineCounters { kicks: 3, ..ok };
        assert_eq!(
            unkicked.broken_identities(),
            ["kicks >= targets - targets_without_kick"]
        );
        let lost = EngineCounters {
            flushes_executed: 9,
            targets_without_kick: 11,
            ..ok
        };
        assert_eq!(
            lost.broken_identities(),
            [
                "flushes_executed <= flushes_taken",
                "targets_without_kick <= targets"
            ]
        );
    }
}
