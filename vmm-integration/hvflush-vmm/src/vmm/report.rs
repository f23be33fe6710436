//! The result of a run: per-vCPU outcomes, the engine's counters and the
//! bench markers, as a human table or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hyperv_flush::abi::HvStatus;
use hyperv_flush::engine::{CountersSnapshot, HypercallKind};
use serde_json::{Value, json};
use vmm_integration::service::engine_counters;

/// How one vCPU ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuOutcome {
    /// Wrote 0 to the exit port.
    Passed,
    /// Wrote a failure code to the exit port.
    Failed(u32),
    /// Stopped by the VMM (timeout or signal) before it finished.
    Stopped,
    /// An unexpected exit or error.
    Error(String),
}

impl VcpuOutcome {
    /// The outcome of an exit-port value: 0 passes, anything else is its failure code.
    pub fn from_exit_code(code: u32) -> Self {
        match code {
            0 => VcpuOutcome::Passed,
            code => VcpuOutcome::Failed(code),
        }
    }
}

/// A bench marker: vCPU, value, time since the run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// vCPU that wrote it.
    pub vcpu: usize,
    /// The 32-bit value written to port 0xF6.
    pub value: u32,
    /// When, since the vCPUs started.
    pub at: Duration,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Workload or image name.
    pub program: String,
    /// Flush path serving L1 ("userspace", "offload", "off").
    pub mode: String,
    /// Per-vCPU outcomes, by index.
    pub outcomes: Vec<VcpuOutcome>,
    /// Last console lines per vCPU.
    pub console: Vec<Vec<String>>,
    /// The engine's counters at the end.
    pub counters: CountersSnapshot,
    /// Bench markers in the order they were written.
    pub markers: Vec<Marker>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Why the run was stopped early, if it was.
    pub stop_reason: Option<String>,
    /// Where the run's snapshot was written (`RunOptions::snapshot`): the
    /// vCPUs were stopped for it, and `restore` goes on from there.
    pub snapshot: Option<std::path::PathBuf>,
}

impl RunReport {
    /// Passed only if every vCPU wrote 0 and nothing stopped the run, or
    /// the run ended in a snapshot with no vCPU failed.
    pub fn passed(&self) -> bool {
        let done = |o: &VcpuOutcome| match self.snapshot {
            Some(_) => matches!(o, VcpuOutcome::Passed | VcpuOutcome::Stopped),
            None => *o == VcpuOutcome::Passed,
        };
        self.stop_reason.is_none() && self.outcomes.iter().all(done)
    }

    /// The first failure, in words naming the vCPU and cause.
    pub fn failure(&self) -> Option<String> {
        if let Some(reason) = &self.stop_reason {
            return Some(reason.clone());
        }
        self.outcomes.iter().enumerate().find_map(|(i, o)| match o {
            VcpuOutcome::Passed => None,
            VcpuOutcome::Failed(code) => Some(format!("vCPU {i} failed with code {code}")),
            VcpuOutcome::Stopped => Some(format!("vCPU {i} was stopped")),
            VcpuOutcome::Error(e) => Some(format!("vCPU {i}: {e}")),
        })
    }

    fn by_call(&self) -> BTreeMap<String, u64> {
        HypercallKind::all()
            .map(|p| {
                (
                    format!("{}-{}", p.call_name(), p.input.name()),
                    self.counters.path(p),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn by_status(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = HvStatus::ALL
            .iter()
            .map(|s| (s.name().to_string(), self.counters.with_status(*s)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let other = self.counters.other_statuses();
        if other > 0 {
            map.insert("other".into(), other);
        }
        map
    }

    /// The `--json` object.
    pub fn to_json(&self) -> Value {
        let c = &self.counters;
        let outcomes: Vec<Value> = self
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| match o {
                VcpuOutcome::Passed => json!({"vcpu": i, "result": "passed"}),
                VcpuOutcome::Failed(code) => json!({"vcpu": i, "result": "failed", "code": code}),
                VcpuOutcome::Stopped => json!({"vcpu": i, "result": "stopped"}),
                VcpuOutcome::Error(e) => json!({"vcpu": i, "result": "error", "error": e}),
            })
            .collect();
        json!({
            "passed": self.passed(),
            "snapshot": self.snapshot,
            "failure": self.failure(),
            "program": self.program,
            "mode": self.mode,
            "vcpus": self.outcomes.len(),
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "hypercalls": {
                "total": c.total_hypercalls(),
                "by_call": self.by_call(),
                "by_status": self.by_status(),
                "latency_p50_ns": c.latency_p50_ns,
                "latency_p99_ns": c.latency_p99_ns,
            },
            // The REST API's counter set, under the same names.
            "counters": engine_counters(c),
            "vcpu_results": outcomes,
        })
    }

    /// The human summary table.
    pub fn to_table(&self) -> String {
        let c = &self.counters;
        let mut out = String::new();
        let verdict = match (self.passed(), &self.snapshot) {
            (true, Some(_)) => "SNAPSHOT",
            (true, None) => "PASSED",
            (false, _) => "FAILED",
        };
        let _ = writeln!(
            out,
            "{verdict}: {} on {} vCPUs ({} path) in {:.2?}",
            self.program,
            self.outcomes.len(),
            self.mode,
            self.elapsed
        );
        if let Some(f) = self.failure() {
            let _ = writeln!(out, "  cause: {f}");
        }
        let _ = writeln!(out, "  {:<28} {:>10}", "hypercalls", c.total_hypercalls());
        for (name, n) in self.by_call() {
            let _ = writeln!(out, "    {name:<26} {n:>10}");
        }
        for (name, n) in self.by_status() {
            let _ = writeln!(out, "    status {name:<19} {n:>10}");
        }
        for (_, name, n) in engine_counters(c).values() {
            let _ = writeln!(out, "  {name:<28} {n:>10}");
        }
        if let (Some(p50), Some(p99)) = (c.latency_p50_ns, c.latency_p99_ns) {
            let _ = writeln!(
                out,
                "  {:<28} {:>7} ns / {} ns",
                "latency p50 / p99", p50, p99
            );
        }
        out
    }
}
