//! The partition: every vCPU's flush state, routing, and the hypercall
//! entry point a backend calls from its exit handler.

mod restore;

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::completion::{VcpuKicker, WaitClock, WaitPolicy, needs_kick, still_in_guest};
use super::counters::{CountersSnapshot, HypercallKind, InputKind, Level, Refusal, VcpuCounters};
use super::l2_index::L2Index;
use super::observer::{FlushObserver, NoopObserver};
use super::queue::{Enqueued, QueuedFlush};
use super::sync::{
    Ordering::{Acquire, Release, SeqCst},
    fence, lock,
};
use super::vcpu_set::{MAX_VCPUS, SetBits, VcpuSet};
use super::vcpu_slot::{NestedContext, OUTSIDE, STOPPED, VcpuSlot, queue_index};
use super::vp_map::{VpIndexError, VpMap};
use crate::abi::{HvStatus, HypercallControl, synthetic_exit};
use crate::decode::{FlushCall, FlushRequest, GvaList, HypercallRegisters, Offer, ProcessorSet};

/// Errors of the partition's management calls (never guest-visible).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EngineError {
    /// The vCPU count is outside 1..=4096.
    #[error("Invalid vCPU count {0} (1..=4096)")]
    VcpuCount(usize),
    /// No vCPU with that index.
    #[error("No vCPU {0}")]
    NoSuchVcpu(usize),
    /// A VP index could not be assigned.
    #[error("Cannot assign VP index")]
    VpIndex(#[source] VpIndexError),
}

/// Creation parameters.
#[derive(Clone, Copy, Debug)]
pub struct PartitionConfig {
    /// Number of vCPUs (1..=4096).
    pub vcpus: usize,
    /// What the guest is offered initially.
    pub offer: Offer,
    /// Whether L2 Direct Virtual Flush is offered.
    pub l2: bool,
    /// Bounds of the wait for kicked targets.
    pub wait: WaitPolicy,
}

impl PartitionConfig {
    /// Defaults for `vcpus` vCPUs: everything offered but L2.
    pub fn new(vcpus: usize) -> Self {
        Self {
            vcpus,
            offer: Offer::default(),
            l2: false,
            wait: WaitPolicy::default(),
        }
    }
}

/// Work a vCPU must do before entering the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingFlush {
    /// L1 translations to flush.
    pub l1: QueuedFlush,
    /// L2 translations to flush.
    pub l2: QueuedFlush,
}

impl PendingFlush {
    /// Whether anything must be flushed.
    pub fn is_some(&self) -> bool {
        self.l1.is_some() || self.l2.is_some()
    }

    /// Levels with something to flush (0, 1 or 2): what the counters count.
    pub fn levels(&self) -> u64 {
        u64::from(self.l1.is_some()) + u64::from(self.l2.is_some())
    }
}

/// What the backend must do after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallOutcome {
    /// Value for RAX.
    pub result: u64,
    /// The status in `result`.
    pub status: HvStatus,
    /// Inject the synthetic "trap after flush" VM exit into L1.
    pub synthetic_vmexit: bool,
}

const OFFER_REMOTE: u8 = 1;
const OFFER_EX: u8 = 2;
const OFFER_XMM: u8 = 4;
const OFFER_L2: u8 = 8;

/// The flush engine of one VM, shared by all its vCPU threads.
pub struct Partition {
    slots: Box<[VcpuSlot]>,
    vp_map: VpMap,
    l2_index: RwLock<L2Index>,
    offer: AtomicU8,
    used_paths: AtomicU32,
    wait: WaitPolicy,
    observer: Arc<dyn FlushObserver>,
}

