//! Flush-path events for `--event-monitor`: [`EventObserver`] turns the
//! engine's [`FlushObserver`] calls into the typed [`Event`]s, and
//! [`EventReporting`] writes the life-cycle ones (`mode-selected`, the
//! periodic `flush-summary`, `shutdown`).
//!
//! The observer runs on vCPU threads: it only builds an event and hands it
//! to [`EventMonitor::emit`], which never blocks (bounded queue, rate
//! limits for the kinds a guest can trigger at will).

use std::sync::Arc;
use std::time::Duration;

use hvflush_api::FlushService;
use hvflush_api::events::{
    Event, EventKind, EventMonitor, EventMonitorError, FlushStats, SummaryTicker,
};
use hvflush_api::model::HypercallInput;
use hyperv_flush::abi::{HvCallCode, HvStatus};
use hyperv_flush::engine::{FlushObserver, HypercallKind, InputKind, Level};

use crate::service::{VmmFlushService, api_level, api_path};

/// A vCPU index as the events print it.
fn vcpu_id(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Forwards the engine's flush-path events to the event monitor.
pub struct EventObserver {
    monitor: Arc<EventMonitor>,
}

impl EventObserver {
    /// An observer emitting to `monitor`.
    pub fn new(monitor: Arc<EventMonitor>) -> Self {
        Self { monitor }
    }
}

impl FlushObserver for EventObserver {
    fn path_first_use(&self, caller: usize, path: HypercallKind) {
        let input = match path.input {
            InputKind::Memory => HypercallInput::Memory,
            InputKind::Fast => HypercallInput::Fast,
        };
        self.monitor.emit(Event::path_first_use(
            api_path(path.level, path.call),
            input,
            vcpu_id(caller),
        ));
    }

    // Guest-triggerable kinds are built only once the rate limiter let
    // them through: a guest's stream of bad calls allocates nothing.
    fn queue_overflow(&self, target: usize, level: Level) {
        self.monitor.emit_with(EventKind::QueueOverflow, || {
            Event::queue_overflow(vcpu_id(target), api_level(level))
        });
    }

    fn invalid_input(&self, caller: usize, call: HvCallCode, status: HvStatus) {
        self.monitor.emit_with(EventKind::InvalidInput, || {
            let name = format!("HV_STATUS_{}", status.name().to_ascii_uppercase());
            Event::invalid_input(vcpu_id(caller), call.0, status.0, &name)
        });
    }

    fn synthetic_vmexit(&self, caller: usize, tlb_lock_count: u32) {
        self.monitor
            .emit(Event::synthetic_vmexit(vcpu_id(caller), tlb_lock_count));
    }

    fn executor_repaired(&self, vcpu: usize) {
        self.monitor.emit_with(EventKind::ExecutorRepaired, || {
            Event::executor_repaired(vcpu_id(vcpu))
        });
    }

    fn vcpu_unresponsive(&self, initiator: usize, target: usize, waited: Duration) {
        self.monitor.emit_with(EventKind::VcpuUnresponsive, || {
            Event::vcpu_unresponsive(vcpu_id(target), vcpu_id(initiator), waited)
        });
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
