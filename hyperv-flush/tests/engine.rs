//! The engine through its public API: routing, queues, counters, L2
//! (Direct Virtual Flush), the completion protocol with real threads, and
//! the observer. Each test names the row of `docs/conformance.md` it covers.

#[allow(dead_code)]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Call, INPUT_GPA, RecordingKicker, VpSet, call, memory, pages, ranges, routed};
use hyperv_flush::abi::{HvCallCode, HvStatus};
use hyperv_flush::decode::{FlushCall, ProcessorSet};
use hyperv_flush::engine::{
    EngineError, FlushObserver, HypercallKind, InputKind, Level, NestedContext, Partition,
    PartitionConfig, QueuedFlush, VcpuKicker, VcpuSet, WaitPolicy,
};
use vm_memory::{Bytes, GuestAddress};

fn partition(vcpus: usize) -> Partition {
    Partition::new(PartitionConfig::new(vcpus)).expect("partition")
}

fn l2_partition(vcpus: usize) -> Partition {
    let mut config = PartitionConfig::new(vcpus);
    config.l2 = true;
    Partition::new(config).expect("partition")
}

fn sparse(vps: &[u32]) -> ProcessorSet {
    ProcessorSet::from_vps(vps)
}

/// A List call (memory input) from `caller` to the VPs in `mask`.
fn list_call(mask: u64, gvas: Vec<u64>) -> Call {
    Call::new(FlushCall::List, false)
        .vps(VpSet::Mask(mask))
        .gvas(gvas)
}

// conformance: R26
#[test]
fn identity_routing_and_all() {
    let p = partition(8);
    assert_eq!(routed(&p, 0, Level::L1, &sparse(&[1, 3])), [1, 3]);
    assert_eq!(
        routed(&p, 0, Level::L1, &ProcessorSet::All),
        (0..8).collect::<Vec<_>>()
    );
    // VPs without a vCPU are ignored, like KVM's sparse_set_to_vcpu_mask.
    assert_eq!(routed(&p, 0, Level::L1, &sparse(&[7, 8, 100, 4095])), [7]);
    assert_eq!(p.vp_index(5), Some(5));
    assert!(matches!(
        Partition::new(PartitionConfig::new(0)),
        Err(EngineError::VcpuCount(0))
    ));
    assert!(matches!(
        Partition::new(PartitionConfig::new(4097)),
        Err(EngineError::VcpuCount(4097))
    ));
}

// conformance: R26
#[test]
fn requests_reach_every_target_whatever_the_partition_size() {
    // The engine routes into a target set sized to the partition (1, 4, 16
    // or 64 words): the sizes around each step.
    let mem = memory();
    let k = RecordingKicker::default();
    for n in [1usize, 64, 65, 256, 257, 1024, 1025] {
        let events = Arc::new(Events::default());
        let p = partition(n).with_observer(events.clone());
        let last = n - 1;
        let some = [0, n / 2, last].map(|v| v as u32);
        let ex = Call::new(FlushCall::SpaceEx, false).vps(VpSet::sparse(&some));
        let all = list_call(0, pages(1));
        for c in [&ex, &all] {
            assert_eq!(call(&p, &mem, 0, Level::L1, c, &k), HvStatus::SUCCESS);
        }
        let mut want_some: Vec<usize> = some.iter().map(|&v| v as usize).collect();
        want_some.dedup();
        let completed = events.completed.lock().unwrap();
        assert_eq!(completed[0], (0, Level::L1, want_some), "{n} vCPUs");
        assert_eq!(completed[1], (0, Level::L1, (0..n).collect()), "{n} vCPUs");
        assert!(p.has_pending(last), "{n} vCPUs");
        assert_eq!(p.counters().targets, (completed[0].2.len() + n) as u64);
    }
}

/// What routing `set` at L1 must give: every vCPU whose VP index is in it.
fn model_route(p: &Partition, set: &ProcessorSet) -> Vec<usize> {
    (0..p.vcpu_count())
        .filter(|&v| p.vp_index(v).is_some_and(|vp| set.contains(vp)))
        .collect()
}

