//! Faults on real KVM, through the reference VMM: hypercall input and the
//! hypercall page at GPAs that are not RAM (the `faults` workload), a
//! SIGTERM in the middle of an 8-vCPU storm, and a hostile API client
//! during a storm. Skip (see `hvflush_tests::skip`) without /dev/kvm.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{PROGRESS_WAIT, Vmm, setup};
use hvflush_api::EngineCounters;
use hvflush_config::{FlushMode, HypervFlushConfig};
use hvflush_tests::have_kvm;
use hvflush_vmm::guest::Workload;
use hvflush_vmm::vmm::{self, GuestProgram, RunOptions, RunReport};
use hyperv_flush::abi::HvStatus;
use serde_json::Value;

fn faults_run(vcpus: u32) -> RunReport {
    let options = RunOptions {
        vcpus,
        flush: HypervFlushConfig {
            mode: FlushMode::Userspace,
            ..HypervFlushConfig::default()
        },
        program: GuestProgram::Builtin(Workload::Faults),
        echo_console: false,
        timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let report = vmm::run(&options).expect("the VM runs");
    eprint!("{}", report.to_table());
    report
}

/// The hex value after `key` in a `faults:` console line.
fn hex_after(line: &str, key: &str) -> u64 {
    let mut words = line.split_whitespace();
    words
        .find(|w| *w == key)
        .unwrap_or_else(|| panic!("{key} in {line}"));
    let hex = words.next().expect("a value").trim_start_matches("0x");
    u64::from_str_radix(hex, 16).expect("hex")
}

// conformance: R11 R12
#[test]
fn input_and_hypercall_page_outside_ram() {
    if !have_kvm() {
        return;
    }
    for vcpus in [1, 2] {
        let report = faults_run(vcpus);
        assert!(report.passed(), "{:?}", report.failure());
        let lines = &report.console[0];
        let line = |prefix: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
                .clone()
        };
        let status = |what: &str| {
            let l = line(&format!("faults: input {what} "));
            u64::from_str_radix(l.rsplit(' ').next().unwrap().trim_start_matches("0x"), 16).unwrap()
        };
        // Not RAM: the in-kernel LAPIC's MMIO page, the PCI hole, the first
        // byte past RAM (R12, as KVM).
        for what in ["lapic", "pci-hole", "ram-end"] {
            assert_eq!(status(what), 3, "{what}");
        }
        // The header in the last qwords of RAM is served.
        assert_eq!(status("last-qwords"), 0);
        // Input that runs past the end of RAM crosses the end of its page:
        // HV_STATUS_INVALID_ALIGNMENT (R11; KVM's read fails, 3).
        assert_eq!(status("straddle-header"), 4);
        assert_eq!(status("straddle-list"), 4);
        // The hypercall page at each of those GPAs: one #GP, and the MSR
        // still holds the page it had (nothing was changed, nothing
        // written: the guest's last call went through that page).
        let msrs: Vec<u64> = ["lapic", "pci-hole", "ram-end"]
            .iter()
            .map(|what| {
                let l = line(&format!("faults: page {what} "));
                assert_eq!(hex_after(&l, "gp"), 1, "{l}");
                hex_after(&l, "msr")
            })
            .collect();
        assert!(
            msrs.iter().all(|m| *m == msrs[0] && m & 1 == 1),
            "{msrs:x?}"
        );
        assert!(lines.iter().any(|l| l == "faults: done"), "{lines:?}");
        let c = &report.counters;
        assert_eq!(c.with_status(HvStatus::INVALID_HYPERCALL_INPUT), 3);
        assert_eq!(c.with_status(HvStatus::INVALID_ALIGNMENT), 2);
        assert_eq!(c.with_status(HvStatus::SUCCESS), 2);
        assert_eq!(c.total_hypercalls(), 7);
    }
}

