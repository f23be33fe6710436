//! `hvflush-vmm soak`: a long `storm` (16 vCPUs for 10 minutes by
//! default) that watches the VMM rather than the guest. Every sample it
//! reads its own resident memory (/proc/self/status `VmRSS`) and the
//! engine's counters, and checks that no counter went back and no vCPU was
//! reported unresponsive; every few samples it traces a window and checks
//! KVM performed as many flushes as the engine counted executed
//! (`soak_trace.rs`). At the end: RSS growth after the warm-up, and the
//! counter identities of `hvflush_api::counters`. docs/reliability.md
//! has a full run.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use clap::Args;
use hvflush_config::FlushMode;
use hvflush_vmm::guest::Workload;
use hvflush_vmm::vmm::{GuestProgram, Machine, RunOptions, RunReport};
use hyperv_flush::engine::{CountersSnapshot, Partition};
use serde_json::{Value, json};
use vmm_integration::service::engine_counters;

use super::cli::{FlushArgs, install_termination_handlers, termination_flag};
use super::soak_trace::{self, Window};
use hvflush_api::error_line;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// vCPUs of the storm (more than the host has CPUs is the point).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// How long the storm runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub minutes: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sample_secs: u64,
    /// RSS growth is measured from the first sample after this long.
    #[arg(long, default_value_t = 60)]
    pub warmup_secs: u64,
    /// Seconds of each trace-verified window (0: no trace windows).
    #[arg(long, default_value_t = 5)]
    pub trace_secs: u64,
    /// A trace window after every this many samples.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..))]
    pub trace_every: u64,
    /// Fail when RSS grew more than this after the warm-up.
    #[arg(long, default_value_t = 1024)]
    pub max_rss_growth_kib: u64,
    #[command(flatten)]
    pub flush: FlushArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One sample.
struct Sample {
    at: Duration,
    rss_kib: u64,
    counters: CountersSnapshot,
}

/// What the sampler saw.
#[derive(Default)]
struct Watch {
    samples: Vec<Sample>,
    windows: Vec<(Duration, Window)>,
    trace_limitation: Option<String>,
    /// Counters that went back, by name, with the sample time.
    went_back: Vec<String>,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every counter of a snapshot, by name, for the monotonicity check.
fn named(c: &CountersSnapshot) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = engine_counters(c)
        .values()
        .map(|(name, _, v)| (name.to_owned(), v))
        .collect();
    all.extend(
        c.hypercalls
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("hypercalls[{i}]"), *v)),
    );
    all.extend(
        c.status
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("status[{i}]"), *v)),
    );
    all.push(("latency_samples".into(), c.latency_samples));
    all
}

fn sampler(args: &SoakArgs, partition: &Partition, done: &AtomicBool, start: Instant) -> Watch {
    // Room for every sample up front: the sampler lives in the process it
    // measures, and a growing Vec would show as RSS growth.
    let expected = (args.minutes * 60 / args.sample_secs + 2) as usize;
    let mut watch = Watch {
        samples: Vec::with_capacity(expected),
        windows: Vec::with_capacity(expected / args.trace_every as usize + 1),
        ..Watch::default()
    };
    let every = Duration::from_secs(args.sample_secs);
    let mut next = every;
    while !done.load(SeqCst) {
        if start.elapsed() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next += every;
        let sample = Sample {
            at: start.elapsed(),
            rss_kib: rss_kib(),
            counters: partition.counters(),
        };
        if let Some(prev) = watch.samples.last() {
            for ((name, old), (_, new)) in named(&prev.counters).iter().zip(named(&sample.counters))
            {
                if new < *old {
                    watch
                        .went_back
                        .push(format!("{name} {old} -> {new} at {:?}", sample.at));
                }
            }
        }
        watch.samples.push(sample);
        let trace_due = args.trace_secs > 0 && watch.samples.len() as u64 % args.trace_every == 0;
        if trace_due && watch.trace_limitation.is_none() && !done.load(SeqCst) {
            let at = start.elapsed();
            match soak_trace::window(Duration::from_secs(args.trace_secs), || {
                partition.counters().flushes_executed
            }) {
                Ok(w) => watch.windows.push((at, w)),
                Err(e) => watch.trace_limitation = Some(error_line(&e)),
            }
        }
    }
    watch
}

