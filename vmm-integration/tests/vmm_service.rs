//! `VmmFlushService` without a VM: runtime toggle semantics (docs/api.md),
//! refusals, the counters mapping and the `config-changed` events, over a
//! real engine `Partition` and decisions made from host fixtures.

mod common;

use std::io::Read;
use std::sync::Arc;

use common::userspace_host;
use hvflush_api::FlushService;
use hvflush_api::events::{Event, EventMonitor, MonitorOptions};
use hvflush_api::model::{self, Feature, ServicePath, UpdateError, UpdateOutcome};
use hvflush_config::{HypervFlushConfig, HypervFlushUpdate};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::{FlushCall, Offer};
use hyperv_flush::engine::{self, CountersSnapshot, InputKind, Partition, PartitionConfig};
use vmm_integration::decision::{self, Decision, FlushPath};
use vmm_integration::service::{VmmFlushService, counters_report};

struct Fixture {
    service: VmmFlushService,
    partition: Arc<Partition>,
    boot_offer: Offer,
}

fn service_with(decision: Decision, monitor: Option<Arc<EventMonitor>>) -> Fixture {
    let mut config = PartitionConfig::new(2);
    config.offer = decision.engine_offer();
    let partition = Arc::new(Partition::new(config).unwrap());
    Fixture {
        boot_offer: decision.engine_offer(),
        service: VmmFlushService::new(
            Arc::clone(&partition),
            decision,
            userspace_host(),
            HypervFlushConfig::default(),
            monitor,
        ),
        partition,
    }
}

fn userspace_service() -> Fixture {
    let decision = decision::decide(&HypervFlushConfig::default(), &userspace_host()).unwrap();
    assert_eq!(decision.selected_mode, FlushPath::Userspace);
    service_with(decision, None)
}

fn update(text: &str) -> HypervFlushUpdate {
    HypervFlushUpdate::parse(text).unwrap()
}

#[test]
fn l1_toggles_at_once_in_userspace_mode() {
    let fx = userspace_service();
    let service = &fx.service;
    assert_eq!(
        service.update(update("l1=off")).unwrap(),
        UpdateOutcome::Applied
    );
    assert!(!fx.partition.offer().remote_flush);
    let info = service.info();
    assert!(!info.config.l1);
    assert!(info.pending_config.is_none(), "the next boot follows");
    let l1 = &info.features[&Feature::L1];
    assert!(!l1.enabled && !l1.effective && l1.path == ServicePath::None);
    assert!(
        l1.reasons
            .iter()
            .any(|r| r.contains("HV_STATUS_ACCESS_DENIED"))
    );
    assert!(!info.features[&Feature::ExMasks].effective);

    assert_eq!(
        service.update(update("l1=on")).unwrap(),
        UpdateOutcome::Applied
    );
    let offer = fx.partition.offer();
    assert_eq!(offer, fx.boot_offer);
    assert!(offer.remote_flush);
    let l1 = &service.info().features[&Feature::L1];
    assert!(l1.effective && l1.path == ServicePath::Userspace);
}

#[test]
fn cpuid_visible_changes_wait_for_reboot() {
    let fx = userspace_service();
    let service = &fx.service;
    let UpdateOutcome::PendingUntilReboot(info) = service.update(update("ex_masks=off")).unwrap()
    else {
        panic!("ex_masks is seen through CPUID");
    };
    assert!(info.config.ex_masks, "in force until reboot");
    assert!(!info.pending_config.as_ref().unwrap().ex_masks);
    let ex = &info.features[&Feature::ExMasks];
    assert!(ex.effective && ex.pending_until_reboot);
    assert!(fx.partition.offer().ex_masks, "the engine is unchanged");

    // l1 alongside a pending change: l1 now, the rest still pending.
    assert_eq!(
        service.update(update("l1=off")).unwrap(),
        UpdateOutcome::Applied
    );
    let info = service.info();
    assert!(!info.config.l1);
    assert!(!info.pending_config.as_ref().unwrap().l1);

    // Taking the change back leaves nothing pending.
    service.update(update("l1=on")).unwrap();
    assert_eq!(
        service.update(update("ex_masks=on")).unwrap(),
        UpdateOutcome::Applied
    );
    assert!(service.info().pending_config.is_none());
    assert_eq!(service.update(update("")).unwrap(), UpdateOutcome::Applied);
}