impl Partition {
    /// Creates a partition with identity VP indices.
    pub fn new(config: PartitionConfig) -> Result<Self, EngineError> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(EngineError::VcpuCount(config.vcpus));
        }
        let p = Self {
            slots: (0..config.vcpus)
                .map(|_| VcpuSlot::new(config.vcpus))
                .collect(),
            vp_map: VpMap::identity(config.vcpus),
            l2_index: RwLock::new(L2Index::new(config.vcpus)),
            offer: AtomicU8::new(0),
            used_paths: AtomicU32::new(0),
            wait: config.wait,
            observer: Arc::new(NoopObserver),
        };
        p.set_offer(config.offer);
        p.set_l2_offered(config.l2);
        Ok(p)
    }

    /// Installs the observer for flush-path events.
    pub fn with_observer(mut self, observer: Arc<dyn FlushObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn slot(&self, vcpu: usize) -> Result<&VcpuSlot, EngineError> {
        self.slots.get(vcpu).ok_or(EngineError::NoSuchVcpu(vcpu))
    }

    /// Assigns `vp` as the VP index of `vcpu` (before or between runs).
    pub fn set_vp_index(&self, vcpu: usize, vp: u32) -> Result<(), EngineError> {
        self.vp_map.set(vcpu, vp).map_err(EngineError::VpIndex)
    }

    /// The VP index of `vcpu` (what `HV_X64_MSR_VP_INDEX` reads).
    pub fn vp_index(&self, vcpu: usize) -> Option<u32> {
        self.vp_map.vp(vcpu)
    }

    /// The current offer.
    #[inline]
    pub fn offer(&self) -> Offer {
        let bits = self.offer.load(Relaxed);
        Offer {
            remote_flush: bits & OFFER_REMOTE != 0,
            ex_masks: bits & OFFER_EX != 0,
            xmm_input: bits & OFFER_XMM != 0,
        }
    }

    /// Changes the offer; applies to the next hypercall (runtime toggle).
    pub fn set_offer(&self, offer: Offer) {
        let mut bits = self.offer.load(Relaxed) & OFFER_L2;
        bits |= if offer.remote_flush { OFFER_REMOTE } else { 0 };
        bits |= if offer.ex_masks { OFFER_EX } else { 0 };
        bits |= if offer.xmm_input { OFFER_XMM } else { 0 };
        self.offer.store(bits, Relaxed);
    }

    /// Whether L2 Direct Virtual Flush is served.
    #[inline]
    pub fn l2_offered(&self) -> bool {
        self.offer.load(Relaxed) & OFFER_L2 != 0
    }

    /// Turns L2 service on or off.
    pub fn set_l2_offered(&self, on: bool) {
        if on {
            self.offer.fetch_or(OFFER_L2, Relaxed);
        } else {
            self.offer.fetch_and(!OFFER_L2, Relaxed);
        }
    }

    /// `vcpu` enters L2 with `context`: the vm_id, vp_id and partition
    /// assist page L1 set in the enlightened VMCS (Intel) or VMCB (AMD) it
    /// launches or resumes. Call it at **every** L2 entry, before the
    /// entry's [`Self::before_entry`]; it replaces the vCPU's previous
    /// context.
    ///
    /// The context stays loaded while the vCPU runs L1 again (an L2 exit
    /// changes nothing here): an L2 flush for its VP meanwhile is queued on
    /// its L2 queue and taken at its next entry. Only
    /// [`Self::release_nested_context`] drops it. This is KVM's lifetime:
    /// `copy_enlightened_to_vmcs12` (vmx/nested.c) and
    /// `nested_svm_hv_update_vm_vp_ids` (svm/nested.c) set the nested
    /// vm_id/vp_id at L2 entry; `nested_release_evmcs` clears them.
    pub fn load_nested_context(
        &self,
        vcpu: usize,
        context: NestedContext,
    ) -> Result<(), EngineError> {
        self.store_nested_context(vcpu, Some(context))
    }

    /// L1 released the enlightened VMCS (or VMCB) `vcpu` ran L2 with: a
    /// VMPTRLD of another VMCS, VMCLEAR of it, VMXOFF, the vCPU's INIT or
    /// RESET, or freed nested state. From now on no L2 flush targets the
    /// vCPU until its next [`Self::load_nested_context`]. Flushes already
    /// queued for it stay queued (over-flushing is allowed).
    pub fn release_nested_context(&self, vcpu: usize) -> Result<(), EngineError> {
        self.store_nested_context(vcpu, None)
    }

    fn store_nested_context(
        &self,
        vcpu: usize,
        context: Option<NestedContext>,
    ) -> Result<(), EngineError> {
        let slot = self.slot(vcpu)?;
        let mut current = lock(&slot.nested);
        if *current == context {
            return Ok(());
        }
        // Lock order: the vCPU's `nested`, then the index. Routing reads the
        // index alone (it keeps its own copy of every vCPU's context), and
        // both copies change together under the index's write lock.
        let mut index = self.l2_index.write().unwrap_or_else(|e| e.into_inner());
        index.set(vcpu, context);
        *current = context;
        Ok(())
    }

    /// The nested context loaded on `vcpu` (whether it runs L2 or L1 right
    /// now), `None` before its first L2 entry or after a release.
    pub fn loaded_nested_context(&self, vcpu: usize) -> Option<NestedContext> {
        self.slots.get(vcpu).and_then(|s| *lock(&s.nested))
    }

    /// Serves one hypercall exit of vCPU `caller`, running at `level`.
    ///
    /// Decodes, routes, queues, kicks running targets and waits until each
    /// has left guest mode, then returns RAX. Allocation-free. Call it on
    /// `caller`'s own vCPU thread, like every per-vCPU call: each vCPU's
    /// counters have that one writer.
    pub fn handle_hypercall<R, M, K>(
        &self,
        caller: usize,
        level: Level,
        regs: &mut R,
        mem: &M,
        kicker: &K,
    ) -> Result<HypercallOutcome, EngineError>
    where
        R: HypercallRegisters + ?Sized,
        M: GuestMemory,
        K: VcpuKicker + ?Sized,
    {
        let counters = &self.slot(caller)?.counters;
        let start = counters.latency.sample_start();
        let control = HypercallControl::from(regs.control());
        let path = FlushCall::from_code(crate::abi::HvCallCode(control.code())).map(|call| {
            HypercallKind {
                level,
                call,
                input: if control.fast() {
                    InputKind::Fast
                } else {
                    InputKind::Memory
                },
            }
        });
        if let Some(path) = path {
            VcpuCounters::bump(&counters.hypercalls[path.index()], 1);
            self.note_path_use(caller, path);
        }

        let mut tlb_lock_count = 0u32;
        let served = if level == Level::L2 && path.is_some() && !self.l2_offered() {
            Err(HvStatus::ACCESS_DENIED)
        } else {
            // Built in place: moving the ~800-byte request was a memcpy
            // per call.
            let mut request = FlushRequest::blank();
            crate::decode::decode_into(regs, mem, self.offer(), &mut request).and_then(|()| {
                self.flush_routed(caller, level, &request, kicker)
                    .and_then(|assist_page| {
                        if let Some(gpa) = assist_page {
                            tlb_lock_count = tlb_lock_count_of(gpa, mem)?;
                        }
                        Ok(request.rep_count)
                    })
            })
        };
        let (status, reps) = match served {
            Ok(reps) => (HvStatus::SUCCESS, reps),
            Err(status) => {
                self.observer
                    .invalid_input(caller, crate::abi::HvCallCode(control.code()), status);
                (status, 0)
            }
        };
        counters.count_status(status);
        let synthetic_vmexit = status == HvStatus::SUCCESS && tlb_lock_count != 0;
        if synthetic_vmexit {
            VcpuCounters::bump(&counters.synthetic_exits, 1);
            self.observer.synthetic_vmexit(caller, tlb_lock_count);
        }
        if let Some(start) = start {
            counters.latency.record_since(start);
        }
        Ok(HypercallOutcome {
            result: status.to_result(reps),
            status,
            synthetic_vmexit,
        })
    }

    /// A backend did not serve a hypercall instruction of `caller` (it
    /// injected #UD, or GUEST_OS_ID was 0): counted, allocation-free, and
    /// nothing is flushed.
    pub fn hypercall_refused(&self, caller: usize, why: Refusal) -> Result<(), EngineError> {
        let counters = &self.slot(caller)?.counters;
        VcpuCounters::bump(&counters.refused[why as usize], 1);
        Ok(())
    }

    #[inline]
    fn note_path_use(&self, caller: usize, path: HypercallKind) {
        let bit = 1 << path.index();
        if self.used_paths.load(Relaxed) & bit == 0
            && self.used_paths.fetch_or(bit, Relaxed) & bit == 0
        {
            self.observer.path_first_use(caller, path);
        }
    }

    /// The vCPUs a request from `caller` at `level` targets.
    ///
    /// L1: VP indices through the VP map (unknown VPs are ignored, like
    /// KVM). L2: vCPUs whose loaded nested context has the caller's vm_id
    /// and a vp_id in the set, whether they run L2 or L1 right now, through
    /// the index (O(targets)).
    pub fn route(
        &self,
        caller: usize,
        level: Level,
        set: &ProcessorSet,
        out: &mut VcpuSet,
    ) -> Result<(), HvStatus> {
        self.route_inner(caller, level, set, out).map(|_| ())
    }

    /// [`Self::route`], also returning for L2 the GPA of the caller's
    /// partition assist page (a `u64`, not the whole context: the result
    /// stays in registers).
    #[inline]
    fn route_inner(
        &self,
        caller: usize,
        level: Level,
        set: &ProcessorSet,
        out: &mut VcpuSet<[u64]>,
    ) -> Result<Option<u64>, HvStatus> {
        let n = self.slots.len();
        match (level, set.banks()) {
            (Level::L1, None) => {
                // Whole words at a time: vCPUs 0..n.
                for word in 0..n.div_ceil(64) {
                    out.insert_word(word, vcpu_word(n, word));
                }
                Ok(None)
            }
            (Level::L1, Some((valid_bank_mask, banks))) if self.vp_map.is_identity() => {
                // VP i is vCPU i: a bank is a word of vCPUs, less the VPs
                // without one (KVM `sparse_set_to_vcpu_mask` with no
                // mismatched VP index).
                for bank in SetBits(valid_bank_mask) {
                    let bits = banks.get(bank).copied().unwrap_or(0);
                    out.insert_word(bank, bits & vcpu_word(n, bank));
                }
                Ok(None)
            }
            (Level::L1, Some((valid_bank_mask, banks))) => {
                for bank in SetBits(valid_bank_mask) {
                    for bit in SetBits(banks.get(bank).copied().unwrap_or(0)) {
                        if let Some(v) = self.vp_map.vcpu((bank * 64 + bit) as u32) {
                            out.insert(v);
                        }
                    }
                }
                Ok(None)
            }
            (Level::L2, _) => {
                let index = self.l2_index.read().unwrap_or_else(|e| e.into_inner());
                index
                    .route(caller, set, out)
                    .map(|ctx| Some(ctx.partition_assist_gpa))
                    .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)
            }
        }
    }

    /// Routes, queues and completes a decoded request from `caller`, on
    /// `caller`'s own thread (see [`Self::handle_hypercall`]).
    pub fn flush<K: VcpuKicker + ?Sized>(
        &self,
        caller: usize,
        level: Level,
        request: &FlushRequest,
        kicker: &K,
    ) -> Result<(), HvStatus> {
        self.flush_routed(caller, level, request, kicker)
            .map(|_| ())
    }

    /// [`Self::flush`], also returning for L2 the GPA of the caller's
    /// partition assist page (read once, under the same lock as the
    /// routing).
    fn flush_routed<K: VcpuKicker + ?Sized>(
        &self,
        caller: usize,
        level: Level,
        request: &FlushRequest,
        kicker: &K,
    ) -> Result<Option<u64>, HvStatus> {
        let Some(caller_slot) = self.slots.get(caller) else {
            return Err(HvStatus::INVALID_PARAMETER);
        };
        // The target set is sized to the partition, in steps of 4× words:
        // zeroing a whole 4096-vCPU set (a 520-byte memset) per request
        // was 8 % of a one-target call's instructions.
        let flush = |targets: &mut VcpuSet<[u64]>| {
            self.flush_to(caller, caller_slot, level, request, kicker, targets)
        };
        match self.slots.len().div_ceil(64) {
            0..=1 => flush(&mut VcpuSet::<[u64; 1]>::default()),
            2..=4 => flush(&mut VcpuSet::<[u64; 4]>::default()),
            5..=16 => flush(&mut VcpuSet::<[u64; 16]>::default()),
            _ => flush(&mut VcpuSet::<[u64; MAX_VCPUS / 64]>::default()),
        }
    }

    /// [`Self::flush_routed`] with `targets`, an empty set that holds
    /// every vCPU of the partition.
    fn flush_to<K: VcpuKicker + ?Sized>(
        &self,
        caller: usize,
        caller_slot: &VcpuSlot,
        level: Level,
        request: &FlushRequest,
        kicker: &K,
        targets: &mut VcpuSet<[u64]>,
    ) -> Result<Option<u64>, HvStatus> {
        debug_assert!(targets.capacity() >= self.slots.len());
        let counters = &caller_slot.counters;
        let assist_page = self.route_inner(caller, level, &request.processors, targets)?;
        if request.too_many_entries {
            VcpuCounters::bump(&counters.flush_all_fallbacks, 1);
        }
        let queue = queue_index(level);
        let mut count = 0;
        for t in targets.iter() {
            let slot = &self.slots[t];
            let enqueued = match request.gvas {
                // Lock-free: the flag is published by the pending store
                // below and taken in `before_entry` after the pending CAS.
                GvaList::All => {
                    slot.full[queue].store(true, Release);
                    Enqueued::All
                }
                GvaList::Ranges { .. } => {
                    lock(&slot.queues)[queue].push_ranges(request.gvas.ranges())
                }
            };
            if enqueued == Enqueued::Overflow {
                VcpuCounters::bump(&counters.flush_all_fallbacks, 1);
                self.observer.queue_overflow(t, level);
            }
            // Release, not SeqCst: the SeqCst fence below orders this store
            // before the run-state loads of `complete`, and `before_entry`
            // fences between its state store and its pending CAS; two SeqCst
            // fences make the pair a Dekker handshake whatever the ordering of
            // the accesses themselves (C++ [atomics.fences]). Saves one locked
            // instruction per target on x86.
            slot.pending.store(true, Release);
            count += 1;
        }
        // Also the snapshot's `flushes_requested`: one queue entry per target.
        VcpuCounters::bump(&counters.targets, count);
        // Store(pending) → load(state) must not reorder (see before_entry).
        fence(SeqCst);
        self.complete(caller, caller_slot, targets, kicker);
        self.observer.flush_completed(caller, level, targets);
        Ok(assist_page)
    }

    /// Kicks every target in the guest and waits until each has left it.
    fn complete<K: VcpuKicker + ?Sized>(
        &self,
        initiator: usize,
        caller: &VcpuSlot,
        targets: &VcpuSet<[u64]>,
        kicker: &K,
    ) {
        let counters = &caller.counters;
        // Locked only once a target needs a kick: most requests find every
        // target outside the guest and skip the lock's two atomic RMWs.
        let mut waits = None;
        for t in targets.iter() {
            let Some(exits) = needs_kick(&self.slots[t]) else {
                continue;
            };
            if kicker.flush_if_preempted(t) {
                VcpuCounters::bump(&counters.preempted_flushes, 1);
                continue;
            }
            let halted = kicker.kick_and_check_halted(t);
            VcpuCounters::bump(&counters.kicks, 1);
            // Counted here, off the common path (every target outside the
            // guest); `targets_without_kick` is derived from it.
            VcpuCounters::bump(&counters.kicked_targets, 1);
            if halted {
                VcpuCounters::bump(&counters.halted_not_waited_for, 1);
                continue;
            }
            waits
                .get_or_insert_with(|| {
                    let mut waits = lock(&caller.waits);
                    waits.clear();
                    waits
                })
                .push((t, exits));
        }
        let Some(mut waits) = waits else {
            return;
        };
        for &(t, exits) in waits.iter() {
            let target = &self.slots[t];
            let mut clock = WaitClock::start();
            let mut next_kick = self.wait.rekick_after;
            let mut reported = false;
            while still_in_guest(target, exits) {
                clock.pause();
                let waited = clock.elapsed();
                if waited >= next_kick {
                    kicker.kick(t);
                    VcpuCounters::bump(&counters.kicks, 1);
                    next_kick = waited + self.wait.rekick_after;
                }
                if !reported && waited >= self.wait.report_after {
                    reported = true;
                    VcpuCounters::bump(&counters.unresponsive_vcpus, 1);
                    self.observer.vcpu_unresponsive(initiator, t, waited);
                }
            }
        }
        waits.clear();
    }

    /// vCPU thread, right before entering the guest (after clearing its own
    /// immediate-exit request): marks it in the guest and takes what it
    /// must flush first. Every call must be paired with [`Self::after_exit`].
    pub fn before_entry(&self, vcpu: usize) -> Result<PendingFlush, EngineError> {
        let slot = self.slot(vcpu)?;
        slot.state.store(super::vcpu_slot::IN_GUEST, SeqCst);
        // Store(state) → load(pending) must not reorder; the fence states it
        // for loom too, which models SeqCst accesses as AcqRel. On x86 the
        // SeqCst store is already a full barrier.
        fence(SeqCst);
        if slot
            .pending
            .compare_exchange(true, false, SeqCst, SeqCst)
            .is_err()
        {
            return Ok(PendingFlush::default());
        }
        let [l1, l2] = {
            let mut queues = lock(&slot.queues);
            [0, 1].map(|level| {
                let queued = queues[level].take();
                // A full flush purges whatever ranges were queued with it.
                if slot.full[level].swap(false, Acquire) {
                    QueuedFlush::All
                } else {
                    queued
                }
            })
        };
        let pending = PendingFlush { l1, l2 };
        VcpuCounters::bump(&slot.counters.flushes_taken, pending.levels());
        Ok(pending)
    }

    /// vCPU thread: the host confirmed it performed `n` flushes, serving
    /// what [`Self::before_entry`] handed out since the previous one (an
    /// executor that cannot observe completion reports each flush when it
    /// hands it to the host).
    pub fn flushes_executed(&self, vcpu: usize, n: u64) -> Result<(), EngineError> {
        let slot = self.slot(vcpu)?;
        VcpuCounters::bump(&slot.counters.flushes_executed, n);
        Ok(())
    }

    /// vCPU thread: the executor found that the host had dropped this
    /// vCPU's flush registration (an INIT or RESET of the vCPU) and
    /// restored it before arming a flush.
    pub fn executor_repaired(&self, vcpu: usize) -> Result<(), EngineError> {
        let slot = self.slot(vcpu)?;
        VcpuCounters::bump(&slot.counters.executor_repairs, 1);
        self.observer.executor_repaired(vcpu);
        Ok(())
    }

    /// vCPU thread, right after the guest run returned.
    pub fn after_exit(&self, vcpu: usize) -> Result<(), EngineError> {
        let slot = self.slot(vcpu)?;
        slot.state.store(OUTSIDE, SeqCst);
        slot.exits.fetch_add(1, SeqCst);
        Ok(())
    }

    /// vCPU thread, when it stops for good: never waited for again.
    pub fn vcpu_stopped(&self, vcpu: usize) -> Result<(), EngineError> {
        let slot = self.slot(vcpu)?;
        slot.state.store(STOPPED, SeqCst);
        slot.exits.fetch_add(1, SeqCst);
        Ok(())
    }

    /// Whether `vcpu` is marked inside the guest.
    pub fn in_guest(&self, vcpu: usize) -> bool {
        self.slots
            .get(vcpu)
            .is_some_and(|s| s.state.load(SeqCst) == super::vcpu_slot::IN_GUEST)
    }

    /// Whether `vcpu` has a flush pending (it will flush before entry).
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.slots.get(vcpu).is_some_and(|s| s.pending.load(SeqCst))
    }

    /// Sums every vCPU's counters.
    pub fn counters(&self) -> CountersSnapshot {
        CountersSnapshot::collect(self.slots.iter().map(|s| &s.counters))
    }
}

/// The vCPUs `64 * word ..= 64 * word + 63` that exist in a partition of
/// `n` vCPUs, as a bit mask.
#[inline]
fn vcpu_word(n: usize, word: usize) -> u64 {
    match n.saturating_sub(word * 64) {
        0 => 0,
        left @ 1..64 => (1 << left) - 1,
        _ => u64::MAX,
    }
}

/// After a successful L2 flush: whether L1 holds its TLB lock
/// (`tlb_lock_count` ≠ 0 in the partition assist page at `assist_gpa`).
/// An unreadable page is `INVALID_HYPERCALL_INPUT` (KVM
/// `kvm_hv_hypercall_complete`).
fn tlb_lock_count_of<M: GuestMemory>(assist_gpa: u64, mem: &M) -> Result<u32, HvStatus> {
    let addr = assist_gpa.wrapping_add(synthetic_exit::PARTITION_ASSIST_TLB_LOCK_COUNT_OFFSET);
    mem.read_obj(GuestAddress(addr))
        .map_err(|_| HvStatus::INVALID_HYPERCALL_INPUT)
}
