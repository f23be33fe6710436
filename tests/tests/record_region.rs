//! Flush records at GPAs that are not RAM, through the public setup path a
//! VMM uses (`RecordRegion::new`, `KvmUserspaceFlush::setup_vm`,
//! `setup_vcpu`): each is a setup error that names the range or GPA, never
//! a record KVM writes somewhere the VMM did not mean.
#![cfg(target_os = "linux")]

use std::error::Error;
use std::sync::Arc;

use hvflush_tests::have_kvm;
use hyperv_flush::engine::{Partition, PartitionConfig};
use kvm_ioctls::Kvm;
use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_integration::kvm::userspace::{
    KvmUserspaceFlush, RecordRegion, RegionError, UserspaceError, UserspaceOptions, VcpuKickers,
    install_kick_signal_handler, region_size,
};

/// 0-640 KiB and 1-2 MiB of RAM, the PC hole between.
fn pc_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0xA_0000),
        (GuestAddress(0x10_0000), 0x10_0000),
    ])
    .unwrap()
}

fn chain(e: &dyn Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out
}

#[test]
fn a_region_that_is_not_ram_is_refused_by_name() {
    let mem = pc_memory();
    // In the hole, straddling into it, and past the end of RAM.
    for (base, named) in [
        (0xA_0000, "0xa0000-0xa0fff"),
        (0x9_F000, "0x9f000-0xa0fff"),
        (0x20_0000, "0x200000-0x200fff"),
    ] {
        let size = if base == 0x9_F000 { 0x2000 } else { 0x1000 };
        let e = RecordRegion::new(&mem, base, size, 4, &[]).unwrap_err();
        assert!(matches!(e, RegionError::NotMemory(_)), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "Flush-record region {named} is not entirely in guest memory (it must be mapped RAM the VMM reserves)"
            )
        );
    }
}

/// A region checked against one memory and handed to a VM whose memory
/// no longer has it (a VMM bug, or a hot-unplug before setup): the vCPU's
/// setup fails naming the record's GPA, before KVM is given it.
#[test]
fn a_record_outside_the_vms_memory_fails_the_vcpu_setup_by_gpa() {
    if !have_kvm() {
        return;
    }
    let big = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
    let records = RecordRegion::new(&big, 0x30_0000, region_size(1), 1, &[]).unwrap();
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let partition = Arc::new(Partition::new(PartitionConfig::new(1)).unwrap());
    let signal = vmm_sys_util::signal::SIGRTMIN();
    install_kick_signal_handler(signal).unwrap();
    let flush = KvmUserspaceFlush::setup_vm(
        &vm,
        partition,
        GuestMemoryAtomic::new(pc_memory()),
        Arc::new(VcpuKickers::new(1, signal)),
        UserspaceOptions {
            hypercall_port: 0x99,
            records,
        },
    )
    .expect("the VM-wide part does not touch the records");
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let e = match flush.setup_vcpu(&mut vcpu, 0) {
        Err(e) => e,
        Ok(_) => panic!("a record outside RAM was registered"),
    };
    assert!(matches!(e, UserspaceError::Executor(0, _)), "{e:?}");
    // Ours, then vm-memory's own words for the access that failed.
    assert_eq!(
        chain(&e)[..2],
        [
            "Cannot set up the flush executor of vCPU 0",
            "Steal-time record 0x300000 is outside guest memory",
        ]
    );
}
