//! `EventObserver`: each engine notification becomes the documented event
//! (docs/api.md, "Events"), naming the vCPU the engine reported.

use std::sync::Arc;
use std::time::Duration;

use hvflush_api::events::{Event, EventMonitor, FlushStats, MonitorOptions, parse_event_stream};
use hyperv_flush::abi::{HvCallCode, HvStatus};
use hyperv_flush::decode::FlushCall;
use hyperv_flush::engine::{FlushObserver, HypercallKind, InputKind, Level};
use serde_json::Value;
use vmm_integration::events::EventObserver;

/// Runs `f` against an observer writing to a fresh file and returns the
/// events written, in order.
fn observe(name: &str, f: impl FnOnce(&EventObserver)) -> Vec<Value> {
    let path = std::env::temp_dir().join(format!(
        "hvflush-observer-{}-{name}.json",
        std::process::id()
    ));
    let file = std::fs::File::create(&path).unwrap();
    let monitor = Arc::new(EventMonitor::from_file(file, MonitorOptions::default()).unwrap());
    f(&EventObserver::new(Arc::clone(&monitor)));
    monitor
        .shutdown(Event::shutdown(&FlushStats::default()))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut events = parse_event_stream(&text).unwrap();
    assert_eq!(events.pop().unwrap()["event"], "shutdown");
    events
}

#[test]
fn path_first_use_names_the_path_input_and_calling_vcpu() {
    let events = observe("first-use", |observer| {
        observer.path_first_use(
            3,
            HypercallKind {
                level: Level::L1,
                call: FlushCall::ListEx,
                input: InputKind::Fast,
            },
        );
        observer.path_first_use(
            0,
            HypercallKind {
                level: Level::L2,
                call: FlushCall::Space,
                input: InputKind::Memory,
            },
        );
    });
    assert_eq!(events.len(), 2);
    let p = &events[0]["properties"];
    assert_eq!(events[0]["event"], "path-first-use");
    assert_eq!(events[0]["source"], "hyperv-flush");
    assert_eq!(p["path"], "l1-list-ex");
    assert_eq!(p["input"], "fast");
    assert_eq!(p["vcpu"], "3");
    let p = &events[1]["properties"];
    assert_eq!(p["path"], "l2-space");
    assert_eq!(p["input"], "memory");
    assert_eq!(p["vcpu"], "0");
}

#[test]
fn failures_overflows_and_unresponsive_targets_are_reported() {
    let events = observe("failures", |observer| {
        observer.invalid_input(
            1,
            HvCallCode::FLUSH_VIRTUAL_ADDRESS_LIST_EX,
            HvStatus::ACCESS_DENIED,
        );
        observer.queue_overflow(2, Level::L2);
        observer.vcpu_unresponsive(0, 1, Duration::from_millis(2));
    });
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["invalid-input", "queue-overflow", "vcpu-unresponsive"]
    );
    let p = &events[0]["properties"];
    assert_eq!(p["vcpu"], "1");
    assert_eq!(p["status"], "0x0006");
    assert_eq!(p["status_name"], "HV_STATUS_ACCESS_DENIED");
    assert_eq!(p["call"], "0x0014");
    assert_eq!(p["suppressed"], "0");
    let p = &events[1]["properties"];
    assert_eq!(p["vcpu"], "2");
    assert_eq!(p["level"], "l2");
    let p = &events[2]["properties"];
    assert_eq!(p["vcpu"], "1");
    assert_eq!(p["initiator"], "0");
    assert_eq!(p["waited_us"], "2000");
}

#[test]
fn synthetic_vmexit_carries_the_tlb_lock_count() {
    let events = observe("synthetic", |observer| observer.synthetic_vmexit(1, 7));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "synthetic-vmexit");
    assert_eq!(events[0]["properties"]["vcpu"], "1");
    assert_eq!(events[0]["properties"]["tlb_lock_count"], "7");
}

#[test]
fn executor_repairs_name_the_vcpu_and_are_rate_limited() {
    // A guest can INIT its vCPUs at will: the 11th repair within the
    // window is held back (MonitorOptions::default: 10 per second).
    let events = observe("repaired", |observer| {
        for vcpu in 0..12 {
            observer.executor_repaired(vcpu);
        }
    });
    assert_eq!(events.len(), 10, "{events:?}");
    assert!(events.iter().all(|e| e["event"] == "executor-repaired"));
    let p = &events[3]["properties"];
    assert_eq!(p["vcpu"], "3");
    assert_eq!(p["cause"], "registration dropped by INIT or RESET");
    assert_eq!(p["suppressed"], "0");
}
