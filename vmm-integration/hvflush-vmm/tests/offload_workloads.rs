//! The built-in guests with `mode=offload`, where KVM has in-kernel
//! Hyper-V (nested CI hosts usually do): every guest passes its status
//! checks and the kernel's `kvm_hv_flush_tlb(_ex)` tracepoints count the
//! flush hypercalls it made. Skips, giving the reason, on a host without
//! in-kernel Hyper-V (`hvflush_tests::Capability::KvmHyperv`).

use std::sync::Arc;
use std::time::Duration;

use hvflush_config::{FlushMode, HypervFlushConfig};
use hvflush_tests::{Capability, have_kvm, skip};
use hvflush_vmm::guest::Workload;
use hvflush_vmm::vmm::{GuestProgram, Machine, RunOptions};
use vmm_integration::kvm::hv_trace;
use vmm_integration::probe::probe_host;

/// Whether offload can run here; skips with the probe's reason when not.
fn offload_available() -> bool {
    if !have_kvm() {
        return false;
    }
    let report = probe_host(&HypervFlushConfig::default());
    if !report.in_kernel_hyperv {
        let reason = report.l1.reasons.join("; ");
        skip(
            Capability::KvmHyperv,
            &format!("no in-kernel Hyper-V flush: {reason}"),
        );
        return false;
    }
    if let Err(e) = hv_trace::HvFlushTrace::start("hvflush-offload-probe", &[]) {
        skip(Capability::Tracefs, &hvflush_api::error_line(&e));
        return false;
    }
    true
}

fn run_offload(workload: Workload, vcpus: u32) {
    let options = RunOptions {
        vcpus,
        flush: HypervFlushConfig {
            mode: FlushMode::Offload,
            ..HypervFlushConfig::default()
        },
        program: GuestProgram::Builtin(workload),
        duration: (workload == Workload::Storm).then_some(Duration::from_secs(3)),
        timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let machine = Machine::create(&options).expect("the VM is built");
    let kernel = Arc::clone(machine.kernel_counters());
    let report = machine.run().expect("the VM runs");
    assert!(report.passed(), "{workload:?}: {:?}", report.failure());
    assert_eq!(report.mode, "offload");
    // The VMM saw no hypercall: the kernel served them all.
    assert_eq!(report.counters.total_hypercalls(), 0);
    let k = kernel.read();
    let l1 = k
        .l1_flush_calls
        .unwrap_or_else(|| panic!("no tracepoint count: {:?}", k.limitations));
    // Every vCPU made at least one flush call of each kind it tests.
    assert!(
        l1 >= u64::from(vcpus),
        "{workload:?}: {l1} flush calls traced"
    );
}

#[test]
fn smoke_with_offload_is_served_by_the_kernel() {
    if offload_available() {
        run_offload(Workload::Smoke, 4);
    }
}

#[test]
fn conformance_with_offload_passes() {
    if offload_available() {
        run_offload(Workload::Conformance, 2);
    }
}

#[test]
fn storm_with_offload_runs_until_stopped() {
    if offload_available() {
        run_offload(Workload::Storm, 4);
    }
}
