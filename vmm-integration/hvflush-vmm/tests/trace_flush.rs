//! Trace-verified flushing on real KVM (issue 5, "Tests on real KVM").
//!
//! The reference VMM runs a built-in workload while a private tracefs
//! instance follows this test's threads and records two host tracepoints:
//! `kvm:kvm_pv_tlb_flush`, which fires whenever a vCPU goes into the guest
//! and says whether KVM flushed its TLB first (`record_steal_time()`,
//! Linux arch/x86/kvm/x86.c; docs/host-facts.md §1-2), and `kvm:kvm_pio` for every
//! port write (the initiator's trap, and proof that a vCPU ran guest code).
//! An engine observer records when each flush request completed
//! (CLOCK_MONOTONIC, the trace's `mono` clock).
//!
//! Checked for every completed request from caller `c` at time `Tc`, with
//! `T0` = `c`'s last hypercall-port write before `Tc`: every target `t` (the
//! caller too) shows `need_flush_tlb true` after `T0` and no later than its
//! first sign of running after `Tc`: an entry (for the caller that entry is
//! `T1`, the return into the guest; for the others this is stricter than
//! "their first entry after `T1`"), or a port write, which only guest code
//! run since the call can make (a port write traced after `Tc` belongs to a
//! `KVM_RUN` that started after the target saw the request or was waited
//! for). So no target runs guest code after the call returned without
//! having flushed, and a vCPU whose entries are never traced (KVM dropped
//! its steal-time registration, e.g. after an INIT) cannot pass by
//! staying silent: its own port writes convict it. vCPU threads are told
//! apart by their thread name (`vcpuN`) as well as by the vCPU id of their
//! entries. And every `need_flush_tlb true` is paid for by
//! its own request targeting that vCPU, so untargeted vCPUs are not flushed
//! on anyone's account. Trace order (the kernel merges per-CPU buffers by
//! nanosecond timestamp) orders trace events; printed timestamps (µs) are
//! only compared with `Tc`, always rounding in the lenient direction.
//! Synthetic traces at the end prove the checker fails on lost flushes.
#![cfg(target_os = "linux")]

#[path = "trace_flush/checker.rs"]
mod checker;
mod common;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use checker::{Completion, Summary, check, parse_trace};
use hvflush_config::{FlushMode, HypervFlushConfig};
use hvflush_tests::{Capability, have_kvm, skip};
use hvflush_vmm::guest::Workload;
use hvflush_vmm::vmm::{GuestProgram, Machine, MachineError, RunOptions, RunReport, Snapshot};
use hyperv_flush::engine::{CountersSnapshot, FlushObserver, Level, VcpuSet};

const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU ring buffer of the private instance; only two events, and
/// `kvm_pio` filtered to writes, so a 2 s storm fits.
const BUFFER_KB: u32 = 16384;
/// Largest trace text the test reads (the buffers are smaller).
const MAX_TRACE_BYTES: u64 = 512 << 20;
const VCPUS: u32 = 4;
/// Only a hang should ever hit it (guest code is emulated, docs/host-facts.md §1).
const RUN_TIMEOUT: Duration = Duration::from_secs(50);

/// One VM at a time: each run is traced on its own instance anyway, but two
/// emulated guests on a 2-core host would only slow each other down.
static KVM_RUNS: Mutex<()> = Mutex::new(());
// The tracefs instance.

/// A private trace instance, removed on drop (also when the test panics).
struct TraceInstance {
    dir: PathBuf,
}

impl TraceInstance {
    fn create(root: &Path, name: &str) -> io::Result<Self> {
        let dir = root.join("instances").join(name);
        fs::create_dir(&dir)?;
        Ok(Self { dir })
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{path:?}: {e}")))
    }

    fn read(&self, file: &str) -> io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        fs::File::open(self.dir.join(file))?
            .take(MAX_TRACE_BYTES)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// Events lost on any CPU (ring buffer overruns and drops).
    fn lost_events(&self) -> io::Result<u64> {
        let mut lost = 0;
        for cpu in fs::read_dir(self.dir.join("per_cpu"))? {
            let stats = fs::read_to_string(cpu?.path().join("stats"))?;
            lost += stats
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("overrun: ")
                        .or(l.strip_prefix("dropped events: "))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(lost)
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        let _ = self.write("set_event", "");
        // Every file of the instance is closed by now, so this cannot be busy.
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("could not remove trace instance {:?}: {e}", self.dir);
        }
    }
}

