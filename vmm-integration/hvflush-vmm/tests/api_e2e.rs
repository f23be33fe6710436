//! End to end: `hvflush-vmm run` on a real KVM guest (the `storm`
//! workload) with `--api-socket` and `--event-monitor`, driven through
//! `ApiClient`, `hvflush-remote` and raw HTTP; then stopped by SIGTERM or
//! by the guest, with the socket and the event file checked afterwards.
//!
//! The binaries are the ones cargo built next to this test executable
//! (`target/<profile>/`); build them first (`cargo build -p vmm-integration
//! -p hvflush-api`). Each test skips, printing why, without /dev/kvm, the
//! binaries or a host that can serve the flush hypercalls in userspace.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{PROGRESS_WAIT, Vmm, setup};
use hvflush_api::client::{ApiClient, ClientError};
use hvflush_api::model::{CountersReport, Feature, ServicePath, UpdateOutcome, status_key};
use hvflush_config::{FlushMode, HypervFlushUpdate};
use serde_json::Value;

fn status_count(c: &CountersReport, code: u16) -> u64 {
    c.statuses.get(&status_key(code)).map_or(0, |s| s.count)
}

/// Polls `f` until it returns `Some`, for at most [`PROGRESS_WAIT`].
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PROGRESS_WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

fn event_names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().expect("event name"))
        .collect()
}

fn position(names: &[&str], name: &str) -> usize {
    names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no {name} event in {names:?}"))
}

/// The common shape of every run's event file.
fn check_event_file(events: &[Value]) {
    for e in events {
        assert_eq!(e["source"], "hyperv-flush", "{e}");
        assert!(e["timestamp"]["secs"].is_u64() && e["timestamp"]["nanos"].is_u64());
        let props = &e["properties"];
        assert!(
            props.is_null() || props.as_object().unwrap().values().all(Value::is_string),
            "properties are strings: {e}"
        );
    }
    let names = event_names(events);
    assert_eq!(names.first(), Some(&"mode-selected"), "{names:?}");
    assert_eq!(names.last(), Some(&"shutdown"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "shutdown").count(), 1);
    let mode = &events[0]["properties"];
    assert_eq!(mode["backend"], "kvm");
    assert_eq!(mode["mode"], "userspace");
    assert_eq!(mode["l1"], "on");
    // Paths first used after the start, summaries before the end.
    assert!(position(&names, "path-first-use") > 0);
    assert!(names.iter().rposition(|n| *n == "flush-summary").unwrap() < names.len() - 1);
    for e in events.iter().filter(|e| e["event"] == "path-first-use") {
        let path = e["properties"]["path"].as_str().unwrap();
        assert!(path.starts_with("l1-"), "storm runs at L1: {path}");
        assert!(matches!(
            e["properties"]["input"].as_str(),
            Some("memory" | "fast")
        ));
        assert!(matches!(e["properties"]["vcpu"].as_str(), Some("0" | "1")));
    }
    let paths = events
        .iter()
        .filter(|e| e["event"] == "path-first-use")
        .count();
    assert!(
        paths <= 8,
        "one event per path and input, not per hypercall"
    );
}

/// The totals of the `shutdown` event.
fn shutdown_totals(events: &[Value]) -> (u64, u64) {
    let props = &events.last().unwrap()["properties"];
    let num = |k: &str| props[k].as_str().unwrap().parse::<u64>().unwrap();
    (num("hypercalls"), num("failed_hypercalls"))
}

/// `l1=on` again: applied at once, and whether successes resumed before
/// the VMM exited (it does when the guest ended on a denial).
fn restore_l1(client: &ApiClient, vmm: &mut Vmm) -> Result<bool, ClientError> {
    let on = HypervFlushUpdate {
        l1: Some(true),
        ..Default::default()
    };
    assert_eq!(client.update(&on)?, UpdateOutcome::Applied);
    let l1 = client.info()?.features[&Feature::L1].clone();
    assert!(l1.enabled && l1.effective, "{l1:?}");
    let base = status_count(&client.counters()?, 0);
    let deadline = Instant::now() + PROGRESS_WAIT;
    while vmm.exited().is_none() {
        if status_count(&client.counters()?, 0) > base {
            return Ok(true);
        }
        assert!(Instant::now() < deadline, "no success after l1=on");
        sleep(Duration::from_millis(50));
    }
    Ok(false)
}