// conformance: R26
#[test]
fn routing_follows_the_vp_indices_in_and_out_of_the_identity() {
    // While every vCPU has its own index, whole banks are taken as vCPU
    // words; otherwise each VP is looked up. Both must give the model.
    for n in [8usize, 65, 130] {
        let p = partition(n);
        let sets = [
            sparse(&[0, 1, 7, 63, 64, 65, 129, 130, 200, 4095]),
            ProcessorSet::Mask(u64::MAX),
            ProcessorSet::Mask(0b1000_0001),
            sparse(&[]),
            ProcessorSet::All,
        ];
        let check = |when: &str| {
            for set in &sets {
                let got = routed(&p, 0, Level::L1, set);
                assert_eq!(got, model_route(&p, set), "{n} vCPUs, {when}, {set:?}");
            }
        };
        check("identity");
        // vCPU 7 moves to VP 4095, vCPU 0 to 7's old index, then back.
        p.set_vp_index(7, 4095).unwrap();
        check("one moved");
        p.set_vp_index(0, 7).unwrap();
        check("two moved");
        p.set_vp_index(0, 0).unwrap();
        p.set_vp_index(7, 7).unwrap();
        check("identity again");
        assert_eq!(routed(&p, 0, Level::L1, &sparse(&[7, 4095])), [7]);
    }
}

// conformance: R26
#[test]
fn strided_and_sparse_vp_indices() {
    let p = partition(8);
    // Highest first, so no index is still held by its identity owner.
    for v in (0..8).rev() {
        p.set_vp_index(v, 64 * v as u32 + 5).unwrap();
    }
    p.set_vp_index(7, 4095).unwrap();
    assert_eq!(p.vp_index(1), Some(69));
    assert_eq!(p.vp_index(7), Some(4095));
    assert_eq!(routed(&p, 0, Level::L1, &sparse(&[5, 69, 453])), [0, 1]);
    assert_eq!(routed(&p, 0, Level::L1, &sparse(&[4095, 1, 2, 3])), [7]);
    // The old index of vCPU 7 was released.
    assert_eq!(
        routed(&p, 0, Level::L1, &sparse(&[453])),
        Vec::<usize>::new()
    );
    assert!(matches!(
        p.set_vp_index(0, 4096),
        Err(EngineError::VpIndex(_))
    ));
    assert!(matches!(
        p.set_vp_index(0, 69),
        Err(EngineError::VpIndex(_))
    ));
    assert!(matches!(p.set_vp_index(8, 9), Err(EngineError::VpIndex(_))));
    // A full Ex call routes through the same map.
    let mem = memory();
    let k = RecordingKicker::default();
    let c = Call::new(FlushCall::SpaceEx, true).vps(VpSet::sparse(&[69, 4095, 6]));
    assert_eq!(call(&p, &mem, 0, Level::L1, &c, &k), HvStatus::SUCCESS);
    let pending: Vec<usize> = (0..8).filter(|v| p.has_pending(*v)).collect();
    assert_eq!(pending, [1, 7]);
}

// conformance: R25
#[test]
fn queues_hold_ranges_until_the_target_enters() {
    let p = partition(4);
    let mem = memory();
    let k = RecordingKicker::default();
    let gvas = pages(3);
    assert_eq!(
        call(&p, &mem, 0, Level::L1, &list_call(0b10, gvas.clone()), &k),
        HvStatus::SUCCESS
    );
    assert!(p.has_pending(1));
    assert!(!p.has_pending(2));
    let work = p.before_entry(1).unwrap();
    assert_eq!(work.l1.ranges(), ranges(&gvas));
    assert_eq!(work.l2, QueuedFlush::None);
    p.after_exit(1).unwrap();
    // Taken once.
    assert!(!p.before_entry(1).unwrap().is_some());
    p.after_exit(1).unwrap();
    assert_eq!(k.count(), 0, "targets outside the guest are never kicked");
}

