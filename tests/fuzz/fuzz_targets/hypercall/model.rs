//! The reference model of the hypercall target: what docs/conformance.md
//! says the engine must do, kept next to a real `Partition`.

use std::sync::{Arc, Mutex};

use hyperv_flush::abi::{
    GvaRange, HV_GENERIC_SET_SPARSE_4K, HvCallCode, HvStatus, HypercallControl, PAGE_SIZE,
    synthetic_exit,
};
use hyperv_flush::decode::{
    FlushCall, FlushRequest, GvaList, HypercallRegisters, Offer, ProcessorSet, decode,
};
use hyperv_flush::engine::{
    FlushObserver, HypercallKind, InputKind, Level, NestedContext, Partition, PartitionConfig,
    PendingFlush, QUEUE_CAPACITY, QueuedFlush, VcpuKicker, VcpuSet,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{CallOp, Code, Gpa, Op, Scenario, VpLayout};

/// RAM: `0..HOLE`, then `RAM_B..RAM_B_END`, which ends mid-page.
const HOLE: u64 = 0x4000;
const RAM_B: u64 = 0x8000;
const RAM_B_END: u64 = 0xA800;
/// Assist pages for L2 contexts: one in RAM, one in the hole.
const ASSIST_RAM: u64 = 0x9000;
const ASSIST_HOLE: u64 = 0x5000;
const VP_LIMIT: u32 = 4096;

/// Registers of one exit.
#[derive(Clone)]
struct Regs {
    control: u64,
    rdx: u64,
    r8: u64,
    xmm: [u128; 6],
}

impl HypercallRegisters for Regs {
    fn control(&self) -> u64 {
        self.control
    }
    fn input(&self) -> u64 {
        self.rdx
    }
    fn output(&self) -> u64 {
        self.r8
    }
    fn xmm(&mut self) -> [u128; 6] {
        self.xmm
    }
}

/// Records what the engine reports per request.
#[derive(Default)]
struct Recorder {
    completed: Mutex<Vec<(usize, Level, Vec<usize>)>>,
    overflows: Mutex<Vec<(usize, Level)>>,
}

impl FlushObserver for Recorder {
    fn flush_completed(&self, caller: usize, level: Level, targets: &VcpuSet<[u64]>) {
        let t = targets.iter().collect();
        self.completed.lock().unwrap().push((caller, level, t));
    }
    fn queue_overflow(&self, target: usize, level: Level) {
        self.overflows.lock().unwrap().push((target, level));
    }
    fn vcpu_unresponsive(&self, _: usize, target: usize, _: std::time::Duration) {
        panic!("vCPU {target} reported unresponsive: the kicker makes it leave at once");
    }
}

/// A kicker whose kicked target leaves the guest at once (as a signalled
/// vCPU thread does), so the initiator's wait ends without real threads.
struct ExitingKicker<'a> {
    partition: &'a Partition,
    preempted: bool,
    kicks: Mutex<Vec<usize>>,
    preempted_targets: Mutex<Vec<usize>>,
}

impl VcpuKicker for ExitingKicker<'_> {
    fn kick(&self, vcpu: usize) {
        self.kicks.lock().unwrap().push(vcpu);
        self.partition.after_exit(vcpu).expect("kicked vCPU exists");
    }
    fn flush_if_preempted(&self, vcpu: usize) -> bool {
        if self.preempted {
            self.preempted_targets.lock().unwrap().push(vcpu);
        }
        self.preempted
    }
}

/// The model's view of one queue (R25): up to 16 ranges, collapsed into
/// a full flush when more arrive; a request for a full flush is a
/// separate flag (completion.rs) that supersedes the ranges when taken.
#[derive(Clone, Debug, PartialEq)]
enum Ranges {
    None,
    Overflowed,
    Some(Vec<GvaRange>),
}

#[derive(Clone, Debug, PartialEq)]
struct Queue {
    ranges: Ranges,
    full: bool,
}

impl Queue {
    const EMPTY: Self = Self {
        ranges: Ranges::None,
        full: false,
    };

