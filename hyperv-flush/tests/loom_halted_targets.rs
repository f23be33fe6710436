//! Loom model of the proposed kick-free flush of halted targets (set the
//! steal-time FLUSH bit, then read the target's `blocking` statistic; skip
//! the kick when it reads 1), against KVM's halt path
//! (`kvm_vcpu_block()` in virt/kvm/kvm_main.c, `vcpu_enter_guest()` and
//! `kvm_arch_vcpu_load()` in arch/x86/kvm/x86.c). It shows the two
//! orderings of a halted target's wake-up:
//!
//! * it sleeps in `schedule()` and is switched back in: the preempt
//!   notifier's `kvm_arch_vcpu_load()` requests `KVM_REQ_STEAL_UPDATE`, so
//!   `record_steal_time()` consumes the bit before guest code runs (sound);
//! * `kvm_vcpu_check_block()` already sees an event (a timer, an interrupt,
//!   a signal) right after `blocking = 1`, so the loop breaks without
//!   `schedule()`, no notifier runs, nothing requests a steal-time update,
//!   and the guest runs with the bit still set (unsound).
//!
//! The model asserts that loom finds the second ordering: the fast path
//! would let an initiator return while a target runs stale, so the
//! component keeps kicking halted targets (docs/performance.md).
//!
//! The second model is what the component does instead
//! (`VcpuKicker::kick_and_check_halted`): kick first (the signal is
//! pending once `tgkill` returns), then read `blocking`, and skip only the
//! *wait* when it reads 1. Loom finds no interleaving in which such a
//! target enters the guest without first returning to the VMM, and it
//! does find one when the two steps are swapped.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!   cargo test -p hyperv-flush --test loom_halted_targets --release
//! ```
#![cfg(loom)]

use std::sync::atomic::{AtomicBool as StdBool, Ordering::Relaxed};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering::SeqCst, fence};
use loom::thread;

/// A halted target vCPU as KVM keeps it, plus what the guest saw.
#[derive(Default)]
struct Target {
    /// Bit 1 of the steal-time record's `preempted` byte.
    flush_bit: AtomicBool,
    /// `vcpu->stat.generic.blocking`.
    blocking: AtomicBool,
    /// An event that makes `kvm_vcpu_check_block()` return at once.
    event: AtomicBool,
    /// Guest code ran with the flush bit still set.
    ran_stale: AtomicBool,
}

/// KVM's wake-up of a halted vCPU, up to its first guest instruction.
fn halted_vcpu(t: &Target) {
    t.blocking.store(true, SeqCst);
    // kvm_vcpu_check_block(): an event already there means no schedule().
    let switched_in = !t.event.load(SeqCst);
    t.blocking.store(false, SeqCst);
    // vcpu_enter_guest(): record_steal_time() only on KVM_REQ_STEAL_UPDATE,
    // which only kvm_arch_vcpu_load() (sched-in) or an MSR write requests.
    if switched_in {
        t.flush_bit.swap(false, SeqCst);
    }
    if t.flush_bit.load(SeqCst) {
        t.ran_stale.store(true, SeqCst);
    }
}

/// The proposed initiator: set the bit, and return at once if the target
/// reads as blocked. Returns whether it returned without a kick.
fn fast_path_initiator(t: &Target) -> bool {
    t.flush_bit.fetch_or(true, SeqCst);
    t.blocking.load(SeqCst)
}

