//! The REST API's view of a running VM: [`VmmFlushService`] implements
//! [`FlushService`] over the engine and the boot decision.
//!
//! Two configurations are tracked: the one in force (what the guest is
//! served now) and the one the next boot will use. Only `l1` in userspace
//! mode changes the one in force (the engine's offer is switched at once);
//! everything else the guest learns from CPUID or the hypercall page at
//! boot, so it waits for a reboot (docs/api.md, "Runtime toggle semantics").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hvflush_api::events::{Event, EventMonitor};
use hvflush_api::model::{
    self, CountersReport, Feature, FeatureState, FlushInfo, HypercallInput, LatencyReport,
    ServicePath, UpdateError, UpdateOutcome,
};
use hvflush_api::{EngineCounters, FlushService};
use hvflush_config::{FlushMode, HypervFlushConfig, HypervFlushUpdate, L2Mode};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::{FlushCall, Offer};
use hyperv_flush::engine::{self, CountersSnapshot, InputKind, Partition};

use crate::decision::{self, ChangeTiming, Decision, FlushPath, runtime_change_effect};
use crate::facts::{Backend, HostFacts};
use crate::kernel_counters::KernelCounterSource;

/// Why runtime `l1=off` leaves the guest's CPUID as it is.
const L1_OFF_AT_RUNTIME: &str = "l1=off at run time: flush hypercalls complete with HV_STATUS_ACCESS_DENIED; the guest's CPUID advertises them until the next boot";

struct Configs {
    /// In force now.
    current: HypervFlushConfig,
    /// What the next boot uses, when it differs from `current`.
    pending: Option<HypervFlushConfig>,
}

impl Configs {
    fn next_boot(&self) -> &HypervFlushConfig {
        self.pending.as_ref().unwrap_or(&self.current)
    }
}

/// The [`FlushService`] of a VM served by this component: the REST API's
/// view of its engine, boot decision and configuration.
pub struct VmmFlushService {
    partition: Arc<Partition>,
    decision: Decision,
    host: HostFacts,
    monitor: Option<Arc<EventMonitor>>,
    kernel: Option<Arc<KernelCounterSource>>,
    configs: Mutex<Configs>,
}

impl VmmFlushService {
    /// Adds the kernel's counters (KVM statistics, tracepoints) to
    /// `counters()`.
    pub fn with_kernel_counters(mut self, source: Arc<KernelCounterSource>) -> Self {
        self.kernel = Some(source);
        self
    }

    /// The service from its parts: the engine, the boot decision, the host
    /// facts it was made from and the boot configuration.
    pub fn new(
        partition: Arc<Partition>,
        decision: Decision,
        host: HostFacts,
        boot_config: HypervFlushConfig,
        monitor: Option<Arc<EventMonitor>>,
    ) -> Self {
        Self {
            partition,
            decision,
            host,
            monitor,
            kernel: None,
            configs: Mutex::new(Configs {
                current: boot_config,
                pending: None,
            }),
        }
    }

    /// The `mode-selected` event for the boot decision.
    pub fn mode_selected_event(&self) -> Event {
        let d = &self.decision;
        let mut reasons = d.l1.reasons.clone();
        reasons.extend(d.l2.reasons.iter().cloned());
        Event::mode_selected(
            backend_name(d.backend),
            flush_mode(d.selected_mode),
            d.l1.available,
            d.l2.available,
            &reasons,
        )
    }

    fn lock(&self) -> MutexGuard<'_, Configs> {
        // The state is replaced whole under the lock: a panic cannot leave
        // it half-written, so a poisoned lock is still consistent.
        self.configs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `l1` is switched at once: userspace mode, with the flush
    /// calls in the boot CPUID (the engine can serve them).
    fn l1_applies_now(&self, current: &HypervFlushConfig) -> bool {
        let mut toggled = current.clone();
        toggled.l1 = !toggled.l1;
        self.decision.l1.available
            && runtime_change_effect(&self.decision, current, &toggled).timing == ChangeTiming::Now
    }

