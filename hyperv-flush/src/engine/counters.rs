//! Per-path counters and a hypercall latency histogram.
//!
//! Each vCPU owns one [`VcpuCounters`] and only its own thread writes most
//! of it, so the hot path touches no shared cache line; a snapshot sums
//! them. Plain std atomics (not part of the loom model).
//!
//! Latency is sampled: each vCPU times its first hypercall and then one in
//! `LATENCY_SAMPLE_EVERY` (16). Two clock reads cost about 60 ns on a VM
//! (docs/performance.md), a third of the whole call; sampling makes them
//! about 4 ns per call on average, and a uniform 1-in-N sample of the calls
//! keeps p50/p99 unbiased. [`CountersSnapshot::latency_samples`] says how
//! many calls the percentiles come from.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::abi::HvStatus;
use crate::decode::FlushCall;

/// Which level the caller ran at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// The L1 guest itself.
    L1,
    /// A nested (L2) guest of L1: Direct Virtual Flush.
    L2,
}

impl Level {
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
        }
    }
}

/// Memory or fast (register) input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// Input in a guest page.
    Memory,
    /// Input in RDX/R8/XMM.
    Fast,
}

impl InputKind {
    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Fast => "fast",
        }
    }
}

/// A flush path: level × call × input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HypercallKind {
    /// Caller level.
    pub level: Level,
    /// Call.
    pub call: FlushCall,
    /// Input kind.
    pub input: InputKind,
}

impl HypercallKind {
    /// Index among the 16 paths.
    #[inline]
    pub fn index(self) -> usize {
        (self.level as usize) * 8 + self.call.index() * 2 + self.input as usize
    }

    /// All 16 paths in index order.
    pub fn all() -> impl Iterator<Item = Self> {
        [Level::L1, Level::L2].into_iter().flat_map(|level| {
            FlushCall::ALL.into_iter().flat_map(move |call| {
                [InputKind::Memory, InputKind::Fast]
                    .into_iter()
                    .map(move |input| Self { level, call, input })
            })
        })
    }

    /// `l1-space`, `l2-list-ex`, ... (the event monitor's path names).
    pub fn call_name(self) -> &'static str {
        const NAMES: [&str; 8] = [
            "l1-space",
            "l1-list",
            "l1-space-ex",
            "l1-list-ex",
            "l2-space",
            "l2-list",
            "l2-space-ex",
            "l2-list-ex",
        ];
        NAMES[self.level as usize * 4 + self.call.index()]
    }
}

const PATHS: usize = 16;
const STATUSES: usize = HvStatus::ALL.len() + 1;
const BUCKETS: usize = 256;

/// One hypercall in this many is timed (per vCPU; the first always is).
pub(crate) const LATENCY_SAMPLE_EVERY: u32 = 16;

/// Log-linear latency histogram (4 sub-buckets per power of two).
pub(crate) struct LatencyHistogram {
    /// Boxed: 2 KiB that only sampled calls of the owning vCPU touch. Kept
    /// inline it tripled the size of every vCPU slot, and an initiator
    /// walking 64 target slots then missed the L1 data TLB.
    buckets: Box<[AtomicU64; BUCKETS]>,
    /// Calls seen since the last sample; written by the owning vCPU's
    /// thread only, so a plain load + store (no locked instruction). A
    /// racing second writer could only shift which call is sampled.
    tick: AtomicU32,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            tick: AtomicU32::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < 16 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros() as usize;
    let sub = ((ns >> (exp - 2)) & 3) as usize;
    (16 + (exp - 4) * 4 + sub).min(BUCKETS - 1)
}

/// Upper bound (ns) of a bucket.
fn bucket_upper(b: usize) -> u64 {
    if b < 16 {
        return b as u64;
    }
    let exp = (b - 16) / 4 + 4;
    let sub = ((b - 16) % 4) as u64;
    ((4 + sub + 1) << (exp - 2)).saturating_sub(1)
}

impl LatencyHistogram {
    /// At the start of a call: the start time if this call is sampled.
    #[inline]
    pub(crate) fn sample_start(&self) -> Option<Instant> {
        let tick = self.tick.load(Relaxed);
        let sampled = tick == 0;
        let next = if tick + 1 >= LATENCY_SAMPLE_EVERY {
            0
        } else {
            tick + 1
        };
        self.tick.store(next, Relaxed);
        sampled.then(Instant::now)
    }

    /// At the end of a sampled call.
    pub(crate) fn record_since(&self, start: Instant) {
        self.record(start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    pub(crate) fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
    }

    fn add_into(&self, acc: &mut [u64; BUCKETS]) {
        for (a, b) in acc.iter_mut().zip(self.buckets.iter()) {
            *a += b.load(Relaxed);
        }
    }
}

fn percentile(acc: &[u64; BUCKETS], p: f64) -> Option<u64> {
    let total: u64 = acc.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, n) in acc.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper(b));
        }
    }
    None
}