// conformance: R25 R23
#[test]
fn overflow_and_long_lists_become_a_full_flush() {
    let p = partition(2);
    let mem = memory();
    let k = RecordingKicker::default();
    let ten = pages(10);
    call(&p, &mem, 0, Level::L1, &list_call(0b10, ten.clone()), &k);
    call(
        &p,
        &mem,
        0,
        Level::L1,
        &list_call(0b10, ten[..6].to_vec()),
        &k,
    );
    // 16 ranges: exactly the queue capacity.
    let work = p.before_entry(1).unwrap();
    assert_eq!(work.l1.ranges().len(), 16);
    p.after_exit(1).unwrap();
    assert_eq!(p.counters().flush_all_fallbacks, 0);

    call(&p, &mem, 0, Level::L1, &list_call(0b10, ten.clone()), &k);
    call(&p, &mem, 0, Level::L1, &list_call(0b10, ten.clone()), &k);
    assert_eq!(p.before_entry(1).unwrap().l1, QueuedFlush::All);
    p.after_exit(1).unwrap();
    assert_eq!(p.counters().flush_all_fallbacks, 1);

    // More than 15 entries in one request: full flush, counted.
    call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(16)), &k);
    assert_eq!(p.before_entry(1).unwrap().l1, QueuedFlush::All);
    p.after_exit(1).unwrap();
    assert_eq!(p.counters().flush_all_fallbacks, 2);
}

// conformance: R25
#[test]
fn full_flush_purges_pending_ranges() {
    let p = partition(2);
    let mem = memory();
    let k = RecordingKicker::default();
    let space = Call::new(FlushCall::Space, false).vps(VpSet::Mask(0b10));
    call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(4)), &k);
    call(&p, &mem, 0, Level::L1, &space, &k);
    assert_eq!(p.before_entry(1).unwrap().l1, QueuedFlush::All);
    p.after_exit(1).unwrap();
    // And ranges queued after a full flush are absorbed by it.
    call(&p, &mem, 0, Level::L1, &space, &k);
    call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(4)), &k);
    assert_eq!(p.before_entry(1).unwrap().l1, QueuedFlush::All);
    p.after_exit(1).unwrap();
    assert_eq!(p.counters().flush_all_fallbacks, 0);
}

/// Makes a kicked vCPU leave the guest at once, from the initiator's
/// thread (a vCPU that exits the moment it is signalled).
struct ExitingKicker<'a> {
    p: &'a Partition,
    kicks: AtomicUsize,
}

impl VcpuKicker for ExitingKicker<'_> {
    fn kick(&self, vcpu: usize) {
        self.kicks.fetch_add(1, SeqCst);
        self.p.after_exit(vcpu).unwrap();
    }
}

