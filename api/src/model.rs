//! The JSON bodies of the REST API, shared by the server, the client and
//! the VMM's [`FlushService`](crate::FlushService) implementation.
//!
//! Maps are keyed by stable lowercase names (`BTreeMap`, so the JSON order
//! is stable too). Response types accept unknown fields so an older client
//! can read a newer server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counters::EngineCounters;

use hvflush_config::{FlushMode, HypervFlushConfig};

/// `GET /api/v1/vmm.ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    /// Version of the VMM (the workspace version).
    pub version: String,
    /// Process id of the VMM.
    pub pid: u32,
}

/// A feature the guest can be offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// L1 flush hypercalls.
    L1,
    /// L2 Direct Virtual Flush.
    L2,
    /// The Ex (sparse VP set) calls.
    ExMasks,
    /// XMM fast input.
    XmmInput,
    /// Extended GVA ranges.
    ExtendedRanges,
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 5] = [
        Self::L1,
        Self::L2,
        Self::ExMasks,
        Self::XmmInput,
        Self::ExtendedRanges,
    ];

    /// The lowercase name (the config key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::ExMasks => "ex_masks",
            Self::XmmInput => "xmm_input",
            Self::ExtendedRanges => "extended_ranges",
        }
    }
}

/// Who serves a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServicePath {
    /// KVM in-kernel Hyper-V or the MSHV hypervisor.
    Offload,
    /// The VMM's userspace engine.
    Userspace,
    /// Nobody: the feature is not served.
    None,
}

impl ServicePath {
    /// Lowercase name for human output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offload => "offload",
            Self::Userspace => "userspace",
            Self::None => "none",
        }
    }
}

/// The state of one feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureState {
    /// Asked for by the configuration.
    pub enabled: bool,
    /// Served right now.
    pub effective: bool,
    /// Who serves it.
    pub path: ServicePath,
    /// A change is accepted but applies at the next guest boot.
    pub pending_until_reboot: bool,
    /// Why `effective` differs from `enabled`, or what is pending.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// `GET /api/v1/vm.hyperv-flush`, and the body of a `PUT` whose change is
/// pending until reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushInfo {
    /// The backend in use: `kvm`, `mshv`, ...
    pub backend: String,
    /// The mode chosen: `Offload`, `Userspace` or `Off` (never `Auto`).
    pub effective_mode: FlushMode,
    /// The configuration in force.
    pub config: HypervFlushConfig,
    /// The configuration the next boot will use, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_config: Option<HypervFlushConfig>,
    /// Per feature state, keyed by [`Feature`] name.
    pub features: BTreeMap<Feature, FeatureState>,
}

/// The result of an accepted update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// In force now (→ 204).
    Applied,
    /// Accepted, applies at the next boot (→ 200 with this state).
    PendingUntilReboot(FlushInfo),
}

/// Why the VMM refuses an update.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Valid, but not possible on this host or VM (→ 409).
    #[error("Update not possible here")]
    NotPossible {
        /// Why, most general first (e.g. "KVM lacks KVM_CAP_HYPERV_TLBFLUSH").
        reasons: Vec<String>,
    },
    /// Invalid in the VM's current state (→ 400).
    #[error("Invalid update")]
    Invalid {
        /// Why.
        reasons: Vec<String>,
    },
}

impl UpdateError {
    /// The error chain for the response body: this message, then the reasons.
    pub fn chain(&self) -> Vec<String> {
        let reasons = match self {
            Self::NotPossible { reasons } | Self::Invalid { reasons } => reasons,
        };
        std::iter::once(self.to_string())
            .chain(reasons.iter().cloned())
            .collect()
    }
}

/// The hypercall level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// From the L1 guest.
    L1,
    /// From an L2 guest (Direct Virtual Flush).
    L2,
}

/// The flush hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlushCall {
    /// HvFlushVirtualAddressSpace (0x0002).
    Space,
    /// HvFlushVirtualAddressList (0x0003).
    List,
    /// HvFlushVirtualAddressSpaceEx (0x0013).
    SpaceEx,
    /// HvFlushVirtualAddressListEx (0x0014).
    ListEx,
}

/// A level and call: the key of the per-path counters and the `path`
/// property of `path-first-use` (`l1-space`, ..., `l2-list-ex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CallPath {
    /// The level.
    pub level: Level,
    /// The call.
    pub call: FlushCall,
}

impl CallPath {
    /// Every path, in report order.
    pub const ALL: [CallPath; 8] = {
        use FlushCall::*;
        use Level::*;
        [
            CallPath {
                level: L1,
                call: Space,
            },
            CallPath {
                level: L1,
                call: List,
            },
            CallPath {
                level: L1,
                call: SpaceEx,
            },
            CallPath {
                level: L1,
                call: ListEx,
            },
            CallPath {
                level: L2,
                call: Space,
            },
            CallPath {
                level: L2,
                call: List,
            },
            CallPath {
                level: L2,
                call: SpaceEx,
            },
            CallPath {
                level: L2,
                call: ListEx,
            },
        ]
    };