/// Why a hypercall instruction was not served as a Hyper-V hypercall.
/// Backends that gate calls before the engine report it with
/// `Partition::hypercall_refused`, so refused calls are counted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// #UD injected: the caller is not at CPL 0 or not in 64-bit mode
    /// (KVM `kvm_hv_hypercall`).
    InvalidOpcode,
    /// GUEST_OS_ID is 0: the Hyper-V interface is off, the instruction
    /// was KVM's own hypercall (`-KVM_ENOSYS`).
    NoGuestOsId,
}

/// Counters of one vCPU.
#[derive(Default)]
pub(crate) struct VcpuCounters {
    pub(crate) hypercalls: [AtomicU64; PATHS],
    pub(crate) status: [AtomicU64; STATUSES],
    pub(crate) targets: AtomicU64,
    pub(crate) flushes_taken: AtomicU64,
    pub(crate) flushes_executed: AtomicU64,
    pub(crate) executor_repairs: AtomicU64,
    pub(crate) flush_all_fallbacks: AtomicU64,
    pub(crate) kicks: AtomicU64,
    pub(crate) preempted_flushes: AtomicU64,
    /// Targets kicked (once each per request; re-kicks are only `kicks`).
    pub(crate) kicked_targets: AtomicU64,
    pub(crate) halted_not_waited_for: AtomicU64,
    pub(crate) unresponsive_vcpus: AtomicU64,
    pub(crate) synthetic_exits: AtomicU64,
    pub(crate) refused: [AtomicU64; 2],
    pub(crate) latency: LatencyHistogram,
}

impl VcpuCounters {
    #[inline]
    pub(crate) fn count_status(&self, status: HvStatus) {
        let i = status.index().unwrap_or(STATUSES - 1);
        Self::bump(&self.status[i], 1);
    }

    /// Adds `n`. Every counter of a vCPU is written only by that vCPU's own
    /// thread (its calls as an initiator, its entries and exits), so a
    /// load and a store suffice, like the latency sampler's `tick`: no
    /// locked read-modify-write on the hot path (three per call before).
    /// Readers on other threads see each counter's latest store.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// A consistent-enough copy of all counters (each counter is exact; the
/// set is not an atomic cut across vCPUs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CountersSnapshot {
    /// Hypercalls per path, indexed like [`HypercallKind::index`].
    pub hypercalls: [u64; PATHS],
    /// Results per status, indexed like [`HvStatus::ALL`], then "other".
    pub status: [u64; STATUSES],
    /// Target vCPUs addressed by successful requests.
    pub targets: u64,
    /// Queue entries written (one per target per request).
    pub flushes_requested: u64,
    /// Flushes a target took from its queue before entering the guest and
    /// handed to the executor (one per level).
    pub flushes_taken: u64,
    /// Flushes the host confirmed it performed (the executor saw its
    /// request consumed). One host flush serves every flush taken since
    /// the previous one, so `flushes_taken - flushes_executed` counts those
    /// merged into an already armed flush, plus any still armed.
    pub flushes_executed: u64,
    /// Times the executor found the host had dropped a vCPU's flush
    /// registration (INIT or RESET clear it) and restored it.
    pub executor_repairs: u64,
    /// Requests served as full flushes because the list was too long or
    /// a queue overflowed.
    pub flush_all_fallbacks: u64,
    /// Kicks sent to running targets (including re-kicks).
    pub kicks: u64,
    /// Targets flushed through the host's preempted marker, without a kick.
    pub preempted_flushes: u64,
    /// Targets handled without a kick: outside guest mode when the request
    /// was queued (they flush on their way in, never woken or waited for),
    /// or flagged through the preempted marker (`preempted_flushes`, a
    /// subset). `targets - targets_without_kick` targets were kicked.
    #[cfg_attr(feature = "serde", serde(default))]
    pub targets_without_kick: u64,
    /// Kicked targets the backend reported halted after the kick (KVM:
    /// signal pending, blocked in `kvm_vcpu_block()`), so they cannot run
    /// guest code before they take the flush: not waited for.
    #[cfg_attr(feature = "serde", serde(default))]
    pub halted_not_waited_for: u64,
    /// Times a kicked target did not leave guest mode in time.
    pub unresponsive_vcpus: u64,
    /// Synthetic VM exits requested after L2 flushes.
    pub synthetic_exits: u64,
    /// Hypercalls answered with #UD (CPL > 0, or not in 64-bit mode).
    pub invalid_opcode_injections: u64,
    /// Hypercall instructions while GUEST_OS_ID was 0: not Hyper-V calls,
    /// completed with `-KVM_ENOSYS` and never flushed.
    pub calls_without_guest_os_id: u64,
    /// Hypercall handling latency, p50 (ns), if any call was made.
    pub latency_p50_ns: Option<u64>,
    /// Hypercall handling latency, p99 (ns).
    pub latency_p99_ns: Option<u64>,
    /// Calls the latency percentiles come from: each vCPU's first call,
    /// then one in 16 (timing every call would cost a third of a call).
    pub latency_samples: u64,
}

