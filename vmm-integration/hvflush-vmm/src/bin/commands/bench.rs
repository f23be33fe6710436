//! `hvflush-vmm bench`: the flush path's cost against a bare trap, the
//! flush hooks' cost on exits that are not flushes, the executor's cost
//! (a self-flush, and its registration check alone), and kick-and-wait
//! latency against the number of running targets. Every ratio is against
//! a baseline measured in the same VM run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use hvflush_vmm::guest::Workload;
use hvflush_vmm::guest::layout::{BENCH_HALTED_TARGETS, marker};
use hvflush_vmm::vmm::{self, GuestProgram, RunOptions, RunReport};
use serde_json::{Value, json};

use super::cli::FlushArgs;
use hvflush_api::error_line;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Calls per phase with idle targets.
    #[arg(long, default_value_t = 2000)]
    pub iterations: u64,
    /// Idle-target VM runs; each per-call time and ratio reported for
    /// them is the median over the runs (hosts are noisy).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeats: u32,
    /// Calls per phase with running targets.
    #[arg(long, default_value_t = 300)]
    pub running_iterations: u64,
    /// Running-target counts to measure kick-and-wait latency at.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub targets: Vec<u32>,
    /// Halted-target counts to measure flushes of halted targets at,
    /// against self-flushes in the same runs (PVH boot: INIT/SIPI-started
    /// targets halted in the in-kernel LAPIC). Empty: none.
    #[arg(long, value_delimiter = ',', default_value = "1,3,7")]
    pub halted: Vec<u32>,
    #[command(flatten)]
    pub flush: FlushArgs,
    /// Write the JSON results here too.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write an SVG plot of latency against running targets here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Run no guests: draw the --svg plot from these saved results (a
    /// file written by --output).
    #[arg(long, value_name = "JSON", requires = "svg", conflicts_with = "output")]
    pub plot_from: Option<PathBuf>,
    /// Print the JSON results (default: a table).
    #[arg(long)]
    pub json: bool,
}

/// Per-call times of one bench VM run.
struct Phases {
    trap_ns: f64,
    hypercall_ns: f64,
    /// Idle-target runs only (the workload's later phases).
    idle: Option<IdlePhases>,
    kicks: u64,
    targets: u64,
    targets_without_kick: u64,
    halted_not_waited_for: u64,
}

/// The phases the workload adds when no target runs.
struct IdlePhases {
    self_flush_ns: f64,
    trap_hooks_off_ns: f64,
    trap_hooks_on_ns: f64,
    /// Hooks on / hooks off, within the run.
    hooks_ratio: f64,
    /// Self-flush / flush of idle targets, within the run.
    self_flush_ratio: f64,
    flushes_executed: u64,
}

/// What the vCPUs other than vCPU 0 do in a bench run.
#[derive(Clone, Copy)]
enum Others {
    /// They exit at once: outside `KVM_RUN` while vCPU 0 measures.
    Exited,
    /// They halt: blocked inside `KVM_RUN` (in-kernel LAPIC).
    Halted,
    /// This many spin in the guest (the rest exit).
    Running(u32),
}

fn measure(
    args: &BenchArgs,
    vcpus: u32,
    others: Others,
    iterations: u64,
) -> Result<Phases, String> {
    let (running, param) = match others {
        Others::Exited => (0, 0),
        Others::Halted => (0, BENCH_HALTED_TARGETS),
        Others::Running(k) => (k, u64::from(k)),
    };
    let options = RunOptions {
        vcpus,
        flush: args.flush.config()?,
        program: GuestProgram::Builtin(Workload::Bench),
        timeout: Duration::from_secs(600),
        iterations,
        param,
        echo_console: false,
        // Running targets spin until told to stop; with idle ones vCPU 0
        // goes on to the later phases and exits by itself.
        stop_on_marker: (running > 0).then_some(marker::HYPERCALL_END),
        bench_hooks_off: (running == 0)
            .then_some((marker::HOOKS_OFF_START, marker::HOOKS_ON_START)),
        ..Default::default()
    };
    let report = vmm::run(&options).map_err(|e| error_line(&e))?;
    if !report.passed() {
        return Err(format!(
            "bench VM ({vcpus} vCPUs) failed: {}",
            report.failure().unwrap_or_default()
        ));
    }
    phases(&report, iterations)
}