#[test]
fn l1_toggle_reaches_the_guest_and_is_reported() {
    let Some(vmm_bin) = setup() else {
        return;
    };
    let mut vmm = Vmm::start(&vmm_bin, "l1", 40).unwrap_or_else(|e| panic!("{e}"));
    let client = vmm.client();

    let ping = client.ping().expect("ping");
    assert_eq!(ping.pid, vmm.child.id());
    let info = client.info().expect("info");
    assert_eq!(info.backend, "kvm");
    assert_eq!(info.effective_mode, FlushMode::Userspace);
    let l1 = &info.features[&Feature::L1];
    assert!(l1.enabled && l1.effective, "{l1:?}");
    assert_eq!(l1.path, ServicePath::Userspace);
    assert!(info.pending_config.is_none());

    // The guest is flushing: the counters move between two reads.
    let first = poll("the first hypercalls", || {
        let c = client.counters().expect("counters");
        (c.total_hypercalls() > 0).then_some(c)
    });
    let second = poll("more hypercalls", || {
        let c = client.counters().expect("counters");
        (c.total_hypercalls() > first.total_hypercalls()).then_some(c)
    });
    // Only successes so far; a call is counted per path when it starts and
    // per status when it completes; the engine times a sample of the calls.
    assert_eq!(second.statuses.keys().collect::<Vec<_>>(), ["0x0000"]);
    assert!(second.latency.samples > 0);
    assert!(second.latency.samples <= status_count(&second, 0));
    assert!(status_count(&second, 0) <= second.total_hypercalls());

    // hvflush-remote against the live VMM.
    let (ok, out, _) = vmm.remote(&["ping"]);
    assert!(
        ok && out.contains(&format!("(pid {})", vmm.child.id())),
        "{out}"
    );
    let (ok, out, _) = vmm.remote(&["--json", "counters"]);
    assert!(ok);
    let parsed: CountersReport = serde_json::from_str(&out).expect("counters JSON");
    assert!(parsed.total_hypercalls() >= second.total_hypercalls());
    let (ok, _, err) = vmm.remote(&["set", "l2=on"]);
    assert!(!ok, "l2=on is impossible in userspace mode");
    assert!(
        err.contains("409") && err.contains("l2=on refused"),
        "{err}"
    );

    // L1 off: applied at once, the guest's next flush is denied.
    let (ok, out, err) = vmm.remote(&["set", "l1=off"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Applied: l1=off");
    // storm counts denials and keeps going, so l1=on must restore service
    // to the running guest.
    poll("ACCESS_DENIED to reach the guest", || {
        assert!(vmm.exited().is_none(), "the guest survives denials");
        let c = client.counters().expect("counters");
        (status_count(&c, 6) > 0).then_some(())
    });
    let restored = restore_l1(&client, &mut vmm).expect("l1=on");
    assert!(restored, "successes resume after l1=on");
    vmm.sigterm();
    let status = vmm.wait_exit();
    assert!(status.code().is_some(), "exited normally, not by a signal");
    assert!(!vmm.socket.exists(), "socket removed at exit");
    let report = vmm.report();
    assert!(report["hypercalls"]["by_status"]["access_denied"].as_u64() > Some(0));
    let failed: Vec<&serde_json::Value> = report["vcpu_results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"].is_u64())
        .collect();
    assert!(failed.is_empty(), "no vCPU failed on a denial: {report}");

    let events = vmm.events();
    check_event_file(&events);
    let names = event_names(&events);
    let changed = position(&names, "config-changed");
    let props = &events[changed]["properties"];
    assert_eq!(props["changed"], "l1=off");
    assert_eq!(props["pending_until_reboot"], "false");
    assert!(props["config"].as_str().unwrap().contains("l1=off"));
    let denied = events
        .iter()
        .position(|e| e["event"] == "invalid-input" && e["properties"]["status"] == "0x0006")
        .expect("an invalid-input event for ACCESS_DENIED");
    assert!(denied > changed, "denials follow the change");
    assert_eq!(
        events[denied]["properties"]["status_name"],
        "HV_STATUS_ACCESS_DENIED"
    );
    let (hypercalls, failed) = shutdown_totals(&events);
    assert!(hypercalls >= second.total_hypercalls());
    assert!(failed > 0, "the denied calls are in the totals");
}

/// One raw HTTP exchange; the server closes after each answer.
fn raw(socket: &Path, request: &[u8], half_close: bool) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).expect("send");
    if half_close {
        stream.shutdown(Shutdown::Write).expect("half close");
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

fn put(body: &str) -> Vec<u8> {
    format!(
        "PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn hostile_requests_then_sigterm_shut_down_cleanly() {
    let Some(vmm_bin) = setup() else {
        return;
    };
    let mut vmm = Vmm::start(&vmm_bin, "hostile", 45).unwrap_or_else(|e| panic!("{e}"));
    let client = vmm.client();
    let socket = vmm.socket.clone();
    let alive = || {
        assert_eq!(client.ping().expect("still serving").pid, vmm.child.id());
    };

    let cases: [(&str, Vec<u8>, bool, u16); 7] = [
        ("bad JSON", put("{\"l1\": tru"), false, 400),
        ("unknown field", put("{\"l3\": true}"), false, 400),
        ("wrong type", put("{\"l1\": \"off\"}"), false, 400),
        (
            "truncated body",
            b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n\r\n{\"l1\":"
                .to_vec(),
            true,
            400,
        ),
        (
            "oversized body",
            b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n"
                .to_vec(),
            true,
            413,
        ),
        (
            "wrong method",
            b"DELETE /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            false,
            405,
        ),
        (
            "unknown path",
            b"GET /api/v1/vm.shutdown HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            false,
            404,
        ),
    ];
    for (what, request, half_close, expected) in cases {
        let (status, text) = raw(&socket, &request, half_close);
        assert_eq!(status, expected, "{what}: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let chain: Vec<String> = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: error body {body:?} is no chain: {e}"));
        assert!(!chain.is_empty(), "{what}");
        if expected == 405 {
            assert!(
                text.to_ascii_lowercase().contains("allow: get, put"),
                "{text}"
            );
        }
        alive();
    }

    // A client that disconnects mid-request costs nothing.
    {
        let mut stream = UnixStream::connect(&socket).expect("connect");
        stream
            .write_all(b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nContent-Le")
            .expect("partial request");
    }
    alive();

    // Concurrent clients all get answers while the guest keeps flushing.
    let before = client.counters().expect("counters").total_hypercalls();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let socket = socket.clone();
                scope.spawn(move || {
                    let client = ApiClient::new(&socket)
                        .expect("client")
                        .with_timeout(Duration::from_secs(10));
                    for _ in 0..5 {
                        client.counters().expect("concurrent counters");
                        client.info().expect("concurrent info");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client thread");
        }
    });
    poll("counters to move", || {
        (client.counters().expect("counters").total_hypercalls() > before).then_some(())
    });
    // Nothing above changed the configuration.
    assert!(client.info().expect("info").config.l1);

    vmm.sigterm();
    let status = vmm.wait_exit();
    assert!(status.code().is_some(), "exited normally, not by a signal");
    assert!(!vmm.socket.exists(), "socket removed at exit");
    let report = vmm.report();
    let failure = report["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("signal"), "{report}");

    let events = vmm.events();
    check_event_file(&events);
    let names = event_names(&events);
    assert!(!names.contains(&"config-changed"), "{names:?}");
    let (hypercalls, failed) = shutdown_totals(&events);
    assert_eq!(failed, 0);
    assert_eq!(
        Some(hypercalls),
        report["hypercalls"]["total"].as_u64(),
        "shutdown totals match the final report"
    );
}
