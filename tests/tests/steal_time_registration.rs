//! The executor's view of KVM's steal-time registration, on real KVM.
//!
//! KVM forgets the registration in `kvm_vcpu_reset()` (INIT and RESET,
//! Linux arch/x86/kvm/x86.c); a VMM that resets a vCPU writes the MSR's
//! reset value, 0, as QEMU does. Either way the executor must notice
//! before it arms a flush, and restore the registration.
#![cfg(target_os = "linux")]

use hvflush_tests::have_kvm;
use kvm_bindings::kvm_msr_entry;
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_integration::kvm::userspace::{MSR_KVM_STEAL_TIME, StealTimeRecord};

const RECORD_GPA: u64 = 0x9040;

fn write_steal_time_msr(vcpu: &VcpuFd, value: u64) {
    let msrs = kvm_bindings::Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KVM_STEAL_TIME,
        data: value,
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(vcpu.set_msrs(&msrs).unwrap(), 1);
}

#[test]
fn a_dropped_registration_is_seen_and_restored() {
    if !have_kvm() {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();

    let record = StealTimeRecord::register(&vcpu, &mem, RECORD_GPA).expect("register");
    assert!(record.is_registered(&vcpu).unwrap());
    assert!(
        !record.ensure_registered(&vcpu).unwrap(),
        "nothing to restore"
    );

    // The reset value: what a VMM's vCPU reset writes.
    write_steal_time_msr(&vcpu, 0);
    assert!(!record.is_registered(&vcpu).unwrap());
    assert!(record.ensure_registered(&vcpu).unwrap(), "restored");
    assert!(record.is_registered(&vcpu).unwrap());

    // Another record (say, restored from elsewhere) is not ours either.
    write_steal_time_msr(&vcpu, (RECORD_GPA + 64) | 1);
    assert!(!record.is_registered(&vcpu).unwrap());
    assert!(record.ensure_registered(&vcpu).unwrap());

    // Armed and not consumed (no KVM_RUN yet): still armed.
    record.arm_flush(&mem).unwrap();
    assert!(record.flush_still_armed(&mem).unwrap());
}
