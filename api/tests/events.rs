//! The event monitor: Cloud Hypervisor's file format, drop counting, rate
//! limiting and clean shutdown.

use std::io::Read;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hvflush_config::{FlushMode, HypervFlushConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hvflush_api::EngineCounters;
use hvflush_api::events::{
    Event, EventKind, EventMonitor, FlushStats, MonitorOptions, SummaryTicker, parse_event_stream,
};
use hvflush_api::model::{CallPath, CountersReport, FlushCall, HypercallInput, Level};
use hvflush_config::option::EventMonitorConfig;
use serde_json::Value;

/// Splits the file into events: pretty-printed objects separated by one
/// blank line.
fn parse_events(text: &str) -> Vec<Value> {
    for chunk in text.split_terminator("\n\n") {
        assert!(
            chunk.starts_with("{\n  \"timestamp\": {\n"),
            "not pretty: {chunk}"
        );
    }
    parse_event_stream(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn check_shape(event: &Value) {
    let obj = event.as_object().unwrap();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{event}");
    for k in ["timestamp", "source", "event", "properties"] {
        assert!(obj.contains_key(k), "{k} missing in {event}");
    }
    assert!(event["timestamp"]["secs"].is_u64());
    assert!(event["timestamp"]["nanos"].as_u64().unwrap() < 1_000_000_000);
    assert_eq!(event["source"], "hyperv-flush");
    let props = event["properties"].as_object().unwrap();
    assert!(props.values().all(Value::is_string), "{event}");
}

fn props(event: &Value) -> &serde_json::Map<String, Value> {
    event["properties"].as_object().unwrap()
}

#[test]
fn golden_file_format_and_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.json");
    let config = EventMonitorConfig::parse(&format!("path={}", path.display())).unwrap();
    let monitor = EventMonitor::open(&config, MonitorOptions::default()).unwrap();
    let old = HypervFlushConfig::default();
    let new = HypervFlushConfig {
        l1: false,
        ..old.clone()
    };
    let l1_list_ex = CallPath {
        level: Level::L1,
        call: FlushCall::ListEx,
    };
    let stats = FlushStats {
        hypercalls: 5,
        engine: EngineCounters {
            kicks: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let events = [
        Event::mode_selected(
            "kvm",
            FlushMode::Userspace,
            true,
            false,
            &["no in-kernel Hyper-V".into()],
        ),
        Event::config_changed(&old, &new, false),
        Event::path_first_use(l1_list_ex, HypercallInput::Fast, 3),
        Event::queue_overflow(1, Level::L1),
        Event::invalid_input(2, 0x0003, 0x0003, "HV_STATUS_INVALID_HYPERCALL_INPUT"),
        Event::synthetic_vmexit(0, 1),
        Event::vcpu_unresponsive(4, 0, Duration::from_millis(250)),
        Event::flush_summary(Duration::from_secs(10), &stats),
    ];
    for e in events {
        assert!(monitor.emit(e));
    }
    monitor.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed = parse_events(&text);
    assert_eq!(parsed.len(), 8);
    // Golden text of one event, the timestamp aside.
    let chunk = text.split_terminator("\n\n").nth(2).unwrap();
    let body = chunk.split_once("  },\n").unwrap().1;
    assert_eq!(
        body,
        "  \"source\": \"hyperv-flush\",\n  \"event\": \"path-first-use\",\n  \"properties\": {\n    \
         \"input\": \"fast\",\n    \"path\": \"l1-list-ex\",\n    \"vcpu\": \"3\"\n  }\n}"
    );
    let mut last = (0, 0);
    for e in &parsed {
        check_shape(e);
        let ts = (
            e["timestamp"]["secs"].as_u64().unwrap(),
            e["timestamp"]["nanos"].as_u64().unwrap(),
        );
        assert!(ts >= last, "timestamps go back");
        last = ts;
    }
    let names: Vec<&str> = parsed
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "mode-selected",
            "config-changed",
            "path-first-use",
            "queue-overflow",
            "invalid-input",
            "synthetic-vmexit",
            "vcpu-unresponsive",
            "flush-summary"
        ]
    );
    let p = props(&parsed[0]);
    assert_eq!(p["backend"], "kvm");
    assert_eq!(p["mode"], "userspace");
    assert_eq!(
        (&p["l1"], &p["l2"]),
        (&Value::from("on"), &Value::from("off"))
    );
    assert_eq!(p["reasons"], "no in-kernel Hyper-V");
    let p = props(&parsed[1]);
    assert_eq!(p["changed"], "l1=off");
    assert_eq!(p["pending_until_reboot"], "false");
    assert!(p["config"].as_str().unwrap().contains("l1=off"));
    assert_eq!(props(&parsed[3])["suppressed"], "0");
    assert_eq!(props(&parsed[4])["status"], "0x0003");
    assert_eq!(props(&parsed[6])["waited_us"], "250000");
    let p = props(&parsed[7]);
    assert_eq!(
        (&p["hypercalls"], &p["kicks"]),
        (&Value::from("5"), &Value::from("2"))
    );
    assert_eq!(p["dropped_events"], "0");
    assert_eq!(p["interval_ms"], "10000");

    let mut counters = CountersReport::default();
    counters.add_hypercalls(l1_list_ex, HypercallInput::Memory, 7);
    counters.add_status(0, "HV_STATUS_SUCCESS", 6);
    counters.add_status(6, "HV_STATUS_ACCESS_DENIED", 1);
    monitor
        .shutdown(Event::shutdown(&FlushStats::from(&counters)))
        .unwrap();
    let parsed = parse_events(&std::fs::read_to_string(&path).unwrap());
    let last = parsed.last().unwrap();
    assert_eq!(last["event"], "shutdown");
    assert_eq!(props(last)["hypercalls"], "7");
    assert_eq!(props(last)["failed_hypercalls"], "1");
    assert_eq!(props(last)["dropped_events"], "0");
    // After shutdown nothing is written; the attempt is counted.
    assert!(!monitor.emit(Event::synthetic_vmexit(0, 1)));
    assert_eq!(monitor.dropped_total(), 1);
    assert_eq!(monitor.written(), 9);
}

#[test]
fn full_queue_drops_and_the_next_summary_reports_it() {
    // A socket nobody reads yet: the writer blocks once its buffer is full,
    // then the queue fills and emit() must drop without blocking.
    let (reader, writer) = UnixStream::pair().unwrap();
    let fd = writer.into_raw_fd();
    let config = EventMonitorConfig::parse(&format!("fd={fd}")).unwrap();
    let options = MonitorOptions {
        queue_capacity: 4,
        ..MonitorOptions::default()
    };
    let monitor = EventMonitor::open(&config, options).unwrap();
    let path = CallPath::ALL[0];
    let mut refused = 0u64;
    let mut sent = 0u64;
    // Bounded: a socket buffer holds a few thousand events at most.
    while refused < 100 && sent < 1_000_000 {
        sent += 1;
        if !monitor.emit(Event::path_first_use(path, HypercallInput::Memory, 0)) {
            refused += 1;
        }
    }
    assert_eq!(refused, 100, "the queue never filled");
    assert_eq!(monitor.dropped_total(), refused);
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut text).unwrap();
        text
    });
    // Once the reader drains, flush() empties the queue so the summary fits.
    let summary = Event::flush_summary(Duration::from_secs(1), &FlushStats::default());
    monitor.flush().unwrap();
    assert!(monitor.emit(summary));
    monitor
        .shutdown(Event::shutdown(&FlushStats::default()))
        .unwrap();
    drop(monitor);
    let text = drain.join().unwrap();
    let events = parse_events(&text);
    assert_eq!(events.len() as u64, sent - refused + 2);
    let summary = &events[events.len() - 2];
    assert_eq!(summary["event"], "flush-summary");
    assert_eq!(
        props(summary)["dropped_events"],
        refused.to_string().as_str()
    );
    assert_eq!(
        props(events.last().unwrap())["dropped_events"],
        refused.to_string().as_str()
    );
}