/// A counter of the `--json` run report.
fn counter(report: &Value, name: &str) -> u64 {
    report["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

/// Checks the identities the final counters obey (hvflush_api::counters,
/// "Identities"), on the `--json` report and the event file of a run that
/// has ended.
fn check_final_counters(report: &Value, events: &[Value]) {
    let total = report["hypercalls"]["total"].as_u64().unwrap();
    let sum = |v: &Value| {
        v.as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    let by_status: u64 = sum(&report["hypercalls"]["by_status"]);
    let by_call: u64 = sum(&report["hypercalls"]["by_call"]);
    assert_eq!((by_status, by_call), (total, total), "{report}");
    let engine: EngineCounters =
        serde_json::from_value(report["counters"].clone()).expect("the report's engine counters");
    assert!(
        engine.broken_identities().is_empty(),
        "{:?}: {report}",
        engine.broken_identities()
    );
    assert!(engine.flushes_executed > 0, "the storm flushed: {report}");
    assert_eq!(engine.unresponsive_vcpus, 0, "{report}");

    // Every summary counts since the previous one, the last one comes after
    // the vCPUs stopped: they add up to the shutdown totals, which are the
    // report's counters.
    let props = |e: &Value| -> BTreeMap<String, u64> {
        e["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.parse().ok()?)))
            .collect()
    };
    let shutdown = events.last().expect("events");
    assert_eq!(shutdown["event"], "shutdown");
    let totals = props(shutdown);
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "flush-summary") {
        for (k, v) in props(e) {
            *summed.entry(k).or_default() += v;
        }
    }
    for (name, _, value) in engine.values() {
        assert_eq!(summed[name], totals[name], "{name}: summaries vs shutdown");
        assert_eq!(totals[name], value, "{name}: shutdown vs report");
    }
    assert_eq!(totals["hypercalls"], total);
    let ok = report["hypercalls"]["by_status"]["success"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(totals["failed_hypercalls"], total - ok);
    assert_eq!(totals["dropped_events"], 0);
    assert!(!events.iter().any(|e| e["event"] == "vcpu-unresponsive"));
}

/// Polls until the storm has flushed `past` more than `base` flushes.
fn wait_for_flushes(vmm: &mut Vmm, base: u64) -> u64 {
    let client = vmm.client();
    let deadline = Instant::now() + PROGRESS_WAIT;
    loop {
        assert!(vmm.exited().is_none(), "the VMM ended: {}", vmm.stderr());
        let executed = client.counters().expect("counters").engine.flushes_executed;
        if executed > base {
            return executed;
        }
        assert!(Instant::now() < deadline, "no flushes past {base}");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_mid_storm_stops_cleanly_with_counters_that_add_up() {
    let Some(binary) = setup() else { return };
    let mut vmm = Vmm::start_storm(&binary, "sigterm8", 120, 8).unwrap_or_else(|e| panic!("{e}"));
    let first = wait_for_flushes(&mut vmm, 0);
    wait_for_flushes(&mut vmm, first);
    let live = vmm.client().counters().expect("counters");
    if let Some(kernel) = live.kernel.as_ref().and_then(|k| k.tlb_flushes) {
        // KVM counts every guest TLB flush it made, ours before we see them.
        assert!(kernel >= live.engine.flushes_executed, "{live:?}");
    }
    vmm.sigterm();
    let status = vmm.wait_exit();
    // Stopped by the signal: a clean exit (the run did not pass: the guest
    // did not finish), not a death by the signal.
    assert_eq!(status.code(), Some(1), "{status}: {}", vmm.stderr());
    assert!(!vmm.socket.exists(), "socket removed at exit");
    let report = vmm.report();
    assert!(
        report["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("signal"),
        "{report}"
    );
    for r in report["vcpu_results"].as_array().unwrap() {
        assert!(
            matches!(r["result"].as_str(), Some("stopped" | "passed")),
            "{r}"
        );
    }
    assert_eq!(report["vcpus"], 8);
    assert!(counter(&report, "flushes_executed") >= live.engine.flushes_executed);
    check_final_counters(&report, &vmm.events());
}

/// Requests that are each malformed in their own way.
fn malformed(i: usize) -> Vec<u8> {
    let put = |body: &str| {
        format!(
            "PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match i % 10 {
        0 => put("{\"l1\": tru"),
        1 => put("[null, null]"),
        2 => put("{\"hypercall_port\": 1}"),
        3 => put("{\"l3\": true}"),
        4 => b"DELETE /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        5 => b"GET /api/v1/vm.nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        6 => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n".to_vec(),
        7 => b"GET /api/v1/vmm.ping HTTP/9.9\r\n\r\n".to_vec(),
        8 => format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000)).into_bytes(),
        _ => b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{".to_vec(),
    }
}

/// Sends one request, closes the write side, reads the whole answer.
fn exchange(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may answer and close before it read everything.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

#[test]
fn hostile_clients_during_a_storm_cost_the_guest_nothing() {
    let Some(binary) = setup() else { return };
    let mut vmm = Vmm::start(&binary, "hostile-storm", 120).unwrap_or_else(|e| panic!("{e}"));
    let socket = vmm.socket.clone();
    let before = wait_for_flushes(&mut vmm, 0);
    // 32 connections (the server's limit) opened and left idle, one with
    // half a request line: until the header deadline drops them, every
    // slot is taken and the requests below wait in the listen backlog.
    let idle: Vec<UnixStream> = (0..32)
        .map(|i| {
            let mut s = UnixStream::connect(&socket).expect("idle connect");
            if i == 0 {
                s.write_all(b"GET /api/v1/vmm.pi").unwrap();
            }
            s
        })
        .collect();
    let answered = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let socket = &socket;
                scope.spawn(move || {
                    (w..1000)
                        .step_by(4)
                        .filter(|&i| {
                            let a = exchange(socket, &malformed(i));
                            let status = String::from_utf8_lossy(&a)
                                .split(' ')
                                .nth(1)
                                .and_then(|s| s.parse::<u16>().ok());
                            assert!(
                                matches!(status, Some(400..=499)),
                                "request {i}: {:?}",
                                String::from_utf8_lossy(&a)
                            );
                            true
                        })
                        .count()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(answered, 1000);
    // The guest kept flushing, no vCPU was late, the API still answers.
    let client = vmm.client();
    assert_eq!(client.ping().expect("ping after").pid, vmm.child.id());
    wait_for_flushes(&mut vmm, before);
    let c = client.counters().expect("counters");
    assert_eq!(c.engine.unresponsive_vcpus, 0, "{c:?}");
    drop(idle);
    vmm.sigterm();
    vmm.wait_exit();
    let report = vmm.report();
    check_final_counters(&report, &vmm.events());
}
