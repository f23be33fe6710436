//! Loom model of the completion protocol through the public API.
//!
//! Run (compiled only with `--cfg loom`; the protocol's atomics and mutexes
//! come from loom then, see hyperv-flush/src/engine/sync.rs):
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!   CARGO_TARGET_DIR=target/loom \
//!   cargo test -p hyperv-flush --test loom_completion --release
//! ```
//!
//! loom treats SeqCst loads and stores as AcqRel, so the protocol states
//! its store→load orderings with `fence(SeqCst)` and takes the pending flag
//! with `compare_exchange`. The models fail when the wait is removed or the
//! entry checks the flag before marking itself in the guest.
//!
//! A target vCPU thread loops `before_entry` → guest runs → `after_exit`
//! twice; an initiator calls `Partition::flush` with a kicker that only
//! records kicks (the target leaves the guest by itself). Checked on every
//! interleaving: when the initiator returns, the target is not inside a
//! guest run that began before the request without having flushed, and the
//! flush is either taken or still pending for its next entry (never lost).
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use hyperv_flush::abi::{GvaRange, HvFlushFlags, MAX_SPARSE_BANKS};
use hyperv_flush::decode::{FlushCall, FlushRequest, GvaList, MAX_QUEUED_RANGES, ProcessorSet};
use hyperv_flush::engine::{Level, Partition, PartitionConfig, QueuedFlush, VcpuKicker};
use loom::sync::Arc;
use loom::thread;

const TARGET: usize = 1;
const CALLER: usize = 0;

/// The target's run state as the test sees it, packed in one loom atomic
/// so the initiator reads it as one consistent snapshot: flushes taken so
/// far × 4 + `OUTSIDE` / `IN_RUN_FLUSHED` / `IN_RUN_STALE`.
#[derive(Default)]
struct TargetView {
    word: loom::sync::atomic::AtomicUsize,
}

const OUTSIDE: usize = 0;
/// Guest code runs, and this run's entry took the flush.
const IN_RUN_FLUSHED: usize = 1;
/// Guest code runs on translations from before this entry's check.
const IN_RUN_STALE: usize = 2;

impl TargetView {
    fn snapshot(&self) -> (usize, usize) {
        let w = self.word.load(SeqCst);
        (w >> 2, w & 3)
    }
}

#[derive(Default)]
struct RecordingKicker {
    kicks: AtomicUsize,
}

impl VcpuKicker for RecordingKicker {
    fn kick(&self, vcpu: usize) {
        assert_eq!(vcpu, TARGET);
        // No-op beyond recording: the modelled target exits by itself.
        self.kicks.fetch_add(1, SeqCst);
    }
}

fn range() -> GvaRange {
    GvaRange {
        start: 0x7000_0000,
        pages: 1,
    }
}

/// A List request for one GVA on VP 1.
fn request() -> FlushRequest {
    request_of(ranges_one())
}

fn ranges_one() -> GvaList {
    let mut ranges = [GvaRange::default(); MAX_QUEUED_RANGES];
    ranges[0] = range();
    GvaList::Ranges { ranges, len: 1 }
}

/// A request on VP 1 flushing `gvas` (a full flush takes the lock-free
/// path of the queue).
fn request_of(gvas: GvaList) -> FlushRequest {
    let mut banks = [0u64; MAX_SPARSE_BANKS];
    banks[0] = 1 << TARGET;
    FlushRequest {
        call: FlushCall::List,
        fast: true,
        address_space: 0,
        flags: HvFlushFlags::new(),
        processors: ProcessorSet::Sparse {
            valid_bank_mask: 1,
            banks,
        },
        gvas,
        rep_count: 1,
        too_many_entries: false,
    }
}

fn run_target(p: &Partition, view: &TargetView, runs: usize) {
    let mut flushes = 0;
    for _ in 0..runs {
        let work = p.before_entry(TARGET).unwrap();
        let state = if work.is_some() {
            assert!(
                work.l1 == QueuedFlush::All || work.l1.ranges() == [range()],
                "{:?}",
                work.l1
            );
            assert_eq!(work.l2, QueuedFlush::None);
            flushes += 1;
            IN_RUN_FLUSHED
        } else {
            IN_RUN_STALE
        };
        // Guest code runs between these two stores (loom may switch here).
        view.word.store(flushes * 4 + state, SeqCst);
        view.word.store(flushes * 4 + OUTSIDE, SeqCst);
        p.after_exit(TARGET).unwrap();
    }
}

/// Checks the guarantee at the moment `Partition::flush` returned: the
/// target is not running guest code on stale translations. A run that did
/// not flush at entry is fine only if an earlier entry already took this
/// (the only) request.
fn check_on_return(view: &TargetView) {
    let (flushes, state) = view.snapshot();
    if state == IN_RUN_STALE {
        assert!(flushes > 0, "initiator returned while the target ran stale");
    }
}

/// After both threads are done: the flush was taken exactly once, earlier
/// or at the next entry.
fn check_no_lost_flush(p: &Partition, view: &TargetView) {
    let taken_later = usize::from(p.before_entry(TARGET).unwrap().is_some());
    p.after_exit(TARGET).unwrap();
    let (flushes, _) = view.snapshot();
    assert_eq!(flushes + taken_later, 1, "flush lost or taken twice");
}

/// One request from the caller while the target enters the guest twice.
fn model_running_target(request: FlushRequest) {
    loom::model(move || {
        let p = Arc::new(Partition::new(PartitionConfig::new(2)).unwrap());
        let view = Arc::new(TargetView::default());
        let target = {
            let (p, view) = (p.clone(), view.clone());
            thread::spawn(move || run_target(&p, &view, 2))
        };
        let kicker = RecordingKicker::default();
        p.flush(CALLER, Level::L1, &request, &kicker).unwrap();
        check_on_return(&view);
        target.join().unwrap();
        check_no_lost_flush(&p, &view);
        // Kicks only ever go to a target seen in the guest; at most one
        // per request here (no re-kick without time under loom).
        assert!(kicker.kicks.load(SeqCst) <= 1);
    });
}

#[test]
fn flush_completes_against_a_running_target() {
    model_running_target(request());
}

#[test]
fn full_flush_completes_against_a_running_target() {
    model_running_target(request_of(GvaList::All));
}

#[test]
fn flush_never_waits_for_a_stopped_target() {
    loom::model(|| {
        let p = Arc::new(Partition::new(PartitionConfig::new(2)).unwrap());
        let view = Arc::new(TargetView::default());
        let target = {
            let (p, view) = (p.clone(), view.clone());
            thread::spawn(move || {
                run_target(&p, &view, 1);
                p.vcpu_stopped(TARGET).unwrap();
            })
        };
        let kicker = RecordingKicker::default();
        p.flush(CALLER, Level::L1, &request(), &kicker).unwrap();
        check_on_return(&view);
        target.join().unwrap();
        assert!(!p.in_guest(TARGET));
    });
}
