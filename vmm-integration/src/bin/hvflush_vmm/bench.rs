//! `hvflush-vmm bench`: the flush path's cost against a bare trap, and
//! kick-and-wait latency against the number of running targets. Every
//! ratio is against a baseline measured in the same VM run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use vmm_integration::guest::Workload;
use vmm_integration::guest::layout::marker;
use vmm_integration::vmm::{self, GuestProgram, RunOptions, RunReport};

use super::cli::FlushArgs;
use vmm_integration::error_chain::error_line;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Calls per phase with idle targets.
    #[arg(long, default_value_t = 2000)]
    pub iterations: u64,
    /// Calls per phase with running targets.
    #[arg(long, default_value_t = 300)]
    pub running_iterations: u64,
    /// Running-target counts to measure kick-and-wait latency at.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub targets: Vec<u32>,
    #[command(flatten)]
    pub flush: FlushArgs,
    /// Write the JSON results here too.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write an SVG plot of latency against running targets here.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print the JSON results (default: a table).
    #[arg(long)]
    pub json: bool,
}

/// Per-call times of one bench VM run.
struct Phases {
    trap_ns: f64,
    hypercall_ns: f64,
    kicks: u64,
    targets: u64,
}

fn measure(args: &BenchArgs, vcpus: u32, running: u32, iterations: u64) -> Result<Phases, String> {
    let options = RunOptions {
        vcpus,
        flush: args.flush.config()?,
        program: GuestProgram::Builtin(Workload::Bench),
        timeout: Duration::from_secs(600),
        iterations,
        param: u64::from(running),
        echo_console: false,
        stop_on_marker: Some(marker::HYPERCALL_END),
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
    Ok(Phases {
        trap_ns: per_call(t2 - t1),
        hypercall_ns: per_call(t3 - t2),
        kicks: report.counters.kicks,
        targets: report.counters.targets,
    })
}

pub fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    // Idle targets: vCPU 1 exits at once, so it is outside KVM_RUN.
    let idle = measure(&args, 2, 0, args.iterations)?;
    let mut running = Vec::new();
    for &k in &args.targets {
        let p = measure(&args, k + 1, k, args.running_iterations)?;
        running.push(json!({
            "running_targets": k,
            "trap_ns": p.trap_ns.round(),
            "hypercall_ns": p.hypercall_ns.round(),
            "kick_and_wait_ns": (p.hypercall_ns - p.trap_ns).max(0.0).round(),
            "ratio_vs_trap": p.hypercall_ns / p.trap_ns,
            "kicks_per_call": p.kicks as f64 / args.running_iterations.max(1) as f64,
        }));
    }
    let results = json!({
        "host": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
        "idle_targets": {
            "iterations": args.iterations,
            "trap_ns": idle.trap_ns.round(),
            "hypercall_ns": idle.hypercall_ns.round(),
            "ratio_vs_trap": idle.hypercall_ns / idle.trap_ns,
            "target_ratio": 1.1,
            "kicks_per_targeted_vcpu": idle.kicks as f64 / idle.targets.max(1) as f64,
        },
        "running_targets": running,
    });
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{results:#}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, latency_svg(&results))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{results:#}");
    } else {
        print!("{}", table(&results));
    }
    Ok(ExitCode::SUCCESS)
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
    let _ = writeln!(
        out,
        "running  trap_ns  hypercall_ns  kick_and_wait_ns  kicks/call"
    );
    for row in r["running_targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>7}  {:>7}  {:>12}  {:>16}  {:>10.2}",
            row["running_targets"],
            row["trap_ns"],
            row["hypercall_ns"],
            row["kick_and_wait_ns"],
            row["kicks_per_call"].as_f64().unwrap_or(0.0)
        );
    }
    out
}

/// A small line chart: per-call hypercall latency (µs) against running
/// targets, with the same run's trap baseline.
fn latency_svg(r: &Value) -> String {
    let rows: Vec<(f64, f64, f64)> = r["running_targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row["running_targets"].as_f64().unwrap_or(0.0),
                row["hypercall_ns"].as_f64().unwrap_or(0.0) / 1000.0,
                row["trap_ns"].as_f64().unwrap_or(0.0) / 1000.0,
            )
        })
        .collect();
    let (w, h, pad) = (640.0, 400.0, 60.0);
    let max_x = rows.iter().map(|r| r.0).fold(1.0, f64::max);
    let max_y = rows.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max) * 1.1;
    let x = |v: f64| pad + v / max_x * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / max_y * (h - 2.0 * pad);
    let line = |pick: fn(&(f64, f64, f64)) -> f64| {
        rows.iter()
            .map(|r| format!("{:.1},{:.1}", x(r.0), y(pick(r))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">Flush hypercall latency vs running targets (hvflush-vmm bench)</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">running targets</text>\n\
         <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">µs per call</text>\n",
        w / 2.0,
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        w / 2.0,
        h - 15.0,
        h / 2.0,
        h / 2.0
    );
    for i in 0..=4 {
        let v = max_y * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            pad - 5.0,
            y(v) + 4.0
        );
    }
    for r in &rows {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(r.0),
            h - pad + 15.0,
            r.0
        );
    }
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#c03\" stroke-width=\"2\" points=\"{}\"/>",
        line(|r| r.1)
    );
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"2\" stroke-dasharray=\"5,4\" points=\"{}\"/>",
        line(|r| r.2)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" fill=\"#c03\">flush hypercall</text>\n<text x=\"{}\" y=\"{}\" fill=\"#36c\">bare trap (same run)</text>\n</svg>",
        w - pad - 150.0,
        pad + 10.0,
        w - pad - 150.0,
        pad + 26.0
    );
    svg
}