    /// Queues a request's GVAs; true when the ranges overflowed.
    fn push(&mut self, gvas: &GvaList) -> bool {
        let new = match gvas {
            GvaList::All => {
                self.full = true;
                return false;
            }
            GvaList::Ranges { .. } => gvas.ranges(),
        };
        match &mut self.ranges {
            Ranges::Overflowed => false,
            Ranges::None if new.len() <= QUEUE_CAPACITY => {
                self.ranges = Ranges::Some(new.to_vec());
                false
            }
            Ranges::Some(have) if have.len() + new.len() <= QUEUE_CAPACITY => {
                have.extend_from_slice(new);
                false
            }
            _ => {
                self.ranges = Ranges::Overflowed;
                true
            }
        }
    }

    fn matches(&self, got: &QueuedFlush) -> bool {
        match (&self.ranges, got) {
            (_, QueuedFlush::All) => self.full || self.ranges == Ranges::Overflowed,
            _ if self.full => false,
            (Ranges::None, QueuedFlush::None) => true,
            (Ranges::Some(want), QueuedFlush::Ranges { .. }) => want.as_slice() == got.ranges(),
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct Vcpu {
    vp: Option<u32>,
    in_guest: bool,
    pending: bool,
    queues: [Queue; 2],
    nested: Option<NestedContext>,
}

/// Counter totals the model expects.
#[derive(Default)]
struct Expected {
    calls: u64,
    status: [u64; 6],
    paths: [u64; 16],
    targets: u64,
    taken: u64,
    kicks: u64,
    preempted: u64,
    fallbacks: u64,
}

pub struct Model {
    partition: Arc<Partition>,
    recorder: Arc<Recorder>,
    mem: GuestMemoryMmap,
    offer: Offer,
    l2: bool,
    vcpus: Vec<Vcpu>,
    expected: Expected,
}

fn level_index(level: Level) -> usize {
    match level {
        Level::L1 => 0,
        Level::L2 => 1,
    }
}

impl Model {
    pub fn new(s: &Scenario) -> Self {
        let n = usize::from(s.vcpus % 64) + 1;
        let offer = Offer {
            remote_flush: s.remote_flush,
            ex_masks: s.ex_masks,
            xmm_input: s.xmm_input,
        };
        let mut config = PartitionConfig::new(n);
        config.offer = offer;
        config.l2 = s.l2;
        let recorder = Arc::new(Recorder::default());
        let partition = Partition::new(config)
            .expect("1..=64 vCPUs")
            .with_observer(recorder.clone());
        let mut vcpus = vec![
            Vcpu {
                vp: None,
                in_guest: false,
                pending: false,
                queues: [Queue::EMPTY, Queue::EMPTY],
                nested: None,
            };
            n
        ];
        let wanted: Vec<u32> = match &s.layout {
            VpLayout::Identity => (0..n as u32).collect(),
            VpLayout::Stride(k) => (0..n as u32)
                .map(|i| i * (u32::from(*k % 64) + 1))
                .collect(),
            VpLayout::Sparse(vps) => (0..n)
                .map(|i| vps.get(i).map_or(i as u32, |v| u32::from(*v) % VP_LIMIT))
                .collect(),
        };
        for (i, v) in vcpus.iter_mut().enumerate() {
            v.vp = Some(i as u32);
        }
        let mut model = Self {
            partition: Arc::new(partition),
            recorder,
            mem: GuestMemoryMmap::from_ranges(&[
                (GuestAddress(0), HOLE as usize),
                (GuestAddress(RAM_B), (RAM_B_END - RAM_B) as usize),
            ])
            .expect("fuzz guest memory"),
            offer,
            l2: s.l2,
            vcpus,
            expected: Expected::default(),
        };
        for (i, vp) in wanted.into_iter().enumerate() {
            model.set_vp(i, vp);
        }
        model
    }

    /// Assigns a VP index through the engine; the model follows the
    /// documented rules (in range, not another vCPU's).
    fn set_vp(&mut self, vcpu: usize, vp: u32) {
        let owner = self.vcpus.iter().position(|v| v.vp == Some(vp));
        let ok = vp < VP_LIMIT && owner.is_none_or(|o| o == vcpu);
        let got = self.partition.set_vp_index(vcpu, vp);
        assert_eq!(got.is_ok(), ok, "set_vp_index({vcpu}, {vp}): {got:?}");
        if ok {
            self.vcpus[vcpu].vp = Some(vp);
        }
        assert_eq!(self.partition.vp_index(vcpu), self.vcpus[vcpu].vp);
    }

    fn vcpu(&self, raw: u8) -> usize {
        usize::from(raw) % self.vcpus.len()
    }

    pub fn step(&mut self, op: &Op) {
        match op {
            Op::Call(call) => self.call(call),
            Op::Enter(v) => self.enter(self.vcpu(*v)),
            Op::Exit(v) => {
                let v = self.vcpu(*v);
                self.partition.after_exit(v).unwrap();
                self.vcpus[v].in_guest = false;
            }
            Op::SetOffer {
                remote_flush,
                ex_masks,
                xmm_input,
            } => {
                self.offer = Offer {
                    remote_flush: *remote_flush,
                    ex_masks: *ex_masks,
                    xmm_input: *xmm_input,
                };
                self.partition.set_offer(self.offer);
                assert_eq!(self.partition.offer(), self.offer);
            }
            Op::SetL2(on) => {
                self.l2 = *on;
                self.partition.set_l2_offered(*on);
            }
            Op::LoadNested {
                vcpu,
                vm_id,
                vp_id,
                assist_in_ram,
                tlb_lock_count,
            } => {
                let v = self.vcpu(*vcpu);
                let assist = if *assist_in_ram {
                    ASSIST_RAM + 8 * (v as u64 % 64)
                } else {
                    ASSIST_HOLE
                };
                if *assist_in_ram {
                    self.mem
                        .write_obj(*tlb_lock_count, GuestAddress(assist))
                        .unwrap();
                }
                let ctx = NestedContext {
                    // A few VMs, so routing meets other VMs' vCPUs.
                    vm_id: u64::from(*vm_id % 4),
                    // Mostly below 4096; some above (only "all" reaches them).
                    vp_id: u32::from(*vp_id) % (VP_LIMIT + 64),
                    partition_assist_gpa: assist,
                };
                self.partition.load_nested_context(v, ctx).unwrap();
                self.vcpus[v].nested = Some(ctx);
                assert_eq!(self.partition.loaded_nested_context(v), Some(ctx));
            }
            Op::Release(v) => {
                let v = self.vcpu(*v);
                self.partition.release_nested_context(v).unwrap();
                self.vcpus[v].nested = None;
            }
            Op::SetVpIndex { vcpu, vp } => {
                let v = self.vcpu(*vcpu);
                self.set_vp(v, u32::from(*vp) % (VP_LIMIT + 16));
            }
        }
    }

    fn enter(&mut self, v: usize) {
        if self.vcpus[v].in_guest {
            // A vCPU enters only from outside.
            self.partition.after_exit(v).unwrap();
        }
        let got: PendingFlush = self.partition.before_entry(v).unwrap();
        let model = &mut self.vcpus[v];
        model.in_guest = true;
        let mut levels = 0;
        for (level, got) in [(0, &got.l1), (1, &got.l2)] {
            assert!(got.ranges().len() <= QUEUE_CAPACITY, "queue bound");
            let want = if model.pending {
                std::mem::replace(&mut model.queues[level], Queue::EMPTY)
            } else {
                Queue::EMPTY
            };
            assert!(
                want.matches(got),
                "vCPU {v} level {level}: took {got:?}, model {want:?}"
            );
            levels += u64::from(want != Queue::EMPTY);
        }
        self.expected.taken += levels;
        model.pending = false;
        assert!(!self.partition.has_pending(v));
    }

    fn input_gpa(&self, c: &CallOp) -> u64 {
        let page = match c.gpa {
            Gpa::Ram(i) => u64::from(i % 3) * PAGE_SIZE,
            Gpa::BeforeHole => HOLE - PAGE_SIZE,
            Gpa::Hole => HOLE,
            Gpa::EndOfRam => RAM_B_END & !(PAGE_SIZE - 1),
            Gpa::TopOfSpace => !(PAGE_SIZE - 1),
            Gpa::Raw(g) => return g,
        };
        let offset = u64::from(c.offset) % PAGE_SIZE;
        page + if c.misaligned { offset } else { offset & !7 }
    }

    fn call(&mut self, c: &CallOp) {
        let caller = self.vcpu(c.caller);
        if self.vcpus[caller].in_guest {
            // The caller's own exit brought it here.
            self.partition.after_exit(caller).unwrap();
            self.vcpus[caller].in_guest = false;
        }
        let level = if c.l2 { Level::L2 } else { Level::L1 };
        let mut control = control_word(c);
        let gpa = self.input_gpa(c);
        let mut input = c.input.clone();
        let mut xmm = c.xmm;
        if let (Some(hint), Code::SpaceEx | Code::ListEx) = (c.ex_mask_hint, c.control.code) {
            // A consistent Ex header: format SPARSE_4K, a mask of `hint`
            // banks and the matching variable header size.
            input.resize(input.len().max(4), 0);
            input[2] = HV_GENERIC_SET_SPARSE_4K;
            input[3] = hint;
            xmm[0] = u128::from(hint) << 64;
            let c =
                HypercallControl::from(control).with_variable_header_size(hint.count_ones() as u16);
            control = u64::from(c) | control & HypercallControl::RESERVED_MASK;
        }
        for (i, q) in input.iter().take(512).enumerate() {
            let at = gpa.wrapping_add(8 * i as u64);
            if at / PAGE_SIZE != gpa / PAGE_SIZE {
                break;
            }
            // Parts outside RAM stay unwritten: unreadable input.
            let _ = self.mem.write_obj(*q, GuestAddress(at));
        }
        let regs = Regs {
            control,
            rdx: if control & (1 << 16) != 0 { c.rdx } else { gpa },
            r8: c.r8,
            xmm,
        };
        let expected = self.expected_status(level, &regs);
        let partition = Arc::clone(&self.partition);
        let kicker = ExitingKicker {
            partition: &partition,
            preempted: c.preempted,
            kicks: Mutex::new(Vec::new()),
            preempted_targets: Mutex::new(Vec::new()),
        };
        let outcome = partition
            .handle_hypercall(caller, level, &mut regs.clone(), &self.mem, &kicker)
            .expect("caller exists");
        let status = outcome.status;
        assert!(
            [0u16, 2, 3, 4, 6].contains(&status.0),
            "status {status:?} outside the documented set"
        );
        if let Some(want) = expected.exact {
            assert_eq!(status, want, "precedence: {c:?}");
        } else {
            assert!(
                expected.after_checks.contains(&status.0),
                "{status:?}: {c:?}"
            );
        }
        // What the engine decoded, for routing and queue expectations.
        let request = decode(&mut regs.clone(), &self.mem, self.offer);
        let completed = std::mem::take(&mut *self.recorder.completed.lock().unwrap());
        let overflows = std::mem::take(&mut *self.recorder.overflows.lock().unwrap());
        let reps = match &request {
            Ok(r) => r.rep_count,
            Err(_) => 0,
        };
        if status == HvStatus::SUCCESS {
            assert_eq!(outcome.result, u64::from(reps & 0xfff) << 32, "R24");
            assert_eq!(completed.len(), 1, "a success completes one request");
        } else {
            assert_eq!(
                outcome.result,
                u64::from(status.0),
                "failures report no reps"
            );
        }
        // A flush that happened: success, or an L2 flush whose assist page
        // was unreadable afterwards (R32, status 3 after the flush).
        if let Some((who, lvl, targets)) = completed.first() {
            assert_eq!((*who, *lvl), (caller, level));
            let request = request.expect("a completed flush decoded");
            self.check_targets(caller, level, &request, targets);
            self.apply(level, &request, targets, &overflows, &kicker);
            if status != HvStatus::SUCCESS {
                assert_eq!(level, Level::L2);
                assert_eq!(status, HvStatus::INVALID_HYPERCALL_INPUT);
            }
            let ctx = self.vcpus[caller].nested;
            let lock = ctx.and_then(|c| {
                self.mem
                    .read_obj::<u32>(GuestAddress(
                        c.partition_assist_gpa
                            .wrapping_add(synthetic_exit::PARTITION_ASSIST_TLB_LOCK_COUNT_OFFSET),
                    ))
                    .ok()
            });
            if level == Level::L2 {
                assert_eq!(status == HvStatus::SUCCESS, lock.is_some(), "R32");
            }
            assert_eq!(
                outcome.synthetic_vmexit,
                level == Level::L2 && lock.is_some_and(|l| l != 0)
            );
        } else {
            assert!(!outcome.synthetic_vmexit);
            assert!(kicker.kicks.lock().unwrap().is_empty(), "nobody kicked");
        }
        self.expected.calls += 1;
        self.expected.status[status.index().expect("known status")] += 1;
        if let Some(call) = FlushCall::from_code(HvCallCode(control as u16)) {
            let input = if control & (1 << 16) != 0 {
                InputKind::Fast
            } else {
                InputKind::Memory
            };
            self.expected.paths[HypercallKind { level, call, input }.index()] += 1;
        }
    }

    /// The documented precedence (docs/conformance.md, "Precedence in this
    /// project"): the exact status where the model can tell, else the set
    /// the remaining rules allow.
    fn expected_status(&self, level: Level, regs: &Regs) -> Expectation {
        let c = HypercallControl::from(regs.control);
        let call = FlushCall::from_code(HvCallCode(c.code()));
        let exact = |s: HvStatus| Expectation {
            exact: Some(s),
            after_checks: &[],
        };
        if let Some(call) = call {
            if level == Level::L2 && !self.l2 {
                return exact(HvStatus::ACCESS_DENIED); // R29
            }
            if !self.offer.remote_flush || (call.is_ex() && !self.offer.ex_masks) {
                return exact(HvStatus::ACCESS_DENIED); // R01-R03
            }
        }
        if c.has_reserved_bits() {
            return exact(HvStatus::INVALID_HYPERCALL_INPUT); // R04
        }
        let Some(call) = call else {
            return exact(HvStatus::INVALID_HYPERCALL_CODE); // R05
        };
        let (reps, start) = (c.rep_count(), c.rep_start());
        let rep_bad = if call.is_list() {
            reps == 0 || start >= reps // R07, R08
        } else {
            reps != 0 || start != 0 // R06
        };
        if rep_bad || (!call.is_ex() && c.variable_header_size() != 0) {
            return exact(HvStatus::INVALID_HYPERCALL_INPUT); // R09
        }
        // After the input checks, routing (R31) and the assist page (R32)
        // can only add status 3.
        if c.fast() {
            if !self.offer.xmm_input {
                return exact(HvStatus::INVALID_HYPERCALL_INPUT); // R14
            }
            return Expectation {
                exact: None,
                after_checks: &[0, 3],
            };
        }
        let gpa = regs.rdx;
        if !gpa.is_multiple_of(8) {
            return exact(HvStatus::INVALID_ALIGNMENT); // R10
        }
        if !self.mem.address_in_range(GuestAddress(gpa)) {
            return exact(HvStatus::INVALID_HYPERCALL_INPUT); // R12
        }
        let room = (PAGE_SIZE - gpa % PAGE_SIZE) / 8;
        let fixed = if call.is_ex() { 4 } else { 3 };
        if room < fixed {
            return exact(HvStatus::INVALID_ALIGNMENT); // R11: header past the page
        }
        let qword = |i: u64| {
            self.mem
                .read_obj::<u64>(GuestAddress(gpa + 8 * i))
                .map_err(|_| ())
        };
        let header: Result<Vec<u64>, ()> = (0..fixed).map(qword).collect();
        let Ok(header) = header else {
            return exact(HvStatus::INVALID_HYPERCALL_INPUT); // R12: header not RAM
        };
        if call.is_ex() {
            if u32::from(c.variable_header_size()) != header[3].count_ones() {
                return exact(HvStatus::INVALID_HYPERCALL_INPUT); // R13
            }
            let all = header[1] & 1 != 0;
            // R19: the empty sparse set (L2 still routes and reads the
            // assist page, which may add 3).
            if header[2] == HV_GENERIC_SET_SPARSE_4K && !all && header[3] == 0 && level == Level::L1
            {
                return exact(HvStatus::SUCCESS);
            }
        }
        Expectation {
            exact: None,
            after_checks: &[0, 3, 4],
        }
    }

    /// The targets are exactly what the set names (R26, R30).
    fn check_targets(&self, caller: usize, level: Level, r: &FlushRequest, got: &[usize]) {
        let named = |v: &Vcpu| -> bool {
            match level {
                Level::L1 => v.vp.is_some_and(|vp| r.processors.contains(vp)),
                Level::L2 => {
                    let Some(me) = self.vcpus[caller].nested else {
                        return false;
                    };
                    v.nested.is_some_and(|ctx| {
                        ctx.vm_id == me.vm_id
                            && match r.processors {
                                ProcessorSet::All => true,
                                _ => ctx.vp_id < VP_LIMIT && r.processors.contains(ctx.vp_id),
                            }
                    })
                }
            }
        };
        let want: Vec<usize> = (0..self.vcpus.len())
            .filter(|&v| named(&self.vcpus[v]))
            .collect();
        assert!(got.iter().all(|&t| t < self.vcpus.len()), "subset");
        assert_eq!(got, want.as_slice(), "targets of {:?}", r.processors);
    }

    /// Queue, pending and counter effects of a completed flush.
    fn apply(
        &mut self,
        level: Level,
        r: &FlushRequest,
        targets: &[usize],
        overflows: &[(usize, Level)],
        kicker: &ExitingKicker<'_>,
    ) {
        let l = level_index(level);
        let mut overflowed = Vec::new();
        for &t in targets {
            if self.vcpus[t].queues[l].push(&r.gvas) {
                overflowed.push((t, level));
            }
            self.vcpus[t].pending = true;
            assert!(self.partition.has_pending(t), "target {t} marked pending");
        }
        assert_eq!(overflows, overflowed.as_slice(), "R25 overflows");
        self.expected.targets += targets.len() as u64;
        self.expected.fallbacks += overflowed.len() as u64 + u64::from(r.too_many_entries);
        // Targets in the guest: preempted ones are flagged, others kicked
        // (and leave at once); those outside are never woken (R27, R34).
        let in_guest: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|&t| self.vcpus[t].in_guest)
            .collect();
        let preempted = kicker.preempted_targets.lock().unwrap().clone();
        let kicks = kicker.kicks.lock().unwrap().clone();
        if kicker.preempted {
            assert_eq!(preempted, in_guest);
            assert!(kicks.is_empty());
            self.expected.preempted += in_guest.len() as u64;
        } else {
            assert_eq!(kicks, in_guest, "kicked exactly the running targets");
            self.expected.kicks += in_guest.len() as u64;
            for t in in_guest {
                self.vcpus[t].in_guest = false;
            }
        }
    }

    fn check_counters(&self) {
        let s = self.partition.counters();
        let e = &self.expected;
        assert_eq!(s.total_hypercalls(), e.calls);
        for (i, status) in HvStatus::ALL.iter().enumerate() {
            assert_eq!(s.with_status(*status), e.status[i], "{status:?}");
        }
        assert_eq!(s.other_statuses(), 0);
        assert_eq!(s.hypercalls, e.paths);
        assert_eq!(s.targets, e.targets);
        assert_eq!(s.flushes_requested, e.targets);
        assert_eq!(s.flushes_taken, e.taken);
        assert_eq!(s.kicks, e.kicks);
        assert_eq!(s.preempted_flushes, e.preempted);
        assert_eq!(
            s.targets_without_kick,
            e.targets - e.kicks,
            "kicked once each"
        );
        assert_eq!(s.flush_all_fallbacks, e.fallbacks);
        assert_eq!(s.unresponsive_vcpus, 0);
        assert!(s.latency_samples <= e.calls);
    }

    /// Every vCPU enters once more: whatever is pending is handed out.
    pub fn finish(&mut self) {
        for v in 0..self.vcpus.len() {
            self.enter(v);
            assert!(!self.partition.has_pending(v));
        }
        self.check_counters();
    }
}

struct Expectation {
    exact: Option<HvStatus>,
    after_checks: &'static [u16],
}

fn control_word(c: &CallOp) -> u64 {
    let k = &c.control;
    let code = match k.code {
        Code::Space => 0x0002,
        Code::List => 0x0003,
        Code::SpaceEx => 0x0013,
        Code::ListEx => 0x0014,
        Code::Other(x) => x,
    };
    let word = HypercallControl::new()
        .with_code(code)
        .with_fast(k.fast)
        .with_variable_header_size(k.var_header & 0x3ff)
        .with_rep_count(k.rep_count & 0xfff)
        .with_rep_start(k.rep_start & 0xfff);
    u64::from(word)
        | k.reserved
            .map_or(0, |r| r & HypercallControl::RESERVED_MASK)
}