/// The tracefs root, mounted here if it was not; `Err` = why not (skip).
fn tracefs_root() -> Result<PathBuf, String> {
    let root = Path::new(TRACEFS);
    if !root.join("instances").is_dir() {
        let (src, fstype) = (c"nodev", c"tracefs");
        // SAFETY: valid NUL-terminated strings that outlive the call; no data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(format!("cannot mount tracefs on {TRACEFS}: {e}"));
        }
    }
    Ok(root.to_path_buf())
}

/// Checks the host, then sets up an instance following this thread (the
/// vCPU threads it spawns later are added by `event-fork`). `Err` = skip.
fn start_tracing() -> Result<TraceInstance, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("tracefs needs root".into());
    }
    let root = tracefs_root()?;
    for event in ["kvm_pv_tlb_flush", "kvm_pio"] {
        if !root.join("events/kvm").join(event).is_dir() {
            return Err(format!("the host has no kvm:{event} tracepoint"));
        }
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let name = format!("hvflush-trace-{}-{tid}", std::process::id());
    let inst =
        TraceInstance::create(&root, &name).map_err(|e| format!("cannot create {name}: {e}"))?;
    let setup = || -> io::Result<()> {
        inst.write("tracing_on", "0")?;
        inst.write("trace_clock", "mono")?;
        inst.write("buffer_size_kb", &BUFFER_KB.to_string())?;
        // The test thread spawns the vCPU threads; the process id as well,
        // in case a future runner spawns them from the main thread.
        inst.write("set_event_pid", &format!("{} {tid}", std::process::id()))?;
        inst.write("options/event-fork", "1")?;
        // Every write: a port write proves its vCPU ran guest code.
        inst.write("events/kvm/kvm_pio/filter", "rw == 1")?;
        inst.write("events/kvm/kvm_pio/enable", "1")?;
        inst.write("events/kvm/kvm_pv_tlb_flush/enable", "1")?;
        inst.write("tracing_on", "1")
    };
    setup().map_err(|e| format!("cannot set up trace instance: {e}"))?;
    Ok(inst)
}

// The runs.

/// Records every completed request with its CLOCK_MONOTONIC time.
#[derive(Default)]
struct CompletionLog(Mutex<Vec<Completion>>);

