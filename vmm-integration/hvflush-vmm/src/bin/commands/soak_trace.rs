//! Trace-verified windows of `hvflush-vmm soak`: for a few seconds a
//! private tracefs instance records `kvm:kvm_pv_tlb_flush` with
//! `need_flush_tlb` set for this process's vCPU threads (KVM performed the
//! flush the executor armed, Linux arch/x86/kvm/x86.c `record_steal_time`;
//! docs/host-facts.md §2), and the count is compared with the engine's
//! `flushes_executed` over the same window.
//!
//! The two are read at slightly different moments: a flush KVM performs
//! is traced during the vCPU's entry and counted after its exit, and each
//! vCPU has at most one flush armed at a time, so at each edge of the
//! window at most one flush per vCPU can be on one side only. A window
//! passes when the counts differ by at most twice the vCPU count and no
//! trace event was lost.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU ring buffer: only filtered flush events are recorded.
const BUFFER_KB: &str = "16384";
/// Largest trace text read (the buffers are smaller).
const MAX_TRACE_BYTES: u64 = 256 << 20;

/// Why a window could not be traced.
#[derive(Debug, Error)]
pub enum TraceError {
    /// No tracefs with the KVM event (not mounted, not root).
    #[error("tracefs with kvm:kvm_pv_tlb_flush is not available at {TRACEFS}")]
    Unavailable,
    /// No thread of this process is named `vcpuN`.
    #[error("No vCPU threads found in /proc/self/task")]
    NoVcpuThreads,
    /// A tracefs file could not be used.
    #[error("Tracefs access to {} failed", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One window's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Flushes the engine counted as executed during the window.
    pub executed: u64,
    /// `need_flush_tlb true` entries of the vCPU threads in the trace.
    pub traced: u64,
    /// Events the ring buffer lost.
    pub lost: u64,
    /// vCPU threads followed.
    pub vcpus: u64,
}

impl Window {
    /// Whether the counts agree within the edges' slack (module docs).
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.executed.abs_diff(self.traced) <= 2 * self.vcpus
    }
}

/// The thread ids of this process's threads named `vcpuN`.
fn vcpu_threads() -> Result<Vec<u32>, TraceError> {
    let io = |source| TraceError::Io {
        path: "/proc/self/task".into(),
        source,
    };
    let mut tids = Vec::new();
    for entry in fs::read_dir("/proc/self/task").map_err(io)? {
        let entry = entry.map_err(io)?;
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let is_vcpu = comm
            .trim()
            .strip_prefix("vcpu")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if let (true, Some(tid)) = (is_vcpu, entry.file_name().to_str()) {
            tids.extend(tid.parse::<u32>().ok());
        }
    }
    if tids.is_empty() {
        return Err(TraceError::NoVcpuThreads);
    }
    Ok(tids)
}

/// A private trace instance, removed on drop.
struct Instance {
    dir: PathBuf,
}

impl Instance {
    fn write(&self, file: &str, value: &str) -> Result<(), TraceError> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|source| TraceError::Io { path, source })
    }

    /// Occurrences of `needle` in `file`, read in fixed chunks: the soak
    /// measures this process's memory, so the trace (megabytes) must not
    /// pass through one large allocation (glibc keeps such heap pages).
    fn count(&self, file: &str, needle: &[u8]) -> Result<u64, TraceError> {
        let path = self.dir.join(file);
        let io = |source| TraceError::Io {
            path: path.clone(),
            source,
        };
        let mut reader = fs::File::open(&path).map_err(io)?.take(MAX_TRACE_BYTES);
        let mut buf = [0u8; 64 * 1024];
        // The tail of the previous chunk, where a match may have started.
        let mut kept = 0;
        let mut found = 0;
        loop {
            let n = reader.read(&mut buf[kept..]).map_err(io)?;
            if n == 0 {
                return Ok(found);
            }
            let filled = kept + n;
            found += buf[..filled]
                .windows(needle.len())
                .filter(|w| *w == needle)
                .count() as u64;
            kept = (needle.len() - 1).min(filled);
            buf.copy_within(filled - kept..filled, 0);
        }
    }

    fn lost(&self) -> Result<u64, TraceError> {
        let per_cpu = self.dir.join("per_cpu");
        let io = |source| TraceError::Io {
            path: per_cpu.clone(),
            source,
        };
        let mut lost = 0;
        for cpu in fs::read_dir(&per_cpu).map_err(io)? {
            let stats = fs::read_to_string(cpu.map_err(io)?.path().join("stats")).map_err(io)?;
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

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        let _ = self.write("events/kvm/kvm_pv_tlb_flush/enable", "0");
        // Every file of the instance is closed by now.
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Traces for `length`, calling `executed` (the engine's running total)
/// right after tracing starts and right before it stops.
pub fn window(length: Duration, executed: impl Fn() -> u64) -> Result<Window, TraceError> {
    let root = Path::new(TRACEFS);
    if !root.join("events/kvm/kvm_pv_tlb_flush").is_dir() {
        return Err(TraceError::Unavailable);
    }
    let tids = vcpu_threads()?;
    let dir = root
        .join("instances")
        .join(format!("hvflush-soak-{}", std::process::id()));
    fs::create_dir(&dir).map_err(|source| TraceError::Io {
        path: dir.clone(),
        source,
    })?;
    let inst = Instance { dir };
    inst.write("tracing_on", "0")?;
    inst.write("buffer_size_kb", BUFFER_KB)?;
    let pids: Vec<String> = tids.iter().map(u32::to_string).collect();
    inst.write("set_event_pid", &pids.join(" "))?;
    inst.write("events/kvm/kvm_pv_tlb_flush/filter", "need_flush_tlb == 1")?;
    inst.write("events/kvm/kvm_pv_tlb_flush/enable", "1")?;
    inst.write("tracing_on", "1")?;
    let before = executed();
    std::thread::sleep(length);
    let after = executed();
    inst.write("tracing_on", "0")?;
    // One event per line; the header lines name no event.
    let traced = inst.count("trace", b" kvm_pv_tlb_flush: ")?;
    Ok(Window {
        executed: after.saturating_sub(before),
        traced,
        lost: inst.lost()?,
        vcpus: tids.len() as u64,
    })
}
