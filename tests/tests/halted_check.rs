//! The halted check of the kicks (`VcpuKickers::with_halted_check`) on real
//! KVM: off by default (no stats fd opened, never reports a target halted),
//! on when asked, and then only for a vCPU the kernel reports blocked.
#![cfg(target_os = "linux")]

use std::sync::Arc;

use hvflush_tests::have_kvm;
use kvm_ioctls::Kvm;
use vmm_integration::kvm::userspace::{
    VcpuKickers, halted_check_available, install_kick_signal_handler,
};

#[test]
fn kicks_report_halted_only_when_enabled_and_blocked() {
    if !have_kvm() {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let signal = vmm_sys_util::signal::SIGRTMIN();
    install_kick_signal_handler(signal).unwrap();
    let has_stat = halted_check_available(&vcpu);

    let plain = Arc::new(VcpuKickers::new(1, signal));
    let registration = plain.register(0, &vcpu, None).unwrap();
    assert!(!plain.reports_halted(0), "off by default");
    assert!(!plain.kick_and_check_halted(0));
    drop(registration);

    let checked = Arc::new(VcpuKickers::new(1, signal).with_halted_check());
    let registration = checked.register(0, &vcpu, None).unwrap();
    if !has_stat {
        // Before Linux 5.17: the fallback, every kicked target waited for.
        assert!(!checked.reports_halted(0));
        assert!(!checked.kick_and_check_halted(0));
        eprintln!("no vCPU `blocking` statistic: checked the fallback only");
        return;
    }
    assert!(checked.reports_halted(0));
    // This thread is the vCPU's and is not inside KVM_RUN: not blocked,
    // so the kick (delivered to this thread, a no-op handler) is waited for.
    assert!(!checked.kick_and_check_halted(0));
    drop(registration);
    assert!(!checked.reports_halted(0), "unregistered");
    assert!(!checked.kick_and_check_halted(0), "unregistered: no kick");
}
