//! The trace checker: parses `kvm_pv_tlb_flush` and `kvm_pio` lines and
//! checks them against the engine's completed requests (the rules are in
//! the test file's header), and its own tests on synthetic traces, which
//! show it can fail.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// vCPU ids above this in a trace line are garbage, not a vCPU of ours.
const MAX_VCPU_ID: usize = 4096;

// Trace parsing.

/// What a trace line recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `kvm_pv_tlb_flush`: `vcpu` (KVM vcpu id) is going into the guest.
    Entry { vcpu: usize, flush: bool },
    /// `kvm_pio`: a port write (reads are not interesting here).
    PortWrite { port: u16 },
}

/// One parsed trace line. The trace is in time order, so events are
/// ordered by their index in the parsed list.
#[derive(Clone, Debug)]
pub(crate) struct Event {
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
pub(crate) fn parse_trace(text: &str) -> Vec<Event> {
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
pub(crate) struct Completion {
    pub(crate) caller: usize,
    pub(crate) targets: Vec<usize>,
    /// CLOCK_MONOTONIC when `flush_completed` ran.
    pub(crate) at_ns: u64,
}

/// What the checker saw, for the summary.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) requests: usize,
    pub(crate) target_checks: usize,
    /// Target checks in which the target was seen running again after the
    /// call (the others are satisfied because it never ran again).
    pub(crate) decided_checks: usize,
    /// vCPUs with at least one decided check.
    pub(crate) vcpus_checked: usize,
    pub(crate) flushes_seen: usize,
    pub(crate) entries: usize,
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
/// `restored_at`: the VM was restored from a snapshot at that
/// CLOCK_MONOTONIC time, which asks every vCPU to flush everything at its
/// first entry: that entry must flush, and explains that flush.
pub(crate) fn check(
    events: &[Event],
    completions: &[Completion],
    port: u16,
    restored_at: Option<u64>,
) -> Result<Summary, Vec<String>> {
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
        // write precedes Tc by a whole exit round trip (docs/host-facts.md §1: ~10 µs).
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
    if let Some(at_ns) = restored_at {
        for (t, vt) in per.iter().enumerate() {
            if !vt.entries.is_empty() && vt.entries.first() != vt.flushes.first() {
                errors.push(format!(
                    "vCPU {t}: its first entry after the restore did not flush"
                ));
            }
            placed[t].push(Placed { t0: 0, at_ns });
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
        // `<=`: a restore is placed at event 0, which may be this flush; a
        // request's port write is never the flush event itself.
        while let Some(r) = requests.get(next).filter(|r| r.t0 <= f) {
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

// The checker against synthetic traces (it must be able to fail).

#[cfg(test)]
mod tests {
    use super::*;

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
        check(&parse_trace(&lines.join("\n")), completions, 0x99, None)
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

    /// After a restore every vCPU's first entry flushes (the restore's
    /// flush-all explains it); a first entry that does not, or a second
    /// unexplained flush, is a violation; without a restore the same
    /// flushes have nothing to explain them.
    #[test]
    fn a_restore_explains_each_first_flush_and_requires_it() {
        let events = |lines: &[String]| parse_trace(&lines.join("\n"));
        let restored = vec![
            "# tracer: nop".to_string(),
            entry(0, 10, true),
            entry(1, 20, true),
            entry(0, 30, false),
        ];
        assert!(check(&events(&restored), &[], 0x99, Some(5_000)).is_ok());
        assert!(check(&events(&restored), &[], 0x99, None).is_err());
        let missed = vec![
            "# tracer: nop".to_string(),
            entry(0, 10, false),
            entry(0, 20, true),
        ];
        let errors = check(&events(&missed), &[], 0x99, Some(5_000)).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("first entry after the restore did not flush")),
            "{errors:?}"
        );
        let twice = vec![
            "# tracer: nop".to_string(),
            entry(0, 10, true),
            entry(0, 20, true),
        ];
        assert!(check(&events(&twice), &[], 0x99, Some(5_000)).is_err());
    }
}