#[test]
fn impossible_updates_are_refused_unchanged() {
    let fx = userspace_service();
    let service = &fx.service;
    let before = service.info();
    let err = service.update(update("l2=on")).unwrap_err();
    let UpdateError::NotPossible { reasons } = &err else {
        panic!("{err:?}");
    };
    assert!(reasons[0].starts_with("l2=on refused"), "{reasons:?}");
    assert!(service.update(update("mode=offload")).is_err());
    assert_eq!(service.info(), before);
}

#[test]
fn offload_mode_changes_wait_for_reboot() {
    let mut decision = decision::decide(&HypervFlushConfig::default(), &userspace_host()).unwrap();
    decision.selected_mode = FlushPath::Offload;
    decision.l1.path = FlushPath::Offload;
    let fx = service_with(decision, None);
    let service = &fx.service;
    let UpdateOutcome::PendingUntilReboot(info) = service.update(update("l1=off")).unwrap() else {
        panic!("offload changes wait for reboot");
    };
    assert!(info.config.l1);
    assert!(info.features[&Feature::L1].pending_until_reboot);
    assert!(fx.partition.offer().remote_flush);
}

#[test]
fn counters_map_every_path_and_status() {
    let mut snapshot = CountersSnapshot::default();
    let list_ex_fast = engine::HypercallKind {
        level: engine::Level::L1,
        call: FlushCall::ListEx,
        input: InputKind::Fast,
    };
    snapshot.hypercalls[list_ex_fast.index()] = 5;
    snapshot.status[HvStatus::SUCCESS.index().unwrap()] = 3;
    snapshot.status[HvStatus::ACCESS_DENIED.index().unwrap()] = 2;
    snapshot.unresponsive_vcpus = 1;
    snapshot.latency_p50_ns = Some(100);
    // The engine times a sample of the calls.
    snapshot.latency_samples = 2;
    let report = counters_report(&snapshot);
    assert_eq!(report.hypercalls.len(), 8);
    let path = model::CallPath {
        level: model::Level::L1,
        call: model::FlushCall::ListEx,
    };
    assert_eq!(report.hypercalls[&path].fast, 5);
    assert_eq!(report.total_hypercalls(), 5);
    assert_eq!(report.statuses["0x0006"].name, "HV_STATUS_ACCESS_DENIED");
    assert_eq!(report.statuses["0x0000"].count, 3);
    assert_eq!(report.statuses.len(), 2);
    assert_eq!(report.engine.unresponsive_vcpus, 1);
    assert_eq!(report.latency.samples, 2);
    assert_eq!(report.latency.p50_ns, Some(100));
}

#[test]
fn accepted_updates_are_reported_as_events() {
    let path = std::env::temp_dir().join(format!("hvflush-service-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let monitor = Arc::new(EventMonitor::from_file(file, MonitorOptions::default()).unwrap());
    let decision = decision::decide(&HypervFlushConfig::default(), &userspace_host()).unwrap();
    let fx = service_with(decision, Some(Arc::clone(&monitor)));
    let service = &fx.service;
    monitor.emit(service.mode_selected_event());
    service.update(update("l1=off")).unwrap();
    service.update(update("vendor=kvm")).unwrap();
    service.update(update("l2=on")).unwrap_err();
    monitor
        .shutdown(Event::shutdown(&Default::default()))
        .unwrap();
    let mut text = String::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let events = hvflush_api::events::parse_event_stream(&text).unwrap();
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "mode-selected",
            "config-changed",
            "config-changed",
            "shutdown"
        ]
    );
    assert_eq!(events[0]["properties"]["mode"], "userspace");
    assert_eq!(events[0]["properties"]["l2"], "off");
    assert_eq!(events[1]["properties"]["changed"], "l1=off");
    assert_eq!(events[1]["properties"]["pending_until_reboot"], "false");
    assert_eq!(events[2]["properties"]["changed"], "vendor=kvm");
    assert_eq!(events[2]["properties"]["pending_until_reboot"], "true");
}