fn phases(report: &RunReport, iterations: u64) -> Result<Phases, String> {
    let at = |value: u32| {
        report
            .markers
            .iter()
            .find(|m| m.value == value)
            .map(|m| m.at)
            .ok_or_else(|| format!("bench marker {value} missing"))
    };
    let (t1, t2, t3) = (
        at(marker::TRAP_START)?,
        at(marker::HYPERCALL_START)?,
        at(marker::HYPERCALL_END)?,
    );
    let per_call = |d: Duration| d.as_nanos() as f64 / iterations.max(1) as f64;
    let idle = if report
        .markers
        .iter()
        .any(|m| m.value == marker::SELF_FLUSH_START)
    {
        let (t4, t5, t6, t7) = (
            at(marker::SELF_FLUSH_START)?,
            at(marker::HOOKS_OFF_START)?,
            at(marker::HOOKS_ON_START)?,
            at(marker::HOOKS_ON_END)?,
        );
        let (self_flush, off, on) = (per_call(t5 - t4), per_call(t6 - t5), per_call(t7 - t6));
        Some(IdlePhases {
            self_flush_ns: self_flush,
            trap_hooks_off_ns: off,
            trap_hooks_on_ns: on,
            hooks_ratio: on / off,
            self_flush_ratio: self_flush / per_call(t3 - t2),
            flushes_executed: report.counters.flushes_executed,
        })
    } else {
        None
    };
    Ok(Phases {
        trap_ns: per_call(t2 - t1),
        hypercall_ns: per_call(t3 - t2),
        idle,
        kicks: report.counters.kicks,
        targets: report.counters.targets,
        targets_without_kick: report.counters.targets_without_kick,
        halted_not_waited_for: report.counters.halted_not_waited_for,
    })
}

/// Per-field medians of several idle-target runs (each ratio is the
/// median of the runs' own ratios, so each compares phases of one run).
fn median_phases(runs: Vec<Phases>) -> Result<Phases, String> {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    let pick = |f: fn(&Phases) -> f64| median(runs.iter().map(f).collect());
    if runs.is_empty() || runs.iter().any(|p| p.idle.is_none()) {
        return Err("an idle-target run has no self-flush or hooks-off phases".into());
    }
    let pick_later = |f: fn(&IdlePhases) -> f64| {
        median(runs.iter().filter_map(|p| p.idle.as_ref()).map(f).collect())
    };
    Ok(Phases {
        trap_ns: pick(|p| p.trap_ns),
        hypercall_ns: pick(|p| p.hypercall_ns),
        idle: Some(IdlePhases {
            self_flush_ns: pick_later(|l| l.self_flush_ns),
            trap_hooks_off_ns: pick_later(|l| l.trap_hooks_off_ns),
            trap_hooks_on_ns: pick_later(|l| l.trap_hooks_on_ns),
            hooks_ratio: pick_later(|l| l.hooks_ratio),
            self_flush_ratio: pick_later(|l| l.self_flush_ratio),
            flushes_executed: runs
                .iter()
                .filter_map(|p| p.idle.as_ref())
                .map(|l| l.flushes_executed)
                .sum(),
        }),
        kicks: runs.iter().map(|p| p.kicks).sum(),
        targets: runs.iter().map(|p| p.targets).sum(),
        targets_without_kick: runs.iter().map(|p| p.targets_without_kick).sum(),
        halted_not_waited_for: runs.iter().map(|p| p.halted_not_waited_for).sum(),
    })
}