// conformance: R27 R24
#[test]
fn counters_per_path_status_targets_and_kicks() {
    let p = partition(8);
    let mem = memory();
    let k = ExitingKicker {
        p: &p,
        kicks: AtomicUsize::new(0),
    };
    // vCPU 2 and 3 run the guest, 4 is stopped, 5..7 are outside.
    p.before_entry(2).unwrap();
    p.before_entry(3).unwrap();
    p.vcpu_stopped(4).unwrap();
    let result = {
        let c = list_call(0b1111_1100, pages(2));
        let mut regs = c.place(&mem, INPUT_GPA);
        p.handle_hypercall(0, Level::L1, &mut regs, &mem, &k)
            .unwrap()
    };
    assert_eq!(result.status, HvStatus::SUCCESS);
    assert_eq!(result.result, 2 << 32, "rep complete = rep count");
    assert!(!result.synthetic_vmexit);
    assert_eq!(
        k.kicks.load(SeqCst),
        2,
        "only vCPUs in the guest are kicked"
    );
    let s = p.counters();
    assert_eq!(s.kicks, 2);
    assert_eq!(s.targets, 6);
    assert_eq!(s.targets_without_kick, 4, "vCPUs 4..7 were outside");
    assert_eq!(s.flushes_requested, 6);
    assert_eq!((s.flushes_taken, s.flushes_executed), (0, 0));
    let path = HypercallKind {
        level: Level::L1,
        call: FlushCall::List,
        input: InputKind::Memory,
    };
    assert_eq!(s.path(path), 1);
    assert_eq!(s.with_status(HvStatus::SUCCESS), 1);
    assert!(s.latency_p50_ns.is_some());
    for v in 2..8 {
        assert!(p.has_pending(v), "vCPU {v}");
    }
    // Targets take their flush before their next entry, each counted
    // once; it is executed only once the executor says the host did it.
    for v in [2, 3, 5] {
        let work = p.before_entry(v).unwrap();
        assert_eq!(work.levels(), 1);
        p.after_exit(v).unwrap();
        if v != 5 {
            p.flushes_executed(v, work.levels()).unwrap();
        }
    }
    let s = p.counters();
    assert_eq!((s.flushes_taken, s.flushes_executed), (3, 2));
    p.executor_repaired(5).unwrap();
    p.flushes_executed(5, 1).unwrap();
    let s = p.counters();
    assert_eq!((s.flushes_executed, s.executor_repairs), (3, 1));
    assert!(p.executor_repaired(8).is_err(), "no such vCPU");

    // Fast Space call and a rejected one.
    let c = Call::new(FlushCall::Space, true).vps(VpSet::Mask(0b10));
    call(&p, &mem, 1, Level::L1, &c, &k);
    let mut bad = Call::new(FlushCall::Space, true);
    bad.control_or = 1 << 63;
    assert_eq!(
        call(&p, &mem, 1, Level::L1, &bad, &k),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    let mut regs = common::Regs {
        control: 0x0099,
        ..Default::default()
    };
    let out = p
        .handle_hypercall(1, Level::L1, &mut regs, &mem, &k)
        .unwrap();
    assert_eq!(out.result, u64::from(HvStatus::INVALID_HYPERCALL_CODE.0));
    let s = p.counters();
    let fast_space = HypercallKind {
        level: Level::L1,
        call: FlushCall::Space,
        input: InputKind::Fast,
    };
    assert_eq!(s.path(fast_space), 2);
    assert_eq!(s.with_status(HvStatus::SUCCESS), 2);
    assert_eq!(s.with_status(HvStatus::INVALID_HYPERCALL_INPUT), 1);
    assert_eq!(s.with_status(HvStatus::INVALID_HYPERCALL_CODE), 1);
    assert_eq!(s.total_hypercalls(), 4);
    assert_eq!(
        HypercallKind::all().map(|p| s.path(p)).sum::<u64>(),
        3,
        "unknown codes have no path"
    );
    assert_eq!(k.kicks.load(SeqCst), 2);
    assert!(matches!(
        p.handle_hypercall(8, Level::L1, &mut regs, &mem, &k),
        Err(EngineError::NoSuchVcpu(8))
    ));
}

/// Kicker whose `flush_if_preempted` reports every target as preempted.
struct PreemptedKicker(AtomicUsize);

impl VcpuKicker for PreemptedKicker {
    fn kick(&self, _vcpu: usize) {
        panic!("a preempted target must not be kicked");
    }
    fn flush_if_preempted(&self, _vcpu: usize) -> bool {
        self.0.fetch_add(1, SeqCst);
        true
    }
}

// conformance: R34
#[test]
fn preempted_targets_are_neither_kicked_nor_waited_for() {
    let p = partition(2);
    let mem = memory();
    p.before_entry(1).unwrap();
    let k = PreemptedKicker(AtomicUsize::new(0));
    call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(1)), &k);
    assert_eq!(k.0.load(SeqCst), 1);
    let s = p.counters();
    assert_eq!((s.kicks, s.preempted_flushes), (0, 1));
    assert_eq!(
        s.targets_without_kick, 1,
        "preempted: handled without a kick"
    );
    assert!(p.in_guest(1));
}

/// Kicker whose kicks find every target halted (signal pending, blocked in
/// the host): the initiator must not wait for them.
struct HaltedKicker(AtomicUsize);

impl VcpuKicker for HaltedKicker {
    fn kick(&self, _vcpu: usize) {
        panic!("a halted target is kicked once, through kick_and_check_halted");
    }
    fn kick_and_check_halted(&self, _vcpu: usize) -> bool {
        self.0.fetch_add(1, SeqCst);
        true
    }
}

