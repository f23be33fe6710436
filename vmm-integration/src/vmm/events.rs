//! Flush-path events for `--event-monitor`: [`EventObserver`] turns the
//! engine's [`FlushObserver`] calls into the typed [`Event`]s, and
//! [`EventReporting`] writes the life-cycle ones (`mode-selected`, the
//! periodic `flush-summary`, `shutdown`).
//!
//! The observer runs on vCPU threads: it only builds an event and hands it
//! to [`EventMonitor::emit`], which never blocks (bounded queue, rate
//! limits for the kinds a guest can trigger at will).

use std::cell::Cell;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use hvflush_api::events::{Event, EventMonitor, EventMonitorError, FlushStats, SummaryTicker};
use hvflush_api::model::HypercallInput;
use hvflush_api::server::FlushService;
use hyperv_flush::abi::HvStatus;
use hyperv_flush::abi::synthetic_exit::PARTITION_ASSIST_TLB_LOCK_COUNT_OFFSET;
use hyperv_flush::engine::{FlushObserver, FlushPath, InputKind, Level, Partition};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::service::{VmmFlushService, api_level, api_path};

/// The `vcpu` of an event raised off a vCPU thread (never, in this VMM:
/// the engine reports on the calling vCPU's thread).
pub const UNKNOWN_VCPU: u32 = u32::MAX;

/// The `call` of `invalid-input`: the engine's observer does not pass the
/// call code, and 0x0000 is no hypercall code (HvCallCode values start at
/// 0x0001), so it cannot be mistaken for one.
pub const UNKNOWN_CALL: u16 = 0;

thread_local! {
    /// The vCPU index of this thread, set by the vCPU thread at start.
    static CURRENT_VCPU: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Marks the calling thread as the thread of vCPU `index`; events the
/// engine raises on it name that vCPU (the caller of a hypercall, or the
/// initiator waiting on an unresponsive target).
pub fn set_current_vcpu(index: usize) {
    let index = u32::try_from(index).unwrap_or(UNKNOWN_VCPU);
    CURRENT_VCPU.with(|c| c.set(Some(index)));
}

fn current_vcpu() -> u32 {
    CURRENT_VCPU.with(Cell::get).unwrap_or(UNKNOWN_VCPU)
}

fn vcpu_id(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(UNKNOWN_VCPU)
}

/// What the observer reads `tlb_lock_count` through, once the VM exists.
struct GuestView {
    partition: Weak<Partition>,
    mem: GuestMemoryMmap,
}

/// Forwards the engine's flush-path events to the event monitor.
pub struct EventObserver {
    monitor: Arc<EventMonitor>,
    guest: OnceLock<GuestView>,
}

impl EventObserver {
    /// An observer emitting to `monitor`.
    pub fn new(monitor: Arc<EventMonitor>) -> Self {
        Self {
            monitor,
            guest: OnceLock::new(),
        }
    }

    /// Lets `synthetic-vmexit` report L1's `tlb_lock_count`: the observer is
    /// installed when the partition is created, before this exists. Only the
    /// first call counts.
    pub fn attach(&self, partition: &Arc<Partition>, mem: GuestMemoryMmap) {
        let _ = self.guest.set(GuestView {
            partition: Arc::downgrade(partition),
            mem,
        });
    }

    /// `tlb_lock_count` of `caller`'s partition assist page (`struct
    /// hv_partition_assist_pg`, Linux arch/x86/kvm/vmx/hyperv.h: L1 takes the
    /// synthetic exit when it is non-zero).
    fn tlb_lock_count(&self, caller: usize) -> Option<u32> {
        let guest = self.guest.get()?;
        let context = guest.partition.upgrade()?.nested_context(caller)?;
        let gpa = context
            .partition_assist_gpa
            .wrapping_add(PARTITION_ASSIST_TLB_LOCK_COUNT_OFFSET);
        guest.mem.read_obj::<u32>(GuestAddress(gpa)).ok()
    }
}

impl FlushObserver for EventObserver {
    fn path_first_use(&self, path: FlushPath) {
        let input = match path.input {
            InputKind::Memory => HypercallInput::Memory,
            InputKind::Fast => HypercallInput::Fast,
        };
        self.monitor.emit(Event::path_first_use(
            api_path(path.level, path.call),
            input,
            current_vcpu(),
        ));
    }

    fn queue_overflow(&self, target: usize, level: Level) {
        self.monitor
            .emit(Event::queue_overflow(vcpu_id(target), api_level(level)));
    }

    fn invalid_input(&self, caller: usize, status: HvStatus) {
        let name = format!("HV_STATUS_{}", status.name().to_ascii_uppercase());
        self.monitor.emit(Event::invalid_input(
            vcpu_id(caller),
            UNKNOWN_CALL,
            status.0,
            &name,
        ));
    }

    fn synthetic_vmexit(&self, caller: usize) {
        // The engine saw a non-zero count; a page that changed since reads
        // whatever L1 wrote, and an unreadable one cannot occur (the engine
        // read it just before).
        if let Some(count) = self.tlb_lock_count(caller) {
            self.monitor
                .emit(Event::synthetic_vmexit(vcpu_id(caller), count));
        }
    }

    fn vcpu_unresponsive(&self, target: usize, waited: Duration) {
        self.monitor.emit(Event::vcpu_unresponsive(
            vcpu_id(target),
            current_vcpu(),
            waited,
        ));
    }
}

/// The life-cycle events of one run: `mode-selected` at start, a
/// `flush-summary` every interval, `shutdown` with the totals at the end.
pub struct EventReporting {
    monitor: Arc<EventMonitor>,
    service: Arc<VmmFlushService>,
    ticker: SummaryTicker,
}

impl EventReporting {
    /// Emits `mode-selected` and starts the summary thread.
    pub fn start(
        monitor: Arc<EventMonitor>,
        service: Arc<VmmFlushService>,
        summary_interval: Duration,
    ) -> std::io::Result<Self> {
        monitor.emit(service.mode_selected_event());
        let counters = Arc::clone(&service);
        let ticker = SummaryTicker::start(Arc::clone(&monitor), summary_interval, move || {
            counters.counters()
        })?;
        Ok(Self {
            monitor,
            service,
            ticker,
        })
    }

    /// Emits the last `flush-summary`, then `shutdown` with the totals since
    /// start, drains the queue and syncs the file (bounded wait).
    pub fn finish(self) -> Result<(), EventMonitorError> {
        self.ticker.stop();
        let totals = FlushStats::from(&self.service.counters());
        self.monitor.shutdown(Event::shutdown(&totals))
    }
}