#[test]
fn loom_finds_a_target_running_stale_after_a_kick_free_flush() {
    // Outside loom: set by any interleaving that breaks the guarantee.
    static BROKEN: StdBool = StdBool::new(false);
    static SOUND_WHEN_SWITCHED: StdBool = StdBool::new(true);
    loom::model(|| {
        let t = Arc::new(Target::default());
        let vcpu = {
            let t = Arc::clone(&t);
            thread::spawn(move || halted_vcpu(&t))
        };
        let interrupt = {
            let t = Arc::clone(&t);
            thread::spawn(move || t.event.store(true, SeqCst))
        };
        let returned_without_kick = fast_path_initiator(&t);
        vcpu.join().unwrap();
        interrupt.join().unwrap();
        if returned_without_kick && t.ran_stale.load(SeqCst) {
            BROKEN.store(true, Relaxed);
            // The unsound ordering needs the event that skipped schedule().
            if !t.event.load(SeqCst) {
                SOUND_WHEN_SWITCHED.store(false, Relaxed);
            }
        }
    });
    assert!(
        BROKEN.load(Relaxed),
        "loom found no interleaving in which the guest ran stale after a kick-free flush"
    );
    assert!(
        SOUND_WHEN_SWITCHED.load(Relaxed),
        "a target that slept and was switched back in ran stale"
    );
}

/// A vCPU blocked in `kvm_vcpu_block()` when the request comes, until it
/// either runs guest code or returns to the VMM (which takes the flush).
#[derive(Default)]
struct KickedTarget {
    /// `TIF_SIGPENDING` of the vCPU thread.
    signal: AtomicBool,
    /// `vcpu->stat.generic.blocking`.
    blocking: AtomicBool,
    /// `vcpu->mode == IN_GUEST_MODE`.
    in_guest_mode: AtomicBool,
    /// It ran guest code without passing through the VMM.
    entered_guest: AtomicBool,
}

fn blocked_vcpu(t: &KickedTarget) {
    t.blocking.store(true, SeqCst);
    // kvm_vcpu_check_block() returns (a signal, an event or a wake-up),
    // with or without schedule(): the rest does not depend on it.
    t.blocking.store(false, SeqCst);
    // vcpu_enter_guest(): smp_store_mb(mode, IN_GUEST_MODE), then
    // kvm_vcpu_exit_request() sees a pending signal and cancels the entry.
    // (loom models SeqCst accesses as AcqRel; the fences are the barriers.)
    t.in_guest_mode.store(true, SeqCst);
    fence(SeqCst);
    if t.signal.load(SeqCst) {
        t.in_guest_mode.store(false, SeqCst);
        return; // KVM_RUN returns EINTR: before_entry takes the flush.
    }
    t.entered_guest.store(true, SeqCst);
}

/// Returns whether the initiator skipped the wait.
fn kick_then_check(t: &KickedTarget, kick_first: bool) -> bool {
    if kick_first {
        // tgkill: a locked set of TIF_SIGPENDING inside a syscall.
        t.signal.store(true, SeqCst);
        fence(SeqCst);
        t.blocking.load(SeqCst)
    } else {
        let blocked = t.blocking.load(SeqCst);
        t.signal.store(true, SeqCst);
        fence(SeqCst);
        blocked
    }
}

/// Whether some interleaving lets a target the initiator did not wait for
/// enter the guest without returning to the VMM.
fn stale_after_skipped_wait(kick_first: bool) -> bool {
    let broken = std::sync::Arc::new(StdBool::new(false));
    let seen = std::sync::Arc::clone(&broken);
    // Every interleaving: the model is small, and the unsound one needs
    // more preemptions than CI's LOOM_MAX_PREEMPTIONS=2 allows.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = None;
    model.check(move || {
        let t = Arc::new(KickedTarget::default());
        let vcpu = {
            let t = Arc::clone(&t);
            thread::spawn(move || blocked_vcpu(&t))
        };
        let skipped_wait = kick_then_check(&t, kick_first);
        // What the target does after the initiator returned: it entered the
        // guest after the blocking read, or was already in it.
        vcpu.join().unwrap();
        if skipped_wait && t.entered_guest.load(SeqCst) {
            seen.store(true, Relaxed);
        }
    });
    broken.load(Relaxed)
}

#[test]
fn loom_kick_then_blocking_skips_only_waits_that_are_not_needed() {
    assert!(
        !stale_after_skipped_wait(true),
        "a target read as blocked after its kick entered the guest without passing the VMM"
    );
    assert!(
        stale_after_skipped_wait(false),
        "reading blocking before the kick should be unsound, and the model should show it"
    );
}