#[test]
fn halted_targets_are_kicked_but_not_waited_for_and_flush_on_their_way_in() {
    let p = partition(3);
    let mem = memory();
    p.before_entry(1).unwrap();
    p.before_entry(2).unwrap();
    let k = HaltedKicker(AtomicUsize::new(0));
    // Returns although neither target leaves the guest (no vCPU threads).
    call(&p, &mem, 0, Level::L1, &list_call(0b110, pages(1)), &k);
    assert_eq!(k.0.load(SeqCst), 2);
    let s = p.counters();
    assert_eq!(
        (s.kicks, s.halted_not_waited_for, s.targets_without_kick),
        (2, 2, 0)
    );
    assert!(s.unresponsive_vcpus == 0);
    for v in [1, 2] {
        assert!(p.in_guest(v) && p.has_pending(v), "vCPU {v}");
        // The pending kick brings it back through the VMM: it takes the flush.
        p.after_exit(v).unwrap();
        assert_eq!(p.before_entry(v).unwrap().levels(), 1, "vCPU {v}");
    }
}

/// Signals running vCPU threads through per-vCPU flags (the "signal +
/// immediate_exit" of a real backend).
struct FlagKicker {
    kicked: Vec<AtomicBool>,
    kicks: AtomicUsize,
    /// Kicks to swallow before delivering one (lost signals).
    swallow: AtomicUsize,
}

impl FlagKicker {
    fn new(vcpus: usize, swallow: usize) -> Self {
        Self {
            kicked: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            kicks: AtomicUsize::new(0),
            swallow: AtomicUsize::new(swallow),
        }
    }
}

impl VcpuKicker for FlagKicker {
    fn kick(&self, vcpu: usize) {
        self.kicks.fetch_add(1, SeqCst);
        if self
            .swallow
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return;
        }
        self.kicked[vcpu].store(true, SeqCst);
    }
}

/// A vCPU thread: runs the guest until kicked (or `stop`), counting runs
/// and flushes taken.
struct VcpuThread {
    runs: AtomicU64,
    flushes: AtomicU64,
    /// Set from before `before_entry` until `flushes` counts what it took.
    taking: AtomicBool,
}

impl VcpuThread {
    fn new() -> Self {
        Self {
            runs: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            taking: AtomicBool::new(false),
        }
    }

    /// Flushes taken so far, including one being taken right now.
    fn settled_flushes(&self) -> u64 {
        while self.taking.load(SeqCst) {
            thread::yield_now();
        }
        self.flushes.load(SeqCst)
    }
}

/// Stops the vCPU threads when the initiator finishes or panics, so a
/// failing assertion fails the test instead of hanging it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

fn run_vcpu(p: &Partition, vcpu: usize, k: &FlagKicker, me: &VcpuThread, stop: &AtomicBool) {
    while !stop.load(SeqCst) {
        // The run id moves before the entry mark, so an initiator that
        // sees "in guest" and then an old run id saw that old run.
        me.taking.store(true, SeqCst);
        me.runs.fetch_add(1, SeqCst);
        if p.before_entry(vcpu).unwrap().is_some() {
            me.flushes.fetch_add(1, SeqCst);
        }
        me.taking.store(false, SeqCst);
        while !k.kicked[vcpu].swap(false, SeqCst) && !stop.load(SeqCst) {
            thread::yield_now();
        }
        p.after_exit(vcpu).unwrap();
    }
    p.vcpu_stopped(vcpu).unwrap();
}

// conformance: R27
#[test]
fn initiator_returns_only_after_running_targets_left_the_guest() {
    let p = partition(4);
    let mem = memory();
    let k = FlagKicker::new(4, 0);
    let stop = AtomicBool::new(false);
    let vcpus: Vec<VcpuThread> = (0..4).map(|_| VcpuThread::new()).collect();
    let rounds = 200;
    thread::scope(|s| {
        for (v, me) in vcpus.iter().enumerate().skip(1) {
            let (p, k, stop) = (&p, &k, &stop);
            s.spawn(move || run_vcpu(p, v, k, me, stop));
        }
        let _stop = StopOnDrop(&stop);
        for round in 0..rounds {
            let target = 1 + round % 3;
            while !p.in_guest(target) {
                thread::yield_now();
            }
            let before = vcpus[target].runs.load(SeqCst);
            let flushed_before = vcpus[target].flushes.load(SeqCst);
            let status = call(
                &p,
                &mem,
                0,
                Level::L1,
                &list_call(1 << target, pages(1)),
                &k,
            );
            assert_eq!(status, HvStatus::SUCCESS);
            // Never still inside the run that predates the request.
            let in_guest = p.in_guest(target);
            let run = vcpus[target].runs.load(SeqCst);
            assert!(
                !(in_guest && run == before),
                "round {round}: vCPU {target} still in its old run"
            );
            // It flushed already, or will before its next entry.
            assert!(
                p.has_pending(target) || vcpus[target].settled_flushes() > flushed_before,
                "round {round}: flush lost"
            );
        }
    });
    let s = p.counters();
    assert!(s.kicks >= 1);
    assert_eq!(s.targets, rounds as u64);
    let flushed: u64 = vcpus.iter().map(|v| v.flushes.load(SeqCst)).sum();
    let pending = (1..4).filter(|v| p.has_pending(*v)).count() as u64;
    assert!(flushed + pending >= 1);
    assert_eq!(s.flushes_taken, flushed);
}