    fn info_of(&self, configs: &Configs) -> FlushInfo {
        let current = &configs.current;
        let pending = configs.pending.as_ref();
        let d = &self.decision;
        let pending_reason = |key: Feature, changed: bool, value: String| {
            changed.then(|| format!("{}={value} at the next boot", key.as_str()))
        };

        let l1_effective = d.l1.available && self.partition.offer().remote_flush;
        let l1_path = if l1_effective {
            service_path(d.l1.path)
        } else {
            ServicePath::None
        };
        let mut l1_reasons = d.l1.reasons.clone();
        if d.l1.available && !l1_effective {
            l1_reasons.push(L1_OFF_AT_RUNTIME.to_owned());
        }
        let l1_pending = pending.is_some_and(|p| p.l1 != current.l1);
        l1_reasons.extend(pending_reason(
            Feature::L1,
            l1_pending,
            on_off(pending.is_some_and(|p| p.l1)),
        ));

        let mut features = BTreeMap::new();
        features.insert(
            Feature::L1,
            FeatureState {
                enabled: current.l1,
                effective: l1_effective,
                path: l1_path,
                pending_until_reboot: l1_pending,
                reasons: l1_reasons,
            },
        );

        let l2_pending = pending.filter(|p| p.l2 != current.l2);
        let mut l2_reasons = d.l2.reasons.clone();
        l2_reasons.extend(pending_reason(
            Feature::L2,
            l2_pending.is_some(),
            l2_pending.map(|p| p.l2.to_string()).unwrap_or_default(),
        ));
        features.insert(
            Feature::L2,
            FeatureState {
                enabled: current.l2 != L2Mode::Off,
                effective: d.l2.available,
                path: if d.l2.available {
                    service_path(d.l2.path)
                } else {
                    ServicePath::None
                },
                pending_until_reboot: l2_pending.is_some(),
                reasons: l2_reasons,
            },
        );

        type Pick = fn(&HypervFlushConfig) -> bool;
        let subs: [(Feature, Pick, bool); 3] = [
            (Feature::ExMasks, |c| c.ex_masks, d.features.ex_masks),
            (Feature::XmmInput, |c| c.xmm_input, d.features.xmm_input),
            (
                Feature::ExtendedRanges,
                |c| c.extended_ranges,
                d.features.extended_ranges,
            ),
        ];
        for (feature, pick, offered) in subs {
            let effective = offered && l1_effective;
            // The decision words its sub-feature reasons "<key>=off: ..." or
            // "<key> not offered: ...".
            let mut reasons: Vec<String> =
                d.l1.reasons
                    .iter()
                    .filter(|r| r.starts_with(feature.as_str()))
                    .cloned()
                    .collect();
            if offered && !l1_effective {
                reasons.push("not served while l1 is off".to_owned());
            }
            let changed = pending.is_some_and(|p| pick(p) != pick(current));
            reasons.extend(pending_reason(
                feature,
                changed,
                on_off(pending.is_some_and(pick)),
            ));
            features.insert(
                feature,
                FeatureState {
                    enabled: pick(current),
                    effective,
                    path: if effective {
                        l1_path
                    } else {
                        ServicePath::None
                    },
                    pending_until_reboot: changed,
                    reasons,
                },
            );
        }

        FlushInfo {
            backend: backend_name(d.backend).to_owned(),
            effective_mode: flush_mode(d.selected_mode),
            config: current.clone(),
            pending_config: configs.pending.clone(),
            features,
        }
    }
}

impl FlushService for VmmFlushService {
    fn info(&self) -> FlushInfo {
        self.info_of(&self.lock())
    }

    fn update(&self, update: HypervFlushUpdate) -> Result<UpdateOutcome, UpdateError> {
        let mut configs = self.lock();
        let old_next = configs.next_boot().clone();
        let next = update
            .apply_to(&old_next)
            .map_err(|e| UpdateError::Invalid {
                reasons: hvflush_api::error_chain(&e),
            })?;
        if next == old_next {
            return Ok(UpdateOutcome::Applied);
        }
        // The next boot must be able to start with it: the same decision
        // the VMM makes at start, on the same host facts.
        decision::decide(&next, &self.host).map_err(|refusal| UpdateError::NotPossible {
            reasons: vec![refusal.to_string()],
        })?;

        let mut current = configs.current.clone();
        let l1_now = next.l1 != current.l1 && self.l1_applies_now(&current);
        if l1_now {
            current.l1 = next.l1;
        }
        let waits = {
            let mut rest = HypervFlushUpdate::diff(&old_next, &next);
            if l1_now {
                rest.l1 = None;
            }
            !rest.is_empty()
        };
        configs.pending = (next != current).then(|| next.clone());
        configs.current = current;
        let pending = waits && configs.pending.is_some();
        // Queued before the engine changes, so the event file shows the
        // change ahead of its effects (e.g. `invalid-input` after l1=off).
        if let Some(monitor) = &self.monitor {
            monitor.emit(Event::config_changed(&old_next, &next, pending));
        }
        if l1_now {
            self.partition.set_offer(Offer {
                remote_flush: next.l1,
                ..self.decision.engine_offer()
            });
        }
        Ok(if pending {
            UpdateOutcome::PendingUntilReboot(self.info_of(&configs))
        } else {
            UpdateOutcome::Applied
        })
    }

