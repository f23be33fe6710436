//! The kernel's own counters for this VM, for the API's `kernel` section:
//! KVM binary statistics of every vCPU (`hypercalls`, `tlb_flush`), and in
//! offload mode the L1/L2 split from the Hyper-V flush tracepoints. What
//! cannot be read is a stated limitation, never an error.

use std::sync::Mutex;

use hvflush_api::error_line;
use hvflush_api::model::KernelCounters;
use kvm_ioctls::VcpuFd;

use crate::kvm::hv_trace::HvFlushTrace;
use crate::kvm::stats::KvmStats;

/// The per-vCPU statistics files and, in offload mode, the trace instance.
pub struct KernelCounterSource {
    stats: Vec<KvmStats>,
    trace: Mutex<Option<HvFlushTrace>>,
    limitations: Mutex<Vec<String>>,
}

impl KernelCounterSource {
    /// Opens every vCPU's statistics (before the vCPUs move to their threads).
    pub fn open(vcpus: &[VcpuFd]) -> Self {
        let mut limitations = Vec::new();
        let mut stats = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            match KvmStats::for_vcpu(vcpu) {
                Ok(s) => stats.push(s),
                Err(e) => {
                    limitations.push(format!("KVM binary statistics: {}", error_line(&e)));
                    stats.clear();
                    break;
                }
            }
        }
        Self {
            stats,
            trace: Mutex::new(None),
            limitations: Mutex::new(limitations),
        }
    }

    /// Offload mode: counts the kernel's L1/L2 flush tracepoints of the
    /// vCPU threads `tids`.
    pub fn start_trace(&self, name: &str, tids: &[u32]) {
        match HvFlushTrace::start(name, tids) {
            Ok(trace) => *self.trace.lock().unwrap_or_else(|e| e.into_inner()) = Some(trace),
            Err(e) => self
                .limitations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(error_line(&e)),
        }
    }

    /// The counters now, summed over the vCPUs.
    pub fn read(&self) -> KernelCounters {
        let mut out = KernelCounters {
            limitations: self
                .limitations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            ..Default::default()
        };
        if !self.stats.is_empty() {
            // `None` as soon as one vCPU's statistic is missing or unreadable.
            let per_vcpu: Vec<_> = self
                .stats
                .iter()
                .map(|s| s.offload_counters().ok())
                .collect();
            out.hypercalls = per_vcpu.iter().map(|c| c.and_then(|c| c.hypercalls)).sum();
            out.tlb_flushes = per_vcpu.iter().map(|c| c.and_then(|c| c.tlb_flush)).sum();
        }
        let trace = self.trace.lock().unwrap_or_else(|e| e.into_inner());
        match trace.as_ref().map(HvFlushTrace::counts) {
            Some(Ok(c)) => {
                out.l1_flush_calls = Some(c.l1 + c.l1_ex);
                out.l2_flush_calls = Some(c.l2 + c.l2_ex);
            }
            Some(Err(e)) => out.limitations.push(error_line(&e)),
            None => {}
        }
        out
    }
}
