//! The events this component reports, each built by a typed constructor so
//! the VMM cannot misspell a name or a property.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::counters::EngineCounters;
use crate::model::{CallPath, CountersReport, HypercallInput, Level, status_key};
use hvflush_config::{FlushMode, HypervFlushConfig, HypervFlushUpdate};

/// The `source` of every event of this component.
pub const EVENT_SOURCE: &str = "hyperv-flush";

/// The kinds of event, named as in the event file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `mode-selected`: the backend and mode chosen at start.
    ModeSelected,
    /// `config-changed`: an update through the API was accepted.
    ConfigChanged,
    /// `path-first-use`: a flush path served for the first time.
    PathFirstUse,
    /// `queue-overflow`: a per-vCPU queue overflowed into a flush-all.
    QueueOverflow,
    /// `invalid-input`: a hypercall failed its input checks.
    InvalidInput,
    /// `synthetic-vmexit`: an L2 flush made L1 take a synthetic exit.
    SyntheticVmexit,
    /// `vcpu-unresponsive`: a target did not leave guest mode in time.
    VcpuUnresponsive,
    /// `executor-repaired`: a vCPU's flush registration, dropped by an
    /// INIT or RESET, was restored.
    ExecutorRepaired,
    /// `flush-summary`: counts since the previous summary.
    FlushSummary,
    /// `shutdown`: totals at exit.
    Shutdown,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 10] = [
        Self::ModeSelected,
        Self::ConfigChanged,
        Self::PathFirstUse,
        Self::QueueOverflow,
        Self::InvalidInput,
        Self::SyntheticVmexit,
        Self::VcpuUnresponsive,
        Self::ExecutorRepaired,
        Self::FlushSummary,
        Self::Shutdown,
    ];

    /// The `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModeSelected => "mode-selected",
            Self::ConfigChanged => "config-changed",
            Self::PathFirstUse => "path-first-use",
            Self::QueueOverflow => "queue-overflow",
            Self::InvalidInput => "invalid-input",
            Self::SyntheticVmexit => "synthetic-vmexit",
            Self::VcpuUnresponsive => "vcpu-unresponsive",
            Self::ExecutorRepaired => "executor-repaired",
            Self::FlushSummary => "flush-summary",
            Self::Shutdown => "shutdown",
        }
    }

    /// Kinds a misbehaving guest can trigger at will: rate-limited.
    pub fn is_rate_limited(self) -> bool {
        matches!(
            self,
            Self::QueueOverflow
                | Self::InvalidInput
                | Self::VcpuUnresponsive
                | Self::ExecutorRepaired
        )
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Flush activity counts, for `flush-summary` (since the previous one)
/// and `shutdown` (since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Flush hypercalls, all paths.
    pub hypercalls: u64,
    /// Of those, completed with a status other than success.
    pub failed_hypercalls: u64,
    /// The engine's counters.
    pub engine: EngineCounters,
}

impl From<&CountersReport> for FlushStats {
    fn from(c: &CountersReport) -> Self {
        let success = status_key(0);
        Self {
            hypercalls: c.total_hypercalls(),
            failed_hypercalls: c
                .statuses
                .iter()
                .filter(|(k, _)| **k != success)
                .map(|(_, s)| s.count)
                .sum(),
            engine: c.engine,
        }
    }
}

impl FlushStats {
    /// The counts since `earlier` (a previous snapshot of the same totals).
    pub fn since(&self, earlier: &FlushStats) -> FlushStats {
        FlushStats {
            hypercalls: self.hypercalls.saturating_sub(earlier.hypercalls),
            failed_hypercalls: self
                .failed_hypercalls
                .saturating_sub(earlier.failed_hypercalls),
            engine: self.engine.since(&earlier.engine),
        }
    }

    fn properties(&self) -> Properties {
        let mut p = Properties::new();
        p.insert("hypercalls", self.hypercalls.to_string());
        p.insert("failed_hypercalls", self.failed_hypercalls.to_string());
        for (name, _, value) in self.engine.values() {
            p.insert(name, value.to_string());
        }
        p
    }
}

/// Event properties: string values, keys in a stable order.
pub type Properties = BTreeMap<&'static str, String>;

/// One event, before it is timestamped and written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    kind: EventKind,
    properties: Option<Properties>,
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_owned()
}

impl Event {
    fn new(kind: EventKind, properties: Properties) -> Self {
        Self {
            kind,
            properties: Some(properties),
        }
    }

    /// The kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The properties (`null` in the file when `None`).
    pub fn properties(&self) -> Option<&Properties> {
        self.properties.as_ref()
    }

    pub(crate) fn insert(&mut self, key: &'static str, value: String) {
        self.properties
            .get_or_insert_with(Properties::new)
            .insert(key, value);
    }

