//! Kicks never outlive a vCPU's registration, on real KVM: an 8-vCPU
//! storm is stopped 200 times at varying moments, so the VMM's stop kicks
//! (every vCPU, every 20 ms) and the flush path's kicks keep racing vCPU
//! threads that unregister and end. Kicks go through each vCPU's own
//! mapping of its run page and `tgkill` inside its `KickSlot`; a kick that
//! touched a dead vCPU would crash or hang this process, and a lost one
//! would leave a vCPU running past the stop (the run would time out).
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use hvflush_tests::have_kvm;
use hvflush_vmm::guest::Workload;
use hvflush_vmm::vmm::{GuestProgram, Machine, RunOptions, VcpuOutcome};

const ROUNDS: u64 = 200;
const VCPUS: u32 = 8;

#[test]
fn storms_stopped_at_any_moment_end_cleanly() {
    if !have_kvm() {
        return;
    }
    let options = RunOptions {
        vcpus: VCPUS,
        program: GuestProgram::Builtin(Workload::Storm),
        echo_console: false,
        timeout: Duration::from_secs(30),
        ..RunOptions::default()
    };
    let mut kicks = 0;
    for round in 0..ROUNDS {
        let machine = Machine::create(&options).expect("the VM builds");
        let stop = AtomicBool::new(false);
        // 0-39 ms: before, during and after the vCPUs come up and storm.
        let delay = Duration::from_millis(round * 7 % 40);
        let report = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(delay);
                stop.store(true, SeqCst);
            });
            machine.run_until(&stop).expect("the VM runs")
        });
        assert_eq!(
            report.stop_reason.as_deref(),
            Some("stopped by signal"),
            "round {round}: {:?}",
            report.failure()
        );
        for (vcpu, outcome) in report.outcomes.iter().enumerate() {
            assert!(
                matches!(outcome, VcpuOutcome::Stopped | VcpuOutcome::Passed),
                "round {round}: vCPU {vcpu} ended {outcome:?}"
            );
        }
        let c = &report.counters;
        assert_eq!(c.unresponsive_vcpus, 0, "round {round}");
        assert!(c.flushes_executed <= c.flushes_taken, "round {round}");
        kicks += c.kicks;
    }
    eprintln!("{ROUNDS} stops of an {VCPUS}-vCPU storm, {kicks} flush kicks");
}