#[test]
fn guest_triggerable_events_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("e")).unwrap();
    // An hour-long window: the limit, not the clock, decides here.
    let options = MonitorOptions {
        rate_limit: 3,
        rate_window: Duration::from_secs(3600),
        ..MonitorOptions::default()
    };
    let monitor = EventMonitor::from_file(file, options).unwrap();
    let queued = (0..20)
        .filter(|_| {
            monitor.emit(Event::invalid_input(
                0,
                2,
                3,
                "HV_STATUS_INVALID_HYPERCALL_INPUT",
            ))
        })
        .count();
    assert_eq!(queued, 3);
    let overflow = (0..20)
        .filter(|_| monitor.emit(Event::queue_overflow(0, Level::L2)))
        .count();
    assert_eq!(overflow, 3, "limits are per kind");
    // Other kinds are not limited.
    assert!((0..20).all(|_| monitor.emit(Event::synthetic_vmexit(1, 1))));
    assert_eq!(monitor.dropped_total(), 0, "suppressed is not dropped");
    assert!(EventKind::InvalidInput.is_rate_limited());
    assert!(!EventKind::FlushSummary.is_rate_limited());
}

#[test]
fn bad_fds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro");
    std::fs::write(&path, b"").unwrap();
    let ro = std::fs::File::open(&path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ro);
    let config = EventMonitorConfig::parse(&format!("fd={fd}")).unwrap();
    let err = EventMonitor::open(&config, MonitorOptions::default())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!("Event monitor file descriptor {fd} is not writable")
    );
    let missing = EventMonitorConfig::parse("path=/nonexistent-dir/e.json").unwrap();
    let err = EventMonitor::open(&missing, MonitorOptions::default())
        .err()
        .unwrap();
    // 1 << 20 is above any fd limit here: never open.
    let closed = EventMonitorConfig::parse("fd=1048576").unwrap();
    let closed_err = EventMonitor::open(&closed, MonitorOptions::default())
        .err()
        .unwrap();
    assert_eq!(
        closed_err.to_string(),
        "Event monitor file descriptor 1048576 is not open"
    );
    assert_eq!(
        err.to_string(),
        "Cannot open event monitor file /nonexistent-dir/e.json"
    );
}