impl FlushObserver for CompletionLog {
    fn flush_completed(&self, caller: usize, _level: Level, targets: &VcpuSet<[u64]>) {
        let at_ns = monotonic_ns();
        let c = Completion {
            caller,
            targets: targets.iter().collect(),
            at_ns,
        };
        lock(&self.0).push(c);
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `workload` under the trace and checks it; `None` = skipped.
fn traced_run(workload: Workload, duration: Option<Duration>) -> Option<(RunReport, Summary)> {
    let _one_vm = lock(&KVM_RUNS);
    if !have_kvm() {
        return None;
    }
    let options = options(workload, duration);
    traced(&options, &CountersSnapshot::default(), |log| {
        Machine::create_with_observer(&options, log)
    })
}

fn options(workload: Workload, duration: Option<Duration>) -> RunOptions {
    RunOptions {
        vcpus: VCPUS,
        // The path under test, whatever the host offers (auto would pick
        // offload where KVM has in-kernel Hyper-V).
        flush: HypervFlushConfig {
            mode: FlushMode::Userspace,
            ..HypervFlushConfig::default()
        },
        program: GuestProgram::Builtin(workload),
        duration,
        timeout: RUN_TIMEOUT,
        echo_console: false,
        ..RunOptions::default()
    }
}

/// Builds a machine with `build` (given the completion log to observe
/// with), runs it under the trace and checks it. `before` are the counters
/// the machine starts from (a restored VM's), so that only this run's
/// flushes are compared with the trace.
fn traced(
    options: &RunOptions,
    before: &CountersSnapshot,
    build: impl FnOnce(Arc<CompletionLog>) -> Result<Machine, MachineError>,
) -> Option<(RunReport, Summary)> {
    let restored = *before != CountersSnapshot::default();
    let port = options.flush.hypercall_port;
    let trace = match start_tracing() {
        Ok(t) => t,
        Err(reason) => {
            skip(Capability::Tracefs, &reason);
            return None;
        }
    };
    let log = Arc::new(CompletionLog::default());
    let machine = build(log.clone()).unwrap_or_else(|e| panic!("creating the VM failed: {e:?}"));
    let restored_at = restored.then(monotonic_ns);
    assert_eq!(
        machine.flush_config().hypercall_port,
        port,
        "the machine traps on another port"
    );
    let report = machine.run().expect("running the VM failed");
    trace.write("tracing_on", "0").expect("stop tracing");
    assert!(
        report.passed(),
        "{} run failed: {:?}\n{}",
        report.program,
        report.failure(),
        report.to_table()
    );
    assert_eq!(report.mode, "userspace", "mode=userspace was pinned");
    let lost = trace.lost_events().expect("read the trace buffer stats");
    assert_eq!(lost, 0, "the trace lost {lost} events; raise BUFFER_KB");
    let text = trace.read("trace").expect("read the trace");
    drop(trace);

    let events = parse_trace(&text);
    let completions = std::mem::take(&mut *lock(&log.0));
    assert!(
        !completions.is_empty(),
        "the workload completed no flush request"
    );
    let summary = check(&events, &completions, port, restored_at).unwrap_or_else(|errors| {
        panic!(
            "{} flush-protocol violations (first 20):\n{}",
            errors.len(),
            errors[..errors.len().min(20)].join("\n")
        )
    });
    // Each flush the executor counts as executed is one KVM performed:
    // one `need_flush_tlb true` each, and no other.
    let trues = summary.flushes_seen as u64;
    let c = &report.counters;
    let executed = (c.flushes_executed + c.preempted_flushes)
        - (before.flushes_executed + before.preempted_flushes);
    assert_eq!(
        trues, executed,
        "need_flush_tlb true in the trace vs flushes the executor counted as executed"
    );
    assert!(
        c.flushes_executed <= c.flushes_taken,
        "more flushes executed ({}) than taken ({})",
        c.flushes_executed,
        c.flushes_taken
    );
    eprintln!(
        "{}: {} requests checked ({} target checks, {} decided, on {} vCPUs), \
         {} need_flush_tlb true in {} entries; engine: taken {}, executed {}, \
         executor repairs {}, kicks {}",
        report.program,
        summary.requests,
        summary.target_checks,
        summary.decided_checks,
        summary.vcpus_checked,
        summary.flushes_seen,
        summary.entries,
        c.flushes_taken,
        c.flushes_executed,
        c.executor_repairs,
        c.kicks
    );
    Some((report, summary))
}

#[test]
fn smoke_flushes_are_seen_by_the_host() {
    traced_run(Workload::Smoke, None);
}

#[test]
fn storm_flushes_are_seen_by_the_host() {
    let Some((report, summary)) = traced_run(Workload::Storm, Some(Duration::from_secs(2))) else {
        return;
    };
    // Every vCPU loops in the guest, so some targets were running.
    assert!(report.counters.kicks > 0, "a storm sent no kick");
    // Every vCPU calls, so every vCPU was seen running after some call
    // that targeted it: no vCPU passed by staying out of the trace.
    assert_eq!(summary.vcpus_checked, VCPUS as usize, "{summary:?}");
}

/// vCPUs 1-3, started by INIT/SIPI, halt (blocked inside `KVM_RUN` in the
/// in-kernel LAPIC) while vCPU 0 flushes them 40 times; then vCPU 0 wakes
/// them with an IPI, and each woken target shows a host flush before it
/// runs guest code again (its wake-up marker is that guest code's port
/// write). The userspace path cannot tell a halted target from a running
/// one, so each is kicked (docs/performance.md, "Halted targets").
#[test]
fn halted_targets_flush_before_they_run_again() {
    let _one_vm = lock(&KVM_RUNS);
    if !have_kvm() {
        return;
    }
    let options = RunOptions {
        param: hvflush_vmm::guest::layout::BENCH_HALTED_TARGETS,
        iterations: 40,
        ..options(Workload::Bench, None)
    };
    let Some((report, summary)) = traced(&options, &CountersSnapshot::default(), |log| {
        Machine::create_with_observer(&options, log)
    }) else {
        return;
    };
    let woken: Vec<usize> = report
        .markers
        .iter()
        .filter(|m| m.value == hvflush_vmm::guest::layout::marker::TARGET_WOKEN)
        .map(|m| m.vcpu)
        .collect();
    let mut sorted = woken.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3], "each target woke once: {woken:?}");
    // Every target ran guest code after the flushes, so each was checked.
    assert_eq!(summary.vcpus_checked, VCPUS as usize, "{summary:?}");
    let c = &report.counters;
    // 40 flushes of the 3 targets and 40 self-flushes: every self-flush and
    // no halted target is handled without a kick.
    assert_eq!(c.targets, 40 * 3 + 40, "{c:?}");
    assert!(c.targets_without_kick >= 40, "{c:?}");
    assert!(c.kicks >= c.targets - c.targets_without_kick, "{c:?}");
    // With the kernel's `blocking` statistic the initiator skips the wait
    // for targets still halted after their kick; the trace check above is
    // what shows that none of them ran guest code before it flushed.
    if host_has_blocking_stat() {
        assert!(c.halted_not_waited_for > 0, "{c:?}");
    } else {
        assert_eq!(c.halted_not_waited_for, 0, "{c:?}");
    }
    eprintln!(
        "halted targets not waited for: {} of {} kicked",
        c.halted_not_waited_for,
        c.targets - c.targets_without_kick
    );
}

