//! Loom model of register / kick / unregister through `KickSlot`: once a
//! vCPU thread's unregistration has returned, no kicker acts on what it
//! registered (its run page, its thread), and a kick either reaches the
//! registered value or finds none (never both, never a stale one).
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!   cargo test -p hyperv-flush --test loom_kick_slot --release
//! ```
#![cfg(loom)]

use hyperv_flush::engine::KickSlot;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

/// Stands for a registration: the vCPU's run page and thread. `gone` is
/// set by the vCPU thread once it unregistered (its page may be unmapped
/// and its thread may have ended from then on).
#[derive(Default)]
struct Target {
    gone: AtomicBool,
    kicks: AtomicUsize,
}

#[test]
fn no_kick_reaches_a_vcpu_after_it_unregistered() {
    loom::model(|| {
        let slot = Arc::new(KickSlot::<Arc<Target>>::default());
        let target = Arc::new(Target::default());
        slot.set(Arc::clone(&target));

        let kicker = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                for _ in 0..2 {
                    slot.with(|t| {
                        assert!(!t.gone.load(SeqCst), "kick after unregister");
                        t.kicks.fetch_add(1, SeqCst);
                    });
                }
            })
        };
        // The vCPU thread stops: unregister, then its resources go away.
        let old = slot.clear().expect("registered");
        old.gone.store(true, SeqCst);
        kicker.join().unwrap();
        assert!(target.kicks.load(SeqCst) <= 2);
    });
}

#[test]
fn a_re_registered_vcpu_gets_kicks_only_on_its_new_registration() {
    loom::model(|| {
        let slot = Arc::new(KickSlot::<Arc<Target>>::default());
        let first = Arc::new(Target::default());
        slot.set(Arc::clone(&first));

        let kicker = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                slot.with(|t| {
                    assert!(!t.gone.load(SeqCst), "kick after unregister");
                    t.kicks.fetch_add(1, SeqCst);
                });
            })
        };
        // Hot-unplug then re-add of the same slot on a new thread.
        slot.clear().expect("registered").gone.store(true, SeqCst);
        let second = Arc::new(Target::default());
        slot.set(Arc::clone(&second));
        kicker.join().unwrap();
        // Between unregister and re-register the kick finds nobody: the
        // thread was not running the vCPU then.
        let total = first.kicks.load(SeqCst) + second.kicks.load(SeqCst);
        assert!(total <= 1, "one kick reached {total} registrations");
    });
}
