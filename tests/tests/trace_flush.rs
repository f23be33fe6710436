//! Trace-verified flushing on real KVM (issue 5, "Tests on real KVM").
//!
//! The reference VMM runs a built-in workload while a private tracefs
//! instance follows this test's threads and records two host tracepoints:
//! `kvm:kvm_pv_tlb_flush`, which fires whenever a vCPU goes into the guest
//! and says whether KVM flushed its TLB first (`record_steal_time()`,
//! Linux arch/x86/kvm/x86.c; FINDINGS §1-2), and `kvm:kvm_pio` for every
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hvflush_api::config::{FlushMode, HypervFlushConfig};
use hvflush_tests::{Capability, have_kvm, skip};
use hyperv_flush::engine::{FlushObserver, Level, VcpuSet};
use vmm_integration::guest::Workload;
use vmm_integration::vmm::{GuestProgram, Machine, RunOptions, RunReport};

const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU ring buffer of the private instance; only two events, and
/// `kvm_pio` filtered to writes, so a 2 s storm fits.
const BUFFER_KB: u32 = 16384;
/// Largest trace text the test reads (the buffers are smaller).
const MAX_TRACE_BYTES: u64 = 512 << 20;
const VCPUS: u32 = 4;
/// vCPU ids above this in a trace line are garbage, not a vCPU of ours.
const MAX_VCPU_ID: usize = 4096;
/// Only a hang should ever hit it (guest code is emulated, FINDINGS §1).
const RUN_TIMEOUT: Duration = Duration::from_secs(50);

/// One VM at a time: each run is traced on its own instance anyway, but two
/// emulated guests on a 2-core host would only slow each other down.
static KVM_RUNS: Mutex<()> = Mutex::new(());

// Trace parsing.

/// What a trace line recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `kvm_pv_tlb_flush`: `vcpu` (KVM vcpu id) is going into the guest.
    Entry { vcpu: usize, flush: bool },
    /// `kvm_pio`: a port write (reads are not interesting here).
    PortWrite { port: u16 },
}

/// One parsed trace line. The trace is in time order, so events are
/// ordered by their index in the parsed list.
#[derive(Clone, Debug)]
struct Event {
    /// Line number in the trace file, for reports.
    line: usize,
    tid: u32,
    /// vCPU index from the thread name `vcpuN`, when the comm is known.
    comm_vcpu: Option<usize>,
    /// Printed timestamp (microsecond resolution) in nanoseconds.
    ts_ns: u64,
    kind: Kind,
}

/// Parses `"<comm>-<tid> [cpu] <flags> <secs>.<usecs>: <event>: <fields>"`;
/// lines of other events and comments are skipped.
fn parse_trace(text: &str) -> Vec<Event> {
    (text.lines().enumerate())
        .filter(|(_, l)| !l.starts_with('#'))
        .filter_map(|(n, l)| parse_line(l).map(|e| Event { line: n + 1, ..e }))
        .collect()
}

fn parse_line(line: &str) -> Option<Event> {
    let (task, rest) = split_task(line)?;
    let (comm, tid) = task.trim().rsplit_once('-')?;
    let tid = tid.parse().ok()?;
    let comm_vcpu = comm.strip_prefix("vcpu").and_then(|n| n.parse().ok());
    // After the CPU column: optional flags, then the timestamp "secs.usecs:".
    let after_cpu = &rest[rest.find(']')? + 1..];
    let ts_at = after_cpu.find(": ")?;
    let ts_ns = parse_timestamp(after_cpu[..ts_at].split_whitespace().last()?)?;
    let (name, fields) = after_cpu[ts_at + 2..].split_once(": ")?;
    let kind = match name.trim() {
        "kvm_pv_tlb_flush" => parse_entry(fields)?,
        "kvm_pio" => parse_pio(fields)?,
        _ => return None,
    };
    Some(Event {
        line: 0,
        tid,
        comm_vcpu,
        ts_ns,
        kind,
    })
}

/// Splits at the " [NNN]" CPU column (the comm may contain dashes).
fn split_task(line: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(i) = line[from..].find(" [") {
        let at = from + i;
        let tail = &line[at + 2..];
        let close = tail.find(']')?;
        if close > 0 && tail[..close].bytes().all(|b| b.is_ascii_digit()) {
            return Some((&line[..at], &line[at + 1..]));
        }
        from = at + 2;
    }
    None
}

