//! The counter set is defined once (`hvflush_api::EngineCounters`): every
//! engine counter reaches `GET /api/v1/vm.hyperv-flush-counters`, the
//! `flush-summary` and `shutdown` events and `hvflush-remote counters`
//! (text and JSON), under its own name and with its own value.

use hvflush_api::EngineCounters;
use hvflush_api::events::{Event, FlushStats};
use hvflush_api::remote::format_counters;
use hyperv_flush::engine::CountersSnapshot;
use serde_json::Value;
use vmm_integration::service::counters_report;

/// A snapshot whose every counter has its own value. Adding an engine
/// counter without a value here does not compile, so it cannot be missed.
fn distinct_snapshot() -> CountersSnapshot {
    CountersSnapshot {
        hypercalls: Default::default(),
        status: Default::default(),
        targets: 101,
        flushes_requested: 102,
        flushes_taken: 103,
        flushes_executed: 104,
        executor_repairs: 105,
        flush_all_fallbacks: 106,
        kicks: 107,
        preempted_flushes: 108,
        targets_without_kick: 109,
        halted_not_waited_for: 110,
        unresponsive_vcpus: 111,
        synthetic_exits: 112,
        invalid_opcode_injections: 113,
        calls_without_guest_os_id: 114,
        latency_p50_ns: None,
        latency_p99_ns: None,
        latency_samples: 0,
    }
}

/// The engine's scalar counters by name, from its own serialization.
fn engine_counters(s: &CountersSnapshot) -> Vec<(String, u64)> {
    let Value::Object(map) = serde_json::to_value(s).unwrap() else {
        panic!("a snapshot serializes as an object");
    };
    map.into_iter()
        // Per-path and per-status arrays and the latency summary have
        // their own API sections.
        .filter(|(k, _)| {
            !matches!(k.as_str(), "hypercalls" | "status") && !k.starts_with("latency")
        })
        .map(|(k, v)| (k, v.as_u64().expect("a scalar counter")))
        .collect()
}

#[test]
fn every_engine_counter_reaches_the_api_the_events_and_the_cli() {
    let snapshot = distinct_snapshot();
    let counters = engine_counters(&snapshot);
    let mut api_names: Vec<&str> = EngineCounters::FIELDS.iter().map(|(n, _)| *n).collect();
    let mut engine_names: Vec<&str> = counters.iter().map(|(n, _)| n.as_str()).collect();
    api_names.sort_unstable();
    engine_names.sort_unstable();
    assert_eq!(engine_names, api_names, "the API's set is the engine's");

    let report = counters_report(&snapshot);
    let rest = serde_json::to_value(&report).unwrap();
    let summary = Event::flush_summary(
        std::time::Duration::from_secs(1),
        &FlushStats::from(&report),
    );
    let shutdown = Event::shutdown(&FlushStats::from(&report));
    let text = format_counters(&report);
    for (name, value) in &counters {
        assert_eq!(
            rest[name.as_str()].as_u64(),
            Some(*value),
            "REST / remote --json: {name}"
        );
        for event in [&summary, &shutdown] {
            let props = event.properties().expect("properties");
            assert_eq!(
                props.get(name.as_str()),
                Some(&value.to_string()),
                "{}: {name}",
                event.kind().as_str()
            );
        }
        let label = EngineCounters::FIELDS
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1;
        assert!(
            text.lines().any(|l| l == format!("{label}: {value}")),
            "remote text: {name}\n{text}"
        );
    }
}

/// The configuration's vCPU limit is the engine's.
#[test]
fn the_vcpu_limit_is_the_engines() {
    assert_eq!(
        hvflush_config::MAX_VP_INDICES as usize,
        hyperv_flush::engine::MAX_VCPUS
    );
}