    fn counters(&self) -> CountersReport {
        let mut report = counters_report(&self.partition.counters());
        report.events_dropped = self.monitor.as_ref().map_or(0, |m| m.dropped_total());
        report.kernel = self.kernel.as_ref().map(|k| k.read());
        report
    }
}

/// The API's counters from the engine's snapshot (without `events_dropped`).
pub fn counters_report(snapshot: &CountersSnapshot) -> CountersReport {
    let mut report = CountersReport::default();
    for path in engine::HypercallKind::all() {
        report.add_hypercalls(
            api_path(path.level, path.call),
            match path.input {
                InputKind::Memory => HypercallInput::Memory,
                InputKind::Fast => HypercallInput::Fast,
            },
            snapshot.path(path),
        );
    }
    // The engine completes with the statuses of `HvStatus::ALL` only, so
    // its "other" slot is always zero and has no code to report under.
    for status in HvStatus::ALL {
        let count = snapshot.with_status(status);
        if count > 0 {
            let name = format!("HV_STATUS_{}", status.name().to_ascii_uppercase());
            report.add_status(status.0, &name, count);
        }
    }
    report.engine = engine_counters(snapshot);
    report.latency = LatencyReport {
        // The engine times a sample of the calls (see CountersSnapshot).
        samples: snapshot.latency_samples,
        p50_ns: snapshot.latency_p50_ns,
        p99_ns: snapshot.latency_p99_ns,
    };
    report
}

/// The engine's scalar counters in the API's set: the one place each
/// engine counter is given its API name (`tests/vmm_service.rs` checks
/// that none is left out).
pub fn engine_counters(s: &CountersSnapshot) -> EngineCounters {
    EngineCounters {
        targets: s.targets,
        flushes_requested: s.flushes_requested,
        flushes_taken: s.flushes_taken,
        flushes_executed: s.flushes_executed,
        executor_repairs: s.executor_repairs,
        flush_all_fallbacks: s.flush_all_fallbacks,
        kicks: s.kicks,
        preempted_flushes: s.preempted_flushes,
        targets_without_kick: s.targets_without_kick,
        halted_not_waited_for: s.halted_not_waited_for,
        unresponsive_vcpus: s.unresponsive_vcpus,
        synthetic_exits: s.synthetic_exits,
        invalid_opcode_injections: s.invalid_opcode_injections,
        calls_without_guest_os_id: s.calls_without_guest_os_id,
    }
}

/// The API's name for an engine level and call.
pub(crate) fn api_path(level: engine::Level, call: FlushCall) -> model::CallPath {
    model::CallPath {
        level: api_level(level),
        call: match call {
            FlushCall::Space => model::FlushCall::Space,
            FlushCall::List => model::FlushCall::List,
            FlushCall::SpaceEx => model::FlushCall::SpaceEx,
            FlushCall::ListEx => model::FlushCall::ListEx,
        },
    }
}

pub(crate) fn api_level(level: engine::Level) -> model::Level {
    match level {
        engine::Level::L1 => model::Level::L1,
        engine::Level::L2 => model::Level::L2,
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Kvm => "kvm",
        Backend::Mshv => "mshv",
        Backend::None => "none",
    }
}

fn flush_mode(path: FlushPath) -> FlushMode {
    match path {
        FlushPath::Offload => FlushMode::Offload,
        FlushPath::Userspace => FlushMode::Userspace,
        FlushPath::Off => FlushMode::Off,
    }
}

fn service_path(path: FlushPath) -> ServicePath {
    match path {
        FlushPath::Offload => ServicePath::Offload,
        FlushPath::Userspace => ServicePath::Userspace,
        FlushPath::Off => ServicePath::None,
    }
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.to_owned()
}
