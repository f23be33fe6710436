//! Per-path L1/L2 counts of KVM's in-kernel Hyper-V flushes from the
//! `kvm:kvm_hv_flush_tlb` and `kvm:kvm_hv_flush_tlb_ex` tracepoints
//! (arch/x86/kvm/trace.h; the line ends in "(L2)" when the caller was in
//! guest mode), in a private trace instance following this VM's vCPU
//! threads.
//!
//! Where tracefs is not mounted or not writable this is unavailable: a
//! stated limitation ([`TraceError::Unavailable`]), not a VM error.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where tracefs is usually mounted.
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const EVENTS: [&str; 2] = ["kvm_hv_flush_tlb", "kvm_hv_flush_tlb_ex"];
/// Largest trace text read at once; the instance buffer is smaller.
const MAX_TRACE_BYTES: u64 = 64 << 20;

/// Errors of the tracepoint counter.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// No usable tracefs with the KVM Hyper-V flush events.
    #[error(
        "Per-path L1/L2 flush counts unavailable: tracefs with kvm:kvm_hv_flush_tlb is not mounted or not writable"
    )]
    Unavailable,
    /// A tracefs file could not be written or read.
    #[error("Tracefs access to {path} failed")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Flush hypercalls KVM handled, per call family and caller level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HvFlushCounts {
    /// Non-Ex calls from L1.
    pub l1: u64,
    /// Non-Ex calls from L2 (direct flush).
    pub l2: u64,
    /// Ex calls from L1.
    pub l1_ex: u64,
    /// Ex calls from L2.
    pub l2_ex: u64,
}

/// Counts flush events in trace text, only for the threads in `tids`.
pub fn count_flush_events(text: &str, tids: &HashSet<u32>) -> HvFlushCounts {
    let mut c = HvFlushCounts::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (ex, rest) = if let Some(i) = line.find(" kvm_hv_flush_tlb_ex: ") {
            (true, &line[i..])
        } else if let Some(i) = line.find(" kvm_hv_flush_tlb: ") {
            (false, &line[i..])
        } else {
            continue;
        };
        // "<comm>-<tid> [cpu] ...": comm may contain spaces and dashes, the
        // tid is after the last dash before the " [" of the CPU column.
        let Some(task_end) = line.find(" [") else {
            continue;
        };
        let task = line[..task_end].trim();
        let Some(tid) = task.rsplit('-').next().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        if !tids.contains(&tid) {
            continue;
        }
        let l2 = rest.trim_end().ends_with("(L2)");
        match (ex, l2) {
            (false, false) => c.l1 += 1,
            (false, true) => c.l2 += 1,
            (true, false) => c.l1_ex += 1,
            (true, true) => c.l2_ex += 1,
        }
    }
    c
}

/// A private trace instance counting this VM's flush events.
#[derive(Debug)]
pub struct HvFlushTrace {
    instance: PathBuf,
    tids: HashSet<u32>,
}

fn write(path: &Path, text: &str) -> Result<(), TraceError> {
    fs::write(path, text).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl HvFlushTrace {
    /// Starts counting for the vCPU threads `tids`, in a trace instance
    /// named `name` under the first usable tracefs root.
    pub fn start(name: &str, tids: &[u32]) -> Result<Self, TraceError> {
        let root = TRACEFS_ROOTS
            .iter()
            .map(Path::new)
            .find(|r| r.join("events/kvm/kvm_hv_flush_tlb").is_dir())
            .ok_or(TraceError::Unavailable)?;
        Self::start_in(root, name, tids)
    }

    /// As [`start`](Self::start), under a given tracefs root.
    pub fn start_in(root: &Path, name: &str, tids: &[u32]) -> Result<Self, TraceError> {
        let instance = root.join("instances").join(name);
        if fs::create_dir(&instance).is_err() && !instance.is_dir() {
            return Err(TraceError::Unavailable);
        }
        let me = Self {
            instance,
            tids: tids.iter().copied().collect(),
        };
        let pids: Vec<String> = tids.iter().map(u32::to_string).collect();
        write(&me.instance.join("set_event_pid"), &pids.join(" "))?;
        for event in EVENTS {
            write(
                &me.instance.join("events/kvm").join(event).join("enable"),
                "1",
            )?;
        }
        Ok(me)
    }

    /// The counts so far.
    pub fn counts(&self) -> Result<HvFlushCounts, TraceError> {
        let path = self.instance.join("trace");
        let mut text = String::new();
        fs::File::open(&path)
            .and_then(|f| f.take(MAX_TRACE_BYTES).read_to_string(&mut text))
            .map_err(|source| TraceError::Io { path, source })?;
        Ok(count_flush_events(&text, &self.tids))
    }
}

impl Drop for HvFlushTrace {
    fn drop(&mut self) {
        for event in EVENTS {
            let _ = fs::write(
                self.instance.join("events/kvm").join(event).join("enable"),
                "0",
            );
        }
        // tracefs removes an instance directory with everything in it.
        let _ = fs::remove_dir(&self.instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# tracer: nop
 CPU 0/KVM-4242    [001] ..... 10.000001: kvm_hv_flush_tlb: processor_mask 0x3 address_space 0x0 flags 0x1 
 CPU 0/KVM-4242    [001] ..... 10.000002: kvm_hv_flush_tlb: processor_mask 0x3 address_space 0x0 flags 0x1 (L2)
 CPU 1/KVM-4243    [000] ..... 10.000003: kvm_hv_flush_tlb_ex: valid_bank_mask 0x1 format 0x0 address_space 0x0 flags 0x0 
 CPU 1/KVM-4243    [000] ..... 10.000004: kvm_hv_flush_tlb_ex: valid_bank_mask 0x1 format 0x0 address_space 0x0 flags 0x0 (L2)
 CPU 1/KVM-4243    [000] ..... 10.000005: kvm_hv_flush_tlb_ex: valid_bank_mask 0x1 format 0x0 address_space 0x0 flags 0x0 (L2)
 other-9999        [000] ..... 10.000006: kvm_hv_flush_tlb: processor_mask 0x3 address_space 0x0 flags 0x1 
 CPU 0/KVM-4242    [001] ..... 10.000007: kvm_pv_tlb_flush: vcpu 0 need_flush_tlb true
";

    #[test]
    fn counts_per_path_and_level_for_own_threads_only() {
        let tids = [4242, 4243].into_iter().collect();
        let c = count_flush_events(SAMPLE, &tids);
        assert_eq!(
            c,
            HvFlushCounts {
                l1: 1,
                l2: 1,
                l1_ex: 1,
                l2_ex: 2
            }
        );
    }

    #[test]
    fn live_instance_counts_nothing_and_is_removed() {
        // SAFETY: gettid has no preconditions.
        let tid = u32::try_from(unsafe { libc::gettid() }).unwrap();
        let name = format!("hvflush-test-{}", std::process::id());
        let trace = match HvFlushTrace::start(&name, &[tid]) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        assert_eq!(trace.counts().unwrap(), HvFlushCounts::default());
        let dir = trace.instance.clone();
        drop(trace);
        assert!(!dir.exists(), "instance removed");
    }

    #[test]
    fn absent_tracefs_is_unavailable() {
        let dir = std::env::temp_dir().join(format!("hvflush-notracefs-{}", std::process::id()));
        let r = HvFlushTrace::start_in(&dir.join("missing"), "x", &[1]);
        assert!(matches!(r, Err(TraceError::Unavailable)));
    }
}