    /// `mode-selected`: `backend` (`kvm`, `mshv`), the effective `mode`,
    /// whether L1 and L2 are served, and why (e.g. missing capabilities).
    pub fn mode_selected(
        backend: &str,
        mode: FlushMode,
        l1: bool,
        l2: bool,
        reasons: &[String],
    ) -> Self {
        let mut p = Properties::new();
        p.insert("backend", backend.to_owned());
        p.insert("mode", mode.to_string());
        p.insert("l1", on_off(l1));
        p.insert("l2", on_off(l2));
        p.insert("reasons", reasons.join("; "));
        Self::new(EventKind::ModeSelected, p)
    }

    /// `config-changed`: the keys that changed (`changed`, option-string
    /// form), the whole new configuration (`config`) and whether it waits
    /// for the next boot.
    pub fn config_changed(
        old: &HypervFlushConfig,
        new: &HypervFlushConfig,
        pending_until_reboot: bool,
    ) -> Self {
        let mut p = Properties::new();
        p.insert(
            "changed",
            HypervFlushUpdate::diff(old, new).to_option_string(),
        );
        p.insert("config", new.to_option_string());
        p.insert("pending_until_reboot", pending_until_reboot.to_string());
        Self::new(EventKind::ConfigChanged, p)
    }

    /// `path-first-use`: `path` (`l1-space` ... `l2-list-ex`) with `input`
    /// (`memory` or `fast`) served for the first time, by `vcpu`.
    pub fn path_first_use(path: CallPath, input: HypercallInput, vcpu: u32) -> Self {
        let mut p = Properties::new();
        p.insert("path", path.as_str().to_owned());
        p.insert("input", input.as_str().to_owned());
        p.insert("vcpu", vcpu.to_string());
        Self::new(EventKind::PathFirstUse, p)
    }

    /// `queue-overflow` (rate-limited): `vcpu`'s `level` queue overflowed.
    pub fn queue_overflow(vcpu: u32, level: Level) -> Self {
        let mut p = Properties::new();
        p.insert("vcpu", vcpu.to_string());
        p.insert(
            "level",
            match level {
                Level::L1 => "l1",
                Level::L2 => "l2",
            }
            .to_owned(),
        );
        Self::new(EventKind::QueueOverflow, p)
    }

    /// `invalid-input` (rate-limited): hypercall `call_code` from `vcpu`
    /// completed with `status` (`0x0003`) named `status_name`.
    pub fn invalid_input(vcpu: u32, call_code: u16, status: u16, status_name: &str) -> Self {
        let mut p = Properties::new();
        p.insert("vcpu", vcpu.to_string());
        p.insert("call", format!("{call_code:#06x}"));
        p.insert("status", status_key(status));
        p.insert("status_name", status_name.to_owned());
        Self::new(EventKind::InvalidInput, p)
    }

    /// `synthetic-vmexit`: after an L2 flush by `vcpu` the partition assist
    /// page's `tlb_lock_count` was non-zero, so L1 takes a synthetic exit.
    pub fn synthetic_vmexit(vcpu: u32, tlb_lock_count: u32) -> Self {
        let mut p = Properties::new();
        p.insert("vcpu", vcpu.to_string());
        p.insert("tlb_lock_count", tlb_lock_count.to_string());
        Self::new(EventKind::SyntheticVmexit, p)
    }

    /// `vcpu-unresponsive` (rate-limited): `vcpu`, kicked by `initiator`,
    /// did not leave guest mode within `waited`.
    pub fn vcpu_unresponsive(vcpu: u32, initiator: u32, waited: Duration) -> Self {
        let mut p = Properties::new();
        p.insert("vcpu", vcpu.to_string());
        p.insert("initiator", initiator.to_string());
        p.insert("waited_us", waited.as_micros().to_string());
        Self::new(EventKind::VcpuUnresponsive, p)
    }

    /// `executor-repaired` (rate-limited: a guest can INIT its vCPUs at
    /// will): KVM had dropped `vcpu`'s steal-time registration, which the
    /// userspace flush executor relies on (an INIT or RESET of the vCPU
    /// clears it); it was restored before the vCPU's next flush.
    pub fn executor_repaired(vcpu: u32) -> Self {
        let mut p = Properties::new();
        p.insert("vcpu", vcpu.to_string());
        p.insert("cause", "registration dropped by INIT or RESET".to_owned());
        Self::new(EventKind::ExecutorRepaired, p)
    }

    /// `flush-summary`: counts since the previous summary over `interval`.
    /// The monitor adds `dropped_events` (events dropped since the
    /// previous summary) when it writes it.
    pub fn flush_summary(interval: Duration, since_last: &FlushStats) -> Self {
        let mut p = since_last.properties();
        p.insert("interval_ms", interval.as_millis().to_string());
        Self::new(EventKind::FlushSummary, p)
    }

    /// `shutdown`: totals since start. The monitor adds `dropped_events`
    /// (all events dropped since start).
    pub fn shutdown(totals: &FlushStats) -> Self {
        Self::new(EventKind::Shutdown, totals.properties())
    }
}