#[test]
fn summaries_count_since_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e");
    let file = std::fs::File::create(&path).unwrap();
    let monitor = Arc::new(EventMonitor::from_file(file, MonitorOptions::default()).unwrap());
    let kicks = Arc::new(AtomicU64::new(0));
    let source = kicks.clone();
    // An hour-long interval: only summary_now() and stop() emit here.
    let ticker = SummaryTicker::start(monitor.clone(), Duration::from_secs(3600), move || {
        let mut c = CountersReport::default();
        c.engine.kicks = source.load(Ordering::SeqCst);
        c.add_hypercalls(CallPath::ALL[0], HypercallInput::Memory, c.engine.kicks * 2);
        c
    })
    .unwrap();
    kicks.store(5, Ordering::SeqCst);
    ticker.summary_now();
    kicks.store(12, Ordering::SeqCst);
    let totals = ticker.stop();
    assert_eq!((totals.engine.kicks, totals.hypercalls), (12, 24));
    monitor.shutdown(Event::shutdown(&totals)).unwrap();
    let events = parse_events(&std::fs::read_to_string(&path).unwrap());
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flush-summary", "flush-summary", "shutdown"]);
    assert_eq!(props(&events[0])["kicks"], "5");
    assert_eq!(props(&events[1])["kicks"], "7");
    assert_eq!(props(&events[1])["hypercalls"], "14");
    assert_eq!(props(&events[2])["kicks"], "12");
}

#[test]
fn shutdown_gives_up_on_a_reader_that_never_reads() {
    use std::io::Write;
    let (reader, mut writer) = UnixStream::pair().unwrap();
    // Fill the socket buffer first, so the monitor's first write blocks.
    writer.set_nonblocking(true).unwrap();
    while writer.write(&[0u8; 4096]).is_ok() {}
    writer.set_nonblocking(false).unwrap();
    let config = EventMonitorConfig::parse(&format!("fd={}", writer.into_raw_fd())).unwrap();
    let options = MonitorOptions {
        queue_capacity: 2,
        ..MonitorOptions::default()
    };
    let monitor = EventMonitor::open(&config, options).unwrap();
    // One event blocks the writer, two fill the queue, the rest are dropped.
    let queued = (0..10)
        .filter(|_| monitor.emit(Event::synthetic_vmexit(0, 1)))
        .count();
    assert!(queued <= 3, "{queued}");
    let err = monitor
        .shutdown(Event::shutdown(&FlushStats::default()))
        .unwrap_err();
    assert!(
        matches!(err, hvflush_api::events::EventMonitorError::Timeout(_)),
        "{err}"
    );
    assert_eq!(monitor.dropped_total(), 10 - queued as u64);
    drop(reader);
}
