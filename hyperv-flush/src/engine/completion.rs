//! The completion protocol, once for all backends.
//!
//! Target vCPU thread, every loop iteration (see `Partition::before_entry`):
//! clear its own "immediate exit" request, mark itself `IN_GUEST` (SeqCst),
//! fence (SeqCst), take its pending flag (compare-exchange) and, if set,
//! drain its queues and full-flush flags and arm the flush; enter the
//! guest; on return mark itself `OUTSIDE` and bump its exit counter.
//!
//! Initiator, per request: queue on every target (a full flush is a flag,
//! set without the queue lock) and set its pending flag (Release); fence
//! (SeqCst); then for each target, read its exit counter and run state; a
//! target `IN_GUEST` is kicked and waited for until its exit counter moves
//! or its mark clears. The two fenced store→load pairs guarantee that
//! either the target sees the pending flag (it flushes before entering) or
//! the initiator sees the target in the guest (and kicks it).
//! Targets outside the guest are never woken: they flush on their way in.
//! A kicked target the backend reports halted after the kick (its signal
//! pending, so it cannot enter the guest without returning to the VMM) is
//! not waited for (`VcpuKicker::kick_and_check_halted`).
//! Verified end to end on KVM with tracepoints (docs/host-facts.md §2) and by the
//! loom model in `tests/loom_completion.rs`.

use std::time::Duration;

use super::sync::Ordering::SeqCst;
use super::vcpu_slot::{IN_GUEST, VcpuSlot};

/// How a backend makes a running vCPU leave guest mode.
pub trait VcpuKicker {
    /// Makes `vcpu` leave guest mode soon (KVM: set its `immediate_exit`
    /// and signal its thread). Called only for vCPUs marked in the guest;
    /// may be called again for the same wait (re-kick).
    fn kick(&self, vcpu: usize);

    /// If the host reports `vcpu` as preempted, marks its flush in a way
    /// the host performs before the vCPU runs guest code again (KVM: the
    /// steal-time `PREEMPTED → PREEMPTED|FLUSH` compare-and-exchange) and
    /// returns true; the initiator then neither kicks nor waits.
    fn flush_if_preempted(&self, _vcpu: usize) -> bool {
        false
    }

    /// Kicks `vcpu` like [`Self::kick`], then returns true only if the
    /// host guarantees that it runs no guest code before it has left
    /// `KVM_RUN` (and so passed `Partition::before_entry`, which takes the
    /// flush): KVM, when the kick's signal is pending and the vCPU reads as
    /// blocked in `kvm_vcpu_block()` (a halt). The initiator then does not
    /// wait for it. The target is still woken; see docs/performance.md,
    /// "Halted targets". Default: kick, false.
    fn kick_and_check_halted(&self, vcpu: usize) -> bool {
        self.kick(vcpu);
        false
    }
}

/// Bounds of the wait for kicked targets: never silent, never lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Kick again if the target has not left the guest after this long
    /// (covers a signal that raced with the target's entry).
    pub rekick_after: Duration,
    /// Report the target as unresponsive (counter + observer) after this
    /// long; the wait continues, since returning early would let the
    /// target run on stale translations.
    pub report_after: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self {
            rekick_after: Duration::from_millis(5),
            report_after: Duration::from_secs(1),
        }
    }
}

/// Whether `target` is still inside the guest run that `exits` named.
#[inline]
pub(crate) fn still_in_guest(target: &VcpuSlot, exits: u64) -> bool {
    target.exits.load(SeqCst) == exits && target.state.load(SeqCst) == IN_GUEST
}

/// Snapshot for the wait list: `Some(exit count)` if `target` must be
/// kicked and waited for.
#[inline]
pub(crate) fn needs_kick(target: &VcpuSlot) -> Option<u64> {
    let exits = target.exits.load(SeqCst);
    (target.state.load(SeqCst) == IN_GUEST).then_some(exits)
}

/// A clock for the wait loop: real time normally, none under loom.
pub(crate) struct WaitClock {
    #[cfg(not(loom))]
    start: std::time::Instant,
    spins: u32,
}

impl WaitClock {
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(not(loom))]
            start: std::time::Instant::now(),
            spins: 0,
        }
    }

    /// Time since the wait started.
    pub(crate) fn elapsed(&self) -> Duration {
        #[cfg(not(loom))]
        {
            self.start.elapsed()
        }
        #[cfg(loom)]
        {
            Duration::ZERO
        }
    }

    /// Backs off: a short spin first (a running target exits within a few
    /// microseconds), then a few yields, then short sleeps. Sleeping matters
    /// under overcommit: a kicked target that is runnable but not running
    /// needs this CPU to leave the guest, and `sched_yield` alone does not
    /// reliably hand it over.
    pub(crate) fn pause(&mut self) {
        self.spins = self.spins.saturating_add(1);
        #[cfg(not(loom))]
        match self.spins {
            0..64 => std::hint::spin_loop(),
            64..80 => super::sync::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(20)),
        }
        #[cfg(loom)]
        super::sync::yield_now();
    }
}