    /// The stable name, e.g. `l1-space-ex`.
    pub fn as_str(self) -> &'static str {
        match (self.level, self.call) {
            (Level::L1, FlushCall::Space) => "l1-space",
            (Level::L1, FlushCall::List) => "l1-list",
            (Level::L1, FlushCall::SpaceEx) => "l1-space-ex",
            (Level::L1, FlushCall::ListEx) => "l1-list-ex",
            (Level::L2, FlushCall::Space) => "l2-space",
            (Level::L2, FlushCall::List) => "l2-list",
            (Level::L2, FlushCall::SpaceEx) => "l2-space-ex",
            (Level::L2, FlushCall::ListEx) => "l2-list-ex",
        }
    }
}

impl From<CallPath> for String {
    fn from(p: CallPath) -> String {
        p.as_str().to_owned()
    }
}

impl TryFrom<String> for CallPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown flush path `{s}`"))
    }
}

/// How the hypercall input was passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HypercallInput {
    /// Through a guest memory page.
    Memory,
    /// In registers (fast, XMM).
    Fast,
}

impl HypercallInput {
    /// The stable name: `memory` or `fast`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Fast => "fast",
        }
    }
}

/// Hypercall counts of one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCounts {
    /// Memory input.
    pub memory: u64,
    /// Fast (register/XMM) input.
    pub fast: u64,
}

/// Completions with one HV status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCount {
    /// TLFS name, e.g. `HV_STATUS_ACCESS_DENIED`.
    pub name: String,
    /// Hypercalls that completed with it.
    pub count: u64,
}

/// Hypercall handling latency, from the exit to the re-entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Samples the percentiles are taken over.
    pub samples: u64,
    /// Median in nanoseconds; `null` without samples.
    pub p50_ns: Option<u64>,
    /// 99th percentile in nanoseconds; `null` without samples.
    pub p99_ns: Option<u64>,
}

/// `GET /api/v1/vm.hyperv-flush-counters`: totals since the VM started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersReport {
    /// Hypercalls per path (all eight paths are always present).
    pub hypercalls: BTreeMap<CallPath, PathCounts>,
    /// Completions per HV status, keyed by [`status_key`] (`0x0006`).
    pub statuses: BTreeMap<String, StatusCount>,
    /// The engine's scalar counters (flattened: `targets`, `kicks`, ...).
    #[serde(flatten)]
    pub engine: EngineCounters,
    /// Hypercall latency.
    pub latency: LatencyReport,
    /// Events the event monitor dropped under pressure.
    pub events_dropped: u64,
    /// What the kernel itself counts for this VM (KVM binary statistics,
    /// and in offload mode the Hyper-V flush tracepoints), when readable.
    /// In offload mode the kernel serves the flushes, so these are the
    /// counters that move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelCounters>,
}

/// Counters the kernel keeps for the VM's vCPUs, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCounters {
    /// KVM `hypercalls` statistic (every hypercall the kernel handled).
    pub hypercalls: Option<u64>,
    /// KVM `tlb_flush` statistic (guest TLB flushes the kernel performed,
    /// including those the userspace path requested).
    pub tlb_flushes: Option<u64>,
    /// L1 flush hypercalls served in the kernel (tracepoints; offload).
    pub l1_flush_calls: Option<u64>,
    /// L2 (direct) flush hypercalls served in the kernel (tracepoints; offload).
    pub l2_flush_calls: Option<u64>,
    /// Why a counter is absent.
    pub limitations: Vec<String>,
}

/// The key of [`CountersReport::statuses`] for an HV status code.
pub fn status_key(code: u16) -> String {
    format!("{code:#06x}")
}

impl Default for CountersReport {
    fn default() -> Self {
        Self {
            hypercalls: CallPath::ALL
                .into_iter()
                .map(|p| (p, PathCounts::default()))
                .collect(),
            statuses: BTreeMap::new(),
            engine: EngineCounters::default(),
            latency: LatencyReport::default(),
            events_dropped: 0,
            kernel: None,
        }
    }
}

impl CountersReport {
    /// Adds `count` hypercalls of `path` with `input`.
    pub fn add_hypercalls(&mut self, path: CallPath, input: HypercallInput, count: u64) {
        let counts = self.hypercalls.entry(path).or_default();
        match input {
            HypercallInput::Memory => counts.memory += count,
            HypercallInput::Fast => counts.fast += count,
        }
    }

    /// Adds `count` completions with status `code` called `name`.
    pub fn add_status(&mut self, code: u16, name: &str, count: u64) {
        self.statuses
            .entry(status_key(code))
            .or_insert_with(|| StatusCount {
                name: name.to_owned(),
                count: 0,
            })
            .count += count;
    }

    /// All hypercalls, every path and input.
    pub fn total_hypercalls(&self) -> u64 {
        self.hypercalls.values().map(|c| c.memory + c.fast).sum()
    }
}