#[derive(Default)]
struct Events {
    first_use: Mutex<Vec<(usize, HypercallKind)>>,
    unresponsive: Mutex<Vec<(usize, usize)>>,
    overflows: Mutex<Vec<(usize, Level)>>,
    invalid: Mutex<Vec<(usize, HvCallCode, HvStatus)>>,
    synthetic: Mutex<Vec<(usize, u32)>>,
    completed: Mutex<Vec<(usize, Level, Vec<usize>)>>,
}

impl FlushObserver for Events {
    fn path_first_use(&self, caller: usize, path: HypercallKind) {
        self.first_use.lock().unwrap().push((caller, path));
    }
    fn queue_overflow(&self, target: usize, level: Level) {
        self.overflows.lock().unwrap().push((target, level));
    }
    fn invalid_input(&self, caller: usize, call: HvCallCode, status: HvStatus) {
        self.invalid.lock().unwrap().push((caller, call, status));
    }
    fn synthetic_vmexit(&self, caller: usize, tlb_lock_count: u32) {
        self.synthetic
            .lock()
            .unwrap()
            .push((caller, tlb_lock_count));
    }
    fn flush_completed(&self, caller: usize, level: Level, targets: &VcpuSet<[u64]>) {
        let targets = targets.iter().collect();
        self.completed
            .lock()
            .unwrap()
            .push((caller, level, targets));
    }
    fn vcpu_unresponsive(&self, initiator: usize, target: usize, _waited: Duration) {
        self.unresponsive.lock().unwrap().push((initiator, target));
    }
}

// conformance: R28
#[test]
fn lost_kicks_are_repeated() {
    let mut config = PartitionConfig::new(2);
    config.wait = WaitPolicy {
        rekick_after: Duration::from_millis(1),
        report_after: Duration::from_secs(3600),
    };
    let p = Partition::new(config).unwrap();
    let mem = memory();
    // The first two signals are lost; only the third reaches the vCPU.
    let k = FlagKicker::new(2, 2);
    let stop = AtomicBool::new(false);
    let me = VcpuThread::new();
    thread::scope(|s| {
        s.spawn(|| run_vcpu(&p, 1, &k, &me, &stop));
        let _stop = StopOnDrop(&stop);
        while !p.in_guest(1) {
            thread::yield_now();
        }
        call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(1)), &k);
    });
    // Two lost, then the one that arrived (a slow vCPU thread may see one
    // more re-kick before it leaves).
    assert!(k.kicks.load(SeqCst) >= 3);
    assert_eq!(p.counters().kicks, k.kicks.load(SeqCst) as u64);
    assert_eq!(p.counters().unresponsive_vcpus, 0);
}

/// Leaves the guest only once the observer reported it unresponsive.
struct DeafKicker {
    events: Arc<Events>,
    kicks: AtomicUsize,
}

impl VcpuKicker for DeafKicker {
    fn kick(&self, _vcpu: usize) {
        self.kicks.fetch_add(1, SeqCst);
    }
}