/// Whether this host's vCPUs have the `blocking` statistic (Linux 5.17+).
fn host_has_blocking_stat() -> bool {
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    let vm = kvm.create_vm().expect("a scratch VM");
    let vcpu = vm.create_vcpu(0).expect("a scratch vCPU");
    vmm_integration::kvm::userspace::halted_check_available(&vcpu)
}

// Every vCPU but the BSP is started by INIT/SIPI (the default PVH boot),
// which drops its steal-time registration: the executor restores it once
// per INIT, before the vCPU's first flush after it.

#[test]
fn conformance_flushes_are_seen_by_the_host() {
    let Some((report, _)) = traced_run(Workload::Conformance, None) else {
        return;
    };
    assert!(report.counters.executor_repairs >= u64::from(VCPUS - 1));
}

#[test]
fn flushes_after_a_running_target_is_restarted_by_init_sipi_are_seen_by_the_host() {
    let Some((report, summary)) = traced_run(Workload::Restart, Some(Duration::from_secs(2)))
    else {
        return;
    };
    // The APs' start-up INITs, and vCPU 1's second INIT in mid-storm.
    assert!(
        report.counters.executor_repairs >= u64::from(VCPUS),
        "{:?}",
        report.counters
    );
    assert_eq!(summary.vcpus_checked, VCPUS as usize, "{summary:?}");
}

#[test]
fn flushes_after_a_vm_reset_are_seen_by_the_host() {
    let Some((report, _)) = traced_run(Workload::Reboot, None) else {
        return;
    };
    // Every vCPU, the BSP too, is reset by the reboot; the APs also at
    // both start-ups.
    assert!(
        report.counters.executor_repairs >= u64::from(2 * VCPUS - 1),
        "{:?}",
        report.counters
    );
}

/// A storm on 4 vCPUs is snapshotted mid-run by one process, which exits;
/// this process restores it, and every flush after the restore is one the
/// host performed, before the target ran again. The HYPERCALL MSR comes
/// back as saved and the counters go on from their saved values.
#[test]
fn flushes_after_a_restore_are_seen_by_the_host() {
    let _one_vm = lock(&KVM_RUNS);
    if !have_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hvflush-snap-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    common::snapshot_storm(&dir);
    let snapshot = Snapshot::read(&dir).expect("the snapshot reads back");
    let saved = snapshot.flush_state().clone();
    let msrs = saved.msrs.expect("userspace state has the MSRs");
    assert_eq!(
        msrs.hypercall & 1,
        1,
        "the guest had enabled its hypercall page"
    );
    assert!(
        saved.counters.total_hypercalls() > 0,
        "the storm had made calls"
    );

    let mut options = snapshot.run_options();
    options.echo_console = false;
    let (report, summary) = traced(&options, &saved.counters, |log| {
        let machine = Machine::restore(&snapshot, &options, log)?;
        assert_eq!(
            machine.flush_state().msrs,
            saved.msrs,
            "HYPERCALL MSR preserved"
        );
        Ok(machine)
    })
    .expect("KVM and tracefs were there a moment ago");
    let c = &report.counters;
    assert!(c.total_hypercalls() > saved.counters.total_hypercalls());
    assert!(c.flushes_taken > saved.counters.flushes_taken);
    assert_eq!(summary.vcpus_checked, 4, "{summary:?}");
    fs::remove_dir_all(&dir).ok();
}