fn parse_timestamp(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.')?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    secs.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

/// `vcpu 2 need_flush_tlb true`
fn parse_entry(fields: &str) -> Option<Kind> {
    let (vcpu, flush) = fields
        .trim()
        .strip_prefix("vcpu ")?
        .split_once(" need_flush_tlb ")?;
    let flush = match flush {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    Some(Kind::Entry {
        vcpu: vcpu.parse().ok()?,
        flush,
    })
}

/// `pio_write at 0x99 size 1 count 1 val 0x0` (reads are not parsed)
fn parse_pio(fields: &str) -> Option<Kind> {
    let (port, _) = fields
        .trim()
        .strip_prefix("pio_write at 0x")?
        .split_once(' ')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(Kind::PortWrite { port })
}

// The checker.

/// A request the engine reported complete.
#[derive(Clone, Debug)]
struct Completion {
    caller: usize,
    targets: Vec<usize>,
    /// CLOCK_MONOTONIC when `flush_completed` ran.
    at_ns: u64,
}

/// What the checker saw, for the summary.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    requests: usize,
    target_checks: usize,
    /// Target checks in which the target was seen running again after the
    /// call (the others are satisfied because it never ran again).
    decided_checks: usize,
    /// vCPUs with at least one decided check.
    vcpus_checked: usize,
    flushes_seen: usize,
    entries: usize,
}

/// One vCPU's events, in trace order (indices into the event list).
#[derive(Default)]
struct VcpuTrace {
    entries: Vec<usize>,
    flushes: Vec<usize>,
    /// Writes to the hypercall port (the vCPU's calls).
    port_writes: Vec<usize>,
    /// Entries and port writes to any port: everything the vCPU did
    /// inside `KVM_RUN` that the trace shows.
    all: Vec<usize>,
}

/// The vCPU a thread runs: from its name (`vcpuN`, the reference VMM's
/// thread names) and from the vCPU id of its entries; both must agree.
fn thread_vcpus(events: &[Event]) -> Result<HashMap<u32, usize>, Vec<String>> {
    let mut errors = Vec::new();
    let mut tid_vcpu: HashMap<u32, usize> = HashMap::new();
    for e in events {
        let entered = match e.kind {
            Kind::Entry { vcpu, .. } => Some(vcpu),
            Kind::PortWrite { .. } => None,
        };
        if let Some(vcpu) = entered
            .into_iter()
            .chain(e.comm_vcpu)
            .find(|v| *v >= MAX_VCPU_ID)
        {
            return Err(vec![format!(
                "line {}: vCPU id {vcpu} out of range",
                e.line
            )]);
        }
        if let (Some(n), Some(vcpu)) = (e.comm_vcpu, entered) {
            if n != vcpu {
                errors.push(format!(
                    "line {}: thread vcpu{n} entered vCPU {vcpu}",
                    e.line
                ));
            }
        }
        if let Some(vcpu) = entered.or(e.comm_vcpu) {
            if let Some(old) = tid_vcpu.insert(e.tid, vcpu).filter(|o| *o != vcpu) {
                errors.push(format!("tid {} ran vCPUs {old} and {vcpu}", e.tid));
            }
        }
    }
    if errors.is_empty() {
        Ok(tid_vcpu)
    } else {
        Err(errors)
    }
}

/// Builds per-vCPU event lists (the VMM creates vCPU `i` with id `i` on
/// thread `vcpu{i}`); every port write must come from a known vCPU thread.
fn split_by_vcpu(events: &[Event], port: u16) -> Result<Vec<VcpuTrace>, Vec<String>> {
    let tid_vcpu = thread_vcpus(events)?;
    let mut errors = Vec::new();
    let count = tid_vcpu.values().max().map_or(0, |m| m + 1);
    let mut per: Vec<VcpuTrace> = (0..count).map(|_| VcpuTrace::default()).collect();
    for (i, e) in events.iter().enumerate() {
        match e.kind {
            Kind::Entry { vcpu, flush } => {
                per[vcpu].entries.push(i);
                per[vcpu].all.push(i);
                if flush {
                    per[vcpu].flushes.push(i);
                }
            }
            Kind::PortWrite { port: p } => match tid_vcpu.get(&e.tid) {
                Some(&v) => {
                    if p == port {
                        per[v].port_writes.push(i);
                    }
                    per[v].all.push(i);
                }
                None => errors.push(format!("line {}: port write by unknown thread", e.line)),
            },
        }
    }
    if errors.is_empty() {
        Ok(per)
    } else {
        Err(errors)
    }
}

/// A request placed in the trace: its `T0` (event index) and completion.
#[derive(Clone, Copy)]
struct Placed {
    t0: usize,
    at_ns: u64,
}

/// Checks the trace against the completions; `Err` lists every violation.
fn check(events: &[Event], completions: &[Completion], port: u16) -> Result<Summary, Vec<String>> {
    let per = split_by_vcpu(events, port)?;
    let mut errors = Vec::new();
    let mut summary = Summary {
        entries: per.iter().map(|v| v.entries.len()).sum(),
        flushes_seen: per.iter().map(|v| v.flushes.len()).sum(),
        ..Summary::default()
    };
    // Per target vCPU: the requests that targeted it, placed in the trace.
    let mut placed: Vec<Vec<Placed>> = (0..per.len()).map(|_| Vec::new()).collect();
    let mut decided = vec![false; per.len()];
    let empty = VcpuTrace::default();
    for (n, c) in completions.iter().enumerate() {
        summary.requests += 1;
        let caller = per.get(c.caller).unwrap_or(&empty);
        // T0: the printed µs of the write is at most its true time, and the
        // write precedes Tc by a whole exit round trip (FINDINGS §1: ~10 µs).
        let tc_floor = c.at_ns - c.at_ns % 1000;
        let t0 = last_before(&caller.port_writes, |i| events[i].ts_ns < tc_floor);
        let Some(t0) = t0 else {
            errors.push(format!(
                "request {n} from vCPU {} (completed at {}): no hypercall port write before it",
                c.caller,
                fmt_ns(c.at_ns)
            ));
            continue;
        };
        for &t in &c.targets {
            summary.target_checks += 1;
            if let Some(vt) = per.get(t) {
                if check_target(events, c, n, t0, t, vt, &mut errors) {
                    summary.decided_checks += 1;
                    decided[t] = true;
                }
            } // else: never seen in the trace at all, so ran no guest code.
            if let Some(p) = placed.get_mut(t) {
                p.push(Placed { t0, at_ns: c.at_ns });
            }
        }
    }
    for (t, vt) in per.iter().enumerate() {
        check_explained(events, t, vt, &mut placed[t], &mut errors);
    }
    summary.vcpus_checked = decided.iter().filter(|d| **d).count();
    if errors.is_empty() {
        Ok(summary)
    } else {
        Err(errors)
    }
}

/// Target `t` of request `n` must flush after `T0` and at the latest at its
/// first entry after `Tc`, or before its first port write after `Tc`. For
/// the caller that entry is `T1`; for the other targets it is at least as
/// strict as "their first entry after `T1`". Printed times are floored to
/// the µs, so "printed after Tc" is surely after it; an event in the same
/// µs as Tc only moves the deadline later. Returns whether the target was
/// seen running after the call (the check decided something).
fn check_target(
    events: &[Event],
    c: &Completion,
    n: usize,
    t0: usize,
    t: usize,
    vt: &VcpuTrace,
    errors: &mut Vec<String>,
) -> bool {
    let deadline = vt
        .all
        .iter()
        .copied()
        .find(|&i| i > t0 && events[i].ts_ns > c.at_ns);
    let Some(deadline) = deadline else {
        return false; // Did not run again.
    };
    let (ran, flushed) = match events[deadline].kind {
        Kind::Entry { .. } => (
            "entered",
            vt.flushes.iter().any(|&i| i > t0 && i <= deadline),
        ),
        Kind::PortWrite { .. } => (
            "wrote a port",
            vt.flushes.iter().any(|&i| i > t0 && i < deadline),
        ),
    };
    if !flushed {
        errors.push(format!(
            "request {n} from vCPU {} (port write at {} line {}, completed at {}): \
             target vCPU {t} {ran} at {} (line {}) without need_flush_tlb true since the call",
            c.caller,
            fmt_ns(events[t0].ts_ns),
            events[t0].line,
            fmt_ns(c.at_ns),
            fmt_ns(events[deadline].ts_ns),
            events[deadline].line,
        ));
    }
    true
}

/// Every `true` of vCPU `t` must be paid for by its own request targeting
/// `t`: each request sets `t`'s pending flag once, and each flag is taken by
/// one arming, so distinct flushes need distinct requests. Request `r` can
/// explain flush `E` only if `T0(r)` precedes `E` and `r` completed after
/// `t`'s last traced event (entry or port write) before its previous flush:
/// that flush's arming came after the event (no guest code and no entry run
/// between an arming and the entry that flushes), and `r`'s flag was set
/// after that arming. Each request is usable for a contiguous run of
/// flushes, so matching greedily the usable request that expires first is
/// optimal.
fn check_explained(
    events: &[Event],
    t: usize,
    vt: &VcpuTrace,
    requests: &mut [Placed],
    errors: &mut Vec<String>,
) {
    requests.sort_by_key(|p| p.t0);
    let mut next = 0;
    let mut usable = BinaryHeap::new();
    let mut previous_armed_after: Option<u64> = None;
    for &f in &vt.flushes {
        while let Some(r) = requests.get(next).filter(|r| r.t0 < f) {
            usable.push(Reverse(r.at_ns));
            next += 1;
        }
        if let Some(floor) = previous_armed_after {
            while usable.peek().is_some_and(|Reverse(at)| *at < floor) {
                usable.pop();
            }
        }
        if usable.pop().is_none() {
            errors.push(format!(
                "vCPU {t} flushed at {} (line {}) with no request targeting it left to explain it",
                fmt_ns(events[f].ts_ns),
                events[f].line
            ));
        }
        let pos = vt.all.partition_point(|&i| i < f);
        previous_armed_after = Some(pos.checked_sub(1).map_or(0, |k| events[vt.all[k]].ts_ns));
    }
}

fn last_before(list: &[usize], ok: impl Fn(usize) -> bool) -> Option<usize> {
    list.iter().copied().rev().find(|&i| ok(i))
}

fn fmt_ns(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

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
    fn flush_completed(&self, caller: usize, _level: Level, targets: &VcpuSet) {
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
    let options = RunOptions {
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
    };
    let port = options.flush.hypercall_port;
    let trace = match start_tracing() {
        Ok(t) => t,
        Err(reason) => {
            skip(Capability::Tracefs, &reason);
            return None;
        }
    };
    let log = Arc::new(CompletionLog::default());
    let machine = Machine::create_with_observer(&options, log.clone())
        .unwrap_or_else(|e| panic!("creating the VM failed: {e:?}"));
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
    let summary = check(&events, &completions, port).unwrap_or_else(|errors| {
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
    let executed = c.flushes_executed + c.preempted_flushes;
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

// The checker against synthetic traces (it must be able to fail).

fn line(vcpu: usize, us: u64, what: &str) -> String {
    format!(
        "           vcpu{vcpu}-{}     [001] d..1.   {}.{:06}: {what}",
        1000 + vcpu,
        us / 1_000_000,
        us % 1_000_000
    )
}

fn entry(vcpu: usize, us: u64, flush: bool) -> String {
    line(
        vcpu,
        us,
        &format!("kvm_pv_tlb_flush: vcpu {vcpu} need_flush_tlb {flush}"),
    )
}

fn call(vcpu: usize, us: u64) -> String {
    line(
        vcpu,
        us,
        "kvm_pio: pio_write at 0x99 size 1 count 1 val 0x0 ",
    )
}

/// vCPU 0 flushes {0, 1} at 100 µs (completed at 120 µs); vCPU 1 was
/// running, was kicked and re-entered flushing; vCPU 0 flushes at its own
/// re-entry; vCPU 2 was not targeted.
fn good_trace() -> Vec<String> {
    vec![
        "# tracer: nop".to_string(),
        entry(0, 10, false),
        entry(1, 20, false),
        entry(2, 30, false),
        call(0, 100),
        entry(1, 110, true),
        entry(0, 125, true),
        entry(2, 130, false),
        entry(1, 140, false),
    ]
}

fn good_completion() -> Vec<Completion> {
    vec![Completion {
        caller: 0,
        targets: vec![0, 1],
        at_ns: 120_500,
    }]
}

fn run_check(lines: &[String], completions: &[Completion]) -> Result<Summary, Vec<String>> {
    check(&parse_trace(&lines.join("\n")), completions, 0x99)
}

#[test]
fn checker_accepts_a_correct_trace() {
    let s = run_check(&good_trace(), &good_completion()).expect("valid trace");
    assert_eq!(
        s,
        Summary {
            requests: 1,
            target_checks: 2,
            decided_checks: 2,
            vcpus_checked: 2,
            flushes_seen: 2,
            entries: 7,
        }
    );
}

fn console(vcpu: usize, us: u64) -> String {
    line(
        vcpu,
        us,
        "kvm_pio: pio_write at 0xe9 size 1 count 1 val 0x41 ",
    )
}

/// What a vCPU whose steal-time registration KVM dropped (INIT) looks
/// like: it never shows an entry again, yet keeps running guest code.
#[test]
fn checker_catches_a_target_that_keeps_running_without_entry_events() {
    let lines = vec![
        entry(0, 10, false),
        call(0, 100),
        call(1, 105), // vCPU 1 runs and calls; KVM traces no entry for it.
        entry(0, 125, true),
        call(1, 130), // ...and again after vCPU 0's call returned.
        console(1, 140),
    ];
    let completions = vec![Completion {
        caller: 0,
        targets: vec![0, 1],
        at_ns: 120_500,
    }];
    let errors = run_check(&lines, &completions).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("target vCPU 1 wrote a port at 0.000130"),
        "{errors:?}"
    );
    // Its flush before that port write makes the same trace correct.
    let mut fixed = lines.clone();
    fixed.insert(4, entry(1, 128, true));
    let s = run_check(&fixed, &completions).expect("valid");
    assert_eq!((s.decided_checks, s.vcpus_checked), (2, 2));
}

#[test]
fn checker_knows_vcpu_threads_by_name() {
    // vCPU 2 appears only through its thread name; a port write from a
    // thread that is neither named nor seen entering is refused.
    let lines = vec![call(0, 100), console(2, 110)];
    let completions = vec![Completion {
        caller: 0,
        targets: vec![2],
        at_ns: 105_000,
    }];
    let errors = run_check(&lines, &completions).unwrap_err();
    assert!(
        errors[0].contains("target vCPU 2 wrote a port"),
        "{errors:?}"
    );
    let anonymous =
        "<...>-77 [000] ..... 0.000120: kvm_pio: pio_write at 0xe9 size 1 count 1 val 0x0 ";
    let lines = vec![call(0, 100), anonymous.to_string()];
    let errors = run_check(&lines, &[]).unwrap_err();
    assert!(errors[0].contains("unknown thread"), "{errors:?}");
}

#[test]
fn checker_catches_a_lost_target_flush() {
    let mut lines = good_trace();
    lines[5] = entry(1, 110, false); // vCPU 1 re-entered without flushing.
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("target vCPU 1 entered"), "{errors:?}");
}

#[test]
fn checker_catches_a_target_that_ran_before_the_caller_returned_to_the_guest() {
    let mut lines = good_trace();
    lines[5] = entry(1, 121, false); // After Tc (120.5), before T1 (125).
    lines[8] = entry(1, 140, true);
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("target vCPU 1 entered at 0.000121"),
        "{errors:?}"
    );
}

#[test]
fn checker_catches_a_caller_that_did_not_flush_itself() {
    let mut lines = good_trace();
    lines[6] = entry(0, 125, false);
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert!(errors[0].contains("target vCPU 0 entered"), "{errors:?}");
}

#[test]
fn checker_catches_a_flush_from_before_the_call() {
    let mut lines = good_trace();
    lines[2] = entry(1, 20, true); // Flushed before the port write only.
    lines[5] = entry(1, 110, false);
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("target vCPU 1 entered")),
        "{errors:?}"
    );
}