impl CountersSnapshot {
    /// Hypercalls on one path.
    pub fn path(&self, path: HypercallKind) -> u64 {
        self.hypercalls[path.index()]
    }

    /// Results with one of the statuses in [`HvStatus::ALL`] (0 for any
    /// other; see [`CountersSnapshot::other_statuses`]).
    pub fn with_status(&self, status: HvStatus) -> u64 {
        status.index().map_or(0, |i| self.status[i])
    }

    /// Results with a status outside [`HvStatus::ALL`].
    pub fn other_statuses(&self) -> u64 {
        self.status[STATUSES - 1]
    }

    /// Total hypercalls handled.
    pub fn total_hypercalls(&self) -> u64 {
        self.status.iter().sum()
    }

    pub(crate) fn collect<'a>(all: impl Iterator<Item = &'a VcpuCounters>) -> Self {
        let mut s = Self::default();
        let mut kicked = 0;
        let mut lat = [0u64; BUCKETS];
        for c in all {
            for (a, b) in s.hypercalls.iter_mut().zip(&c.hypercalls) {
                *a += b.load(Relaxed);
            }
            for (a, b) in s.status.iter_mut().zip(&c.status) {
                *a += b.load(Relaxed);
            }
            s.targets += c.targets.load(Relaxed);
            s.flushes_taken += c.flushes_taken.load(Relaxed);
            s.flushes_executed += c.flushes_executed.load(Relaxed);
            s.executor_repairs += c.executor_repairs.load(Relaxed);
            s.flush_all_fallbacks += c.flush_all_fallbacks.load(Relaxed);
            s.kicks += c.kicks.load(Relaxed);
            s.preempted_flushes += c.preempted_flushes.load(Relaxed);
            kicked += c.kicked_targets.load(Relaxed);
            s.halted_not_waited_for += c.halted_not_waited_for.load(Relaxed);
            s.unresponsive_vcpus += c.unresponsive_vcpus.load(Relaxed);
            s.synthetic_exits += c.synthetic_exits.load(Relaxed);
            s.invalid_opcode_injections += c.refused[Refusal::InvalidOpcode as usize].load(Relaxed);
            s.calls_without_guest_os_id += c.refused[Refusal::NoGuestOsId as usize].load(Relaxed);
            c.latency.add_into(&mut lat);
        }
        // One queue entry per target: the same count, kept once on the hot
        // path (one atomic RMW fewer per request).
        s.flushes_requested = s.targets;
        // Every target not kicked was handled without one. Saturating: a
        // live read may see a vCPU's kick before its `targets` update.
        s.targets_without_kick = s.targets.saturating_sub(kicked);
        s.latency_samples = lat.iter().sum();
        s.latency_p50_ns = percentile(&lat, 0.50);
        s.latency_p99_ns = percentile(&lat, 0.99);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for ns in [0u64, 1, 15, 16, 17, 100, 1000, 12_345, 1 << 40, u64::MAX] {
            let b = bucket_of(ns);
            assert!(b >= last);
            assert!(bucket_upper(b) >= ns.min(bucket_upper(BUCKETS - 1)));
            last = b;
        }
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let h = LatencyHistogram::default();
        for _ in 0..99 {
            h.record(1000);
        }
        h.record(1_000_000);
        let mut acc = [0; BUCKETS];
        h.add_into(&mut acc);
        let p50 = percentile(&acc, 0.5).unwrap();
        assert!((1000..1300).contains(&p50), "{p50}");
        let p100 = percentile(&acc, 1.0).unwrap();
        assert!(p100 >= 1_000_000);
    }

    #[test]
    fn first_call_then_one_in_n_is_sampled() {
        let h = LatencyHistogram::default();
        let sampled: Vec<bool> = (0..2 * LATENCY_SAMPLE_EVERY + 1)
            .map(|_| h.sample_start().is_some())
            .collect();
        let at: Vec<usize> = (0..sampled.len()).filter(|&i| sampled[i]).collect();
        let n = LATENCY_SAMPLE_EVERY as usize;
        assert_eq!(at, [0, n, 2 * n]);
    }

    #[test]
    fn paths_are_indexed_densely() {
        let idx: Vec<_> = HypercallKind::all().map(HypercallKind::index).collect();
        assert_eq!(idx, (0..16).collect::<Vec<_>>());
    }
}