// conformance: R28
#[test]
fn unresponsive_targets_are_reported_once_and_still_waited_for() {
    let events = Arc::new(Events::default());
    let mut config = PartitionConfig::new(2);
    config.wait = WaitPolicy {
        rekick_after: Duration::from_millis(1),
        report_after: Duration::from_millis(5),
    };
    let p = Partition::new(config)
        .unwrap()
        .with_observer(events.clone());
    let mem = memory();
    let k = DeafKicker {
        events: events.clone(),
        kicks: AtomicUsize::new(0),
    };
    let exited = AtomicBool::new(false);
    thread::scope(|s| {
        p.before_entry(1).unwrap();
        s.spawn(|| {
            // The vCPU ignores kicks; it leaves only after the report, so
            // the initiator can return only if it reported and kept waiting.
            while k.events.unresponsive.lock().unwrap().is_empty() {
                thread::yield_now();
            }
            exited.store(true, SeqCst);
            p.after_exit(1).unwrap();
        });
        call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(1)), &k);
        assert!(exited.load(SeqCst), "returned before the target left");
    });
    assert_eq!(*events.unresponsive.lock().unwrap(), [(0, 1)]);
    let s = p.counters();
    assert_eq!(s.unresponsive_vcpus, 1);
    assert!(s.kicks >= 2, "re-kicked while waiting");
    assert_eq!(s.kicks, k.kicks.load(SeqCst) as u64);
}

// conformance: R07 R25 R32
#[test]
fn observer_sees_first_use_once_per_path_and_rare_events() {
    let events = Arc::new(Events::default());
    let p = l2_partition(4).with_observer(events.clone());
    let mem = memory();
    let k = RecordingKicker::default();
    for _ in 0..3 {
        call(&p, &mem, 0, Level::L1, &list_call(0b10, pages(10)), &k);
    }
    let space = Call::new(FlushCall::Space, true).vps(VpSet::Mask(0b10));
    call(&p, &mem, 0, Level::L1, &space, &k);
    call(&p, &mem, 0, Level::L1, &space, &k);
    p.load_nested_context(
        0,
        NestedContext {
            vm_id: 1,
            vp_id: 0,
            partition_assist_gpa: 0x3000,
        },
    )
    .unwrap();
    mem.write_obj(5u32, GuestAddress(0x3000)).unwrap();
    call(&p, &mem, 0, Level::L2, &space, &k);
    let mut bad = Call::new(FlushCall::List, false);
    bad.rep_count = Some(0);
    call(&p, &mem, 3, Level::L1, &bad, &k);
    assert_eq!(
        *events.first_use.lock().unwrap(),
        [
            (
                0,
                HypercallKind {
                    level: Level::L1,
                    call: FlushCall::List,
                    input: InputKind::Memory
                }
            ),
            (
                0,
                HypercallKind {
                    level: Level::L1,
                    call: FlushCall::Space,
                    input: InputKind::Fast
                }
            ),
            (
                0,
                HypercallKind {
                    level: Level::L2,
                    call: FlushCall::Space,
                    input: InputKind::Fast
                }
            ),
        ]
    );
    // The second 10-range request overflowed vCPU 1's L1 queue.
    assert_eq!(*events.overflows.lock().unwrap(), [(1, Level::L1)]);
    assert_eq!(
        *events.invalid.lock().unwrap(),
        [(
            3,
            HvCallCode::FLUSH_VIRTUAL_ADDRESS_LIST,
            HvStatus::INVALID_HYPERCALL_INPUT
        )]
    );
    assert_eq!(*events.synthetic.lock().unwrap(), [(0, 5)]);
    // One completion per successful request, naming its targets; none for
    // the rejected call.
    let completed = events.completed.lock().unwrap();
    assert_eq!(completed.len(), 6);
    assert_eq!(completed[0], (0, Level::L1, vec![1]));
    // The L2 call named VP 1 of L2 VM 1, which no vCPU runs.
    assert_eq!(completed[5], (0, Level::L2, vec![]));
}

// conformance: R25
#[test]
fn flush_api_routes_a_decoded_request() {
    let p = partition(3);
    let mem = memory();
    let c = list_call(0, pages(2));
    let mut regs = c.place(&mem, INPUT_GPA);
    let request = hyperv_flush::decode::decode(&mut regs, &mem, p.offer()).expect("valid request");
    let k = RecordingKicker::default();
    p.flush(0, Level::L1, &request, &k).unwrap();
    for v in 0..3 {
        assert_eq!(p.before_entry(v).unwrap().l1.ranges(), ranges(&pages(2)));
        p.after_exit(v).unwrap();
    }
    assert_eq!(
        p.flush(3, Level::L1, &request, &k),
        Err(HvStatus::INVALID_PARAMETER)
    );
}