pub fn soak(args: SoakArgs) -> Result<ExitCode, String> {
    let mut flush = args.flush.config()?;
    if args.flush.hyperv_flush.is_none() && args.flush.config.is_none() {
        // The path under test, whatever the host offers.
        flush.mode = FlushMode::Userspace;
    }
    let duration = Duration::from_secs(args.minutes * 60);
    let options = RunOptions {
        vcpus: args.vcpus,
        flush,
        program: GuestProgram::Builtin(Workload::Storm),
        duration: Some(duration),
        timeout: duration + Duration::from_secs(300),
        echo_console: false,
        ..Default::default()
    };
    install_termination_handlers()?;
    let machine = Machine::create(&options).map_err(|e| error_line(&e))?;
    let partition = Arc::clone(machine.partition());
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (report, watch) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| sampler(&args, &partition, &done, start));
        let report = machine.run_until(termination_flag());
        done.store(true, SeqCst);
        (report, watcher.join())
    });
    let report = report.map_err(|e| error_line(&e))?;
    let watch = watch.map_err(|_| "the sampler thread panicked".to_owned())?;
    let result = summarise(&args, &report, &watch);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        print!("{}", table(&result));
    }
    Ok(if result["passed"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn summarise(args: &SoakArgs, report: &RunReport, watch: &Watch) -> Value {
    let c = &report.counters;
    let warm = watch
        .samples
        .iter()
        .find(|s| s.at >= Duration::from_secs(args.warmup_secs))
        .or(watch.samples.first());
    let last = watch.samples.last();
    let growth = match (warm, last) {
        (Some(w), Some(l)) => l.rss_kib as i64 - w.rss_kib as i64,
        _ => 0,
    };
    let max_rss = watch.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let counters = engine_counters(c);
    let broken = counters.broken_identities();
    let identities = broken.is_empty() && c.total_hypercalls() == c.hypercalls.iter().sum::<u64>();
    let unresponsive = c.unresponsive_vcpus;
    let windows_ok = watch.windows.iter().all(|(_, w)| w.passed());
    let passed = report.passed()
        && watch.went_back.is_empty()
        && unresponsive == 0
        && identities
        && windows_ok
        && growth <= args.max_rss_growth_kib as i64;
    let samples: Vec<Value> = watch
        .samples
        .iter()
        .map(|s| {
            json!({
                "at_s": s.at.as_secs(),
                "rss_kib": s.rss_kib,
                "hypercalls": s.counters.total_hypercalls(),
                "flushes_executed": s.counters.flushes_executed,
                "kicks": s.counters.kicks,
                "unresponsive_vcpus": s.counters.unresponsive_vcpus,
            })
        })
        .collect();
    let windows: Vec<Value> = watch
        .windows
        .iter()
        .map(|(at, w)| {
            json!({"at_s": at.as_secs(), "executed": w.executed, "traced": w.traced,
                   "lost": w.lost, "vcpu_threads": w.vcpus, "passed": w.passed()})
        })
        .collect();
    json!({
        "passed": passed,
        "run": {"passed": report.passed(), "failure": report.failure(),
                "vcpus": report.outcomes.len(), "elapsed_s": report.elapsed.as_secs()},
        "rss_kib": {"after_warmup": warm.map(|s| s.rss_kib), "last": last.map(|s| s.rss_kib),
                    "max": max_rss, "growth_after_warmup": growth,
                    "warmup_s": args.warmup_secs, "allowed_growth": args.max_rss_growth_kib},
        "counters_monotonic": watch.went_back.is_empty(),
        "went_back": watch.went_back,
        "identities_hold": identities,
        "broken_identities": broken,
        "counters": counters,
        "hypercalls": c.total_hypercalls(),
        "trace_windows": windows,
        "trace_limitation": watch.trace_limitation,
        "samples": samples,
    })
}

fn table(r: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verdict = if r["passed"] == true {
        "PASSED"
    } else {
        "FAILED"
    };
    let _ = writeln!(
        out,
        "{verdict}: soak, storm on {} vCPUs for {} s",
        r["run"]["vcpus"], r["run"]["elapsed_s"]
    );
    if let Some(f) = r["run"]["failure"].as_str() {
        let _ = writeln!(out, "  run: {f}");
    }
    let _ = writeln!(
        out,
        "  {:>6} {:>10} {:>12} {:>12} {:>10} {:>6}",
        "t (s)", "RSS (KiB)", "hypercalls", "executed", "kicks", "unresp"
    );
    for s in r["samples"].as_array().into_iter().flatten() {
        // `Value`'s Display ignores widths: print the numbers.
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {:>6} {:>10} {:>12} {:>12} {:>10} {:>6}",
            n("at_s"),
            n("rss_kib"),
            n("hypercalls"),
            n("flushes_executed"),
            n("kicks"),
            n("unresponsive_vcpus")
        );
    }
    let rss = &r["rss_kib"];
    let _ = writeln!(
        out,
        "  RSS after {} s warm-up {} KiB, last {} KiB, max {} KiB: growth {} KiB (allowed {})",
        rss["warmup_s"],
        rss["after_warmup"],
        rss["last"],
        rss["max"],
        rss["growth_after_warmup"],
        rss["allowed_growth"]
    );
    let _ = writeln!(
        out,
        "  counters monotonic: {}, identities hold: {}",
        r["counters_monotonic"], r["identities_hold"]
    );
    for w in r["trace_windows"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  trace window at {} s: executed {}, traced {}, lost {} ({} vCPU threads): {}",
            w["at_s"],
            w["executed"],
            w["traced"],
            w["lost"],
            w["vcpu_threads"],
            if w["passed"] == true {
                "ok"
            } else {
                "MISMATCH"
            }
        );
    }
    if let Some(l) = r["trace_limitation"].as_str() {
        let _ = writeln!(out, "  trace windows unavailable: {l}");
    }
    for (name, v) in r["counters"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "  {name:<28} {:>12}", v.as_u64().unwrap_or(0));
    }
    out
}