/// The executor's registration check alone: `KVM_GET_MSRS` of
/// `MSR_KVM_STEAL_TIME` on a vCPU of a scratch VM, per call.
fn registration_check_ns(calls: u32) -> Result<f64, String> {
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_integration::kvm::userspace::StealTimeRecord;

    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("cannot create a VM: {e}"))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("cannot create a vCPU: {e}"))?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)])
        .map_err(|e| format!("cannot map memory: {e}"))?;
    let record = StealTimeRecord::register(&vcpu, &mem, 0x9000).map_err(|e| error_line(&e))?;
    let start = std::time::Instant::now();
    for _ in 0..calls {
        if !record.is_registered(&vcpu).map_err(|e| error_line(&e))? {
            return Err("the registration vanished during the measurement".into());
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(calls.max(1)))
}

pub fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    if let (Some(json), Some(svg)) = (&args.plot_from, &args.svg) {
        super::plot::plot_from(json, svg)?;
        return Ok(ExitCode::SUCCESS);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads_per_cpu = |vcpus: u32| f64::from(vcpus) / cpus as f64;
    // Idle targets: vCPU 1 exits at once, so it is outside KVM_RUN.
    let idle_runs = (0..args.repeats)
        .map(|_| measure(&args, 2, Others::Exited, args.iterations))
        .collect::<Result<Vec<_>, _>>()?;
    let idle = median_phases(idle_runs)?;
    let mut halted = Vec::new();
    for &k in &args.halted {
        let runs = (0..args.repeats)
            .map(|_| measure(&args, k + 1, Others::Halted, args.iterations))
            .collect::<Result<Vec<_>, _>>()?;
        halted.push(halted_row(
            k,
            median_phases(runs)?,
            &args,
            threads_per_cpu(k + 1),
        )?);
    }
    let mut running = Vec::new();
    for &k in &args.targets {
        let p = measure(&args, k + 1, Others::Running(k), args.running_iterations)?;
        running.push(json!({
            "running_targets": k,
            "vcpu_threads_per_host_cpu": threads_per_cpu(k + 1),
            "trap_ns": p.trap_ns.round(),
            "hypercall_ns": p.hypercall_ns.round(),
            "kick_and_wait_ns": (p.hypercall_ns - p.trap_ns).max(0.0).round(),
            "ratio_vs_trap": p.hypercall_ns / p.trap_ns,
            "kicks_per_call": p.kicks as f64 / args.running_iterations.max(1) as f64,
        }));
    }
    let later = idle
        .idle
        .as_ref()
        .ok_or("the idle-target run has no self-flush or hooks-off phases")?;
    let check_ns = registration_check_ns(20_000)?;
    let results = json!({
        "host": { "cpus": cpus },
        "idle_targets": {
            "iterations": args.iterations,
            "runs": args.repeats,
            "trap_ns": idle.trap_ns.round(),
            "hypercall_ns": idle.hypercall_ns.round(),
            "ratio_vs_trap": idle.hypercall_ns / idle.trap_ns,
            "target_ratio": 1.1,
            "kicks_per_targeted_vcpu": idle.kicks as f64 / idle.targets.max(1) as f64,
        },
        "non_flush_exits": {
            "trap_hooks_off_ns": later.trap_hooks_off_ns.round(),
            "trap_hooks_on_ns": later.trap_hooks_on_ns.round(),
            "ratio_hooks_on_vs_off": later.hooks_ratio,
            "target_ratio": 1.02,
        },
        "executor": {
            "self_flush_ns": later.self_flush_ns.round(),
            "ratio_self_flush_vs_idle_hypercall": later.self_flush_ratio,
            "flushes_executed": later.flushes_executed,
            "registration_check_ns": check_ns.round(),
        },
        "halted_targets": halted,
        "running_targets": running,
    });
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{results:#}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, super::plot::latency_svg(&results)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{results:#}");
    } else {
        print!("{}", table(&results));
    }
    Ok(ExitCode::SUCCESS)
}