#[test]
fn checker_catches_an_untargeted_flush() {
    let mut lines = good_trace();
    lines[7] = entry(2, 130, true);
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("vCPU 2 flushed"), "{errors:?}");
}

#[test]
fn checker_catches_a_second_flush_for_one_request() {
    let mut lines = good_trace();
    lines[8] = entry(1, 140, true); // vCPU 1 flushed twice for one request.
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("vCPU 1 flushed"), "{errors:?}");
}

#[test]
fn checker_catches_a_completion_without_a_port_write() {
    let mut lines = good_trace();
    lines.remove(4);
    let errors = run_check(&lines, &good_completion()).unwrap_err();
    assert!(errors[0].contains("no hypercall port write"), "{errors:?}");
}

#[test]
fn checker_accepts_targets_that_never_ran_again() {
    let lines: Vec<String> = good_trace().into_iter().take(6).collect();
    let s = run_check(&lines, &good_completion()).expect("valid");
    assert_eq!(s.flushes_seen, 1);
}

#[test]
fn parser_reads_real_line_shapes() {
    let e = parse_line(
        "      vcpu-3-x-77 [012] d..2. 4071.123456: kvm_pv_tlb_flush: vcpu 3 need_flush_tlb true",
    )
    .expect("parsed");
    assert_eq!((e.tid, e.ts_ns), (77, 4_071_123_456_000));
    assert_eq!(
        e.kind,
        Kind::Entry {
            vcpu: 3,
            flush: true
        }
    );
    let p = parse_line(
        "<...>-9 [000] ..... 1.000001: kvm_pio: pio_write at 0x99 size 1 count 1 val 0x2 ",
    )
    .expect("parsed");
    assert_eq!((p.tid, p.comm_vcpu), (9, None));
    assert_eq!(p.kind, Kind::PortWrite { port: 0x99 });
    assert!(
        parse_line("vcpu0-1 [000] ..... 1.0: kvm_pio: pio_read at 0x99 size 1 count 1 val 0x0")
            .is_none()
    );
    assert!(parse_line("vcpu0-1 [000] ..... 1.000001: sched_switch: x").is_none());
}