/// One `halted_targets` row: `k` halted targets flushed, against
/// self-flushes in the same runs (medians over the runs).
fn halted_row(k: u32, p: Phases, args: &BenchArgs, threads_per_cpu: f64) -> Result<Value, String> {
    let later = p
        .idle
        .as_ref()
        .ok_or("a halted-target run has no self-flush phase")?;
    // Per run: `iterations` flushes of the k targets, then `iterations`
    // self-flushes (the caller is outside the guest: never kicked).
    let flushes = args.iterations * u64::from(args.repeats);
    let halted_targets = (flushes * u64::from(k)) as f64;
    Ok(json!({
        "halted_targets": k,
        "vcpu_threads_per_host_cpu": threads_per_cpu,
        "hypercall_ns": p.hypercall_ns.round(),
        "self_flush_ns": later.self_flush_ns.round(),
        "ratio_vs_self_flush": 1.0 / later.self_flush_ratio,
        "target_ratio": 1.3,
        "kicks_per_halted_target": p.kicks as f64 / halted_targets,
        "halted_targets_without_kick": p.targets_without_kick.saturating_sub(flushes) as f64
            / halted_targets,
        "halted_targets_not_waited_for": p.halted_not_waited_for as f64 / halted_targets,
    }))
}

fn table(r: &Value) -> String {
    let mut out = String::new();
    let idle = &r["idle_targets"];
    let _ = writeln!(
        out,
        "idle targets: trap {} ns, flush hypercall {} ns per call, ratio {:.3} (target <= 1.1), kicks per targeted vCPU {}",
        idle["trap_ns"],
        idle["hypercall_ns"],
        idle["ratio_vs_trap"].as_f64().unwrap_or(0.0),
        idle["kicks_per_targeted_vcpu"]
    );
    let exits = &r["non_flush_exits"];
    let _ = writeln!(
        out,
        "non-flush exits: trap {} ns without the flush hooks, {} ns with them, ratio {:.3} (target <= 1.02)",
        exits["trap_hooks_off_ns"],
        exits["trap_hooks_on_ns"],
        exits["ratio_hooks_on_vs_off"].as_f64().unwrap_or(0.0)
    );
    let executor = &r["executor"];
    let _ = writeln!(
        out,
        "executor: self-flush {} ns per call ({:.3}x a flush of idle targets), registration check {} ns",
        executor["self_flush_ns"],
        executor["ratio_self_flush_vs_idle_hypercall"]
            .as_f64()
            .unwrap_or(0.0),
        executor["registration_check_ns"]
    );
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    // serde_json's Display ignores widths: print numbers as numbers.
    let n = |v: &Value| v.as_f64().map_or(0, |x| x as u64);
    let _ = writeln!(
        out,
        "halted  vCPUs/CPU  hypercall_ns  self_flush_ns  ratio (target <= 1.3)  kicks/target  no-kick/target  no-wait/target"
    );
    for row in r["halted_targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>6}  {:>9.1}  {:>12}  {:>13}  {:>21.2}  {:>12.2}  {:>14.2}  {:>14.2}",
            n(&row["halted_targets"]),
            f(&row["vcpu_threads_per_host_cpu"]),
            n(&row["hypercall_ns"]),
            n(&row["self_flush_ns"]),
            f(&row["ratio_vs_self_flush"]),
            f(&row["kicks_per_halted_target"]),
            f(&row["halted_targets_without_kick"]),
            f(&row["halted_targets_not_waited_for"])
        );
    }
    let _ = writeln!(
        out,
        "running  vCPUs/CPU  trap_ns  hypercall_ns  kick_and_wait_ns  kicks/call"
    );
    for row in r["running_targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>7}  {:>9.1}  {:>7}  {:>12}  {:>16}  {:>10.2}",
            n(&row["running_targets"]),
            f(&row["vcpu_threads_per_host_cpu"]),
            n(&row["trap_ns"]),
            n(&row["hypercall_ns"]),
            n(&row["kick_and_wait_ns"]),
            f(&row["kicks_per_call"])
        );
    }
    out
}
