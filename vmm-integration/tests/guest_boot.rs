//! Boots the built-in `abi-selftest` workload on real /dev/kvm with a minimal,
//! test-only runner (no Hyper-V, no hypercalls), proving the guest ABI start
//! state of `docs/guest-abi.md` independently of the hypercall path.
#![cfg(feature = "kvm")]

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vmm_integration::guest::layout::{CONSOLE_PORT, EXIT_PORT, MIN_MEMORY_SIZE};
use vmm_integration::guest::{
    ControlBlock, GuestLayout, Workload, configure_vcpu, create_guest_memory, image, load_image,
    register_guest_memory, setup_memory, write_control_page,
};

/// Generous: guest instructions are emulated on our hosts (FINDINGS §1), and
/// other jobs share the machine. Only a hang should ever hit it.
const TIMEOUT: Duration = Duration::from_secs(120);

/// How one vCPU ended.
#[derive(Debug)]
struct VcpuEnd {
    index: u32,
    /// The value written to the exit port, or a description of the unexpected exit.
    result: Result<u32, String>,
    console: String,
}

fn kvm_or_skip() -> Option<Kvm> {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent");
        return None;
    }
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            eprintln!("skipped: cannot open /dev/kvm: {e}");
            None
        }
    }
}

/// Runs one vCPU until it writes the exit port or exits unexpectedly.
fn run_vcpu(mut vcpu: VcpuFd, index: u32) -> VcpuEnd {
    let mut console = Vec::new();
    let result = loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(CONSOLE_PORT, data)) => console.extend_from_slice(data),
            Ok(VcpuExit::IoOut(EXIT_PORT, data)) => match <[u8; 4]>::try_from(data) {
                Ok(bytes) => break Ok(u32::from_le_bytes(bytes)),
                Err(_) => break Err(format!("exit port written with {} bytes", data.len())),
            },
            Ok(other) => {
                let exit = format!("{other:?}");
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                break Err(format!("unexpected exit {exit} at RIP {rip:#x}"));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => break Err(format!("KVM_RUN failed: {e}")),
        }
    };
    VcpuEnd {
        index,
        result,
        console: String::from_utf8_lossy(&console).into_owned(),
    }
}

/// Boots `workload` on `vcpus` vCPUs and returns how each vCPU ended, by index.
fn boot(kvm: &Kvm, workload: Workload, vcpus: u32, memory: u64) -> Vec<VcpuEnd> {
    let layout = GuestLayout::new(memory, vcpus).unwrap();
    let vm = kvm.create_vm().unwrap();
    // With an in-kernel irqchip, APs wait for INIT/SIPI unless made RUNNABLE
    // (configure_vcpu does that; FINDINGS §1).
    vm.create_irq_chip().unwrap();
    let mem = create_guest_memory(&layout).unwrap();
    setup_memory(&mem, &layout).unwrap();
    load_image(&mem, &layout, image(workload)).unwrap();
    write_control_page(&mem, &ControlBlock::default()).unwrap();
    // SAFETY: `mem` is kept alive (or leaked on timeout) until the VM is gone.
    unsafe { register_guest_memory(&vm, &mem) }.unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();

    let (tx, rx) = mpsc::channel();
    for index in 0..vcpus {
        let vcpu = vm.create_vcpu(u64::from(index)).unwrap();
        vcpu.set_cpuid2(&cpuid).unwrap();
        configure_vcpu(&vcpu, &layout, index).unwrap();
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send(run_vcpu(vcpu, index));
        });
    }
    drop(tx);

    let mut ends = Vec::new();
    for _ in 0..vcpus {
        match rx.recv_timeout(TIMEOUT) {
            Ok(end) => ends.push(end),
            Err(e) => {
                // vCPU threads may still be inside KVM_RUN: never unmap their RAM.
                std::mem::forget(mem);
                std::mem::forget(vm);
                panic!("{workload} on {vcpus} vCPUs: {e} after {ends:?}");
            }
        }
    }
    ends.sort_by_key(|e| e.index);
    ends
}

fn assert_all_passed(ends: &[VcpuEnd], workload: &str) {
    for end in ends {
        assert_eq!(
            end.result,
            Ok(0),
            "{workload}: vCPU {} failed; console: {:?}",
            end.index,
            end.console
        );
    }
}

#[test]
fn abi_selftest_passes_on_one_vcpu() {
    let Some(kvm) = kvm_or_skip() else { return };
    let ends = boot(&kvm, Workload::AbiSelftest, 1, MIN_MEMORY_SIZE);
    assert_all_passed(&ends, "abi-selftest");
    assert_eq!(
        ends[0].console,
        "abi_selftest: vCPU 0x0000000000000000 ok\n"
    );
}

#[test]
fn abi_selftest_passes_on_four_vcpus() {
    let Some(kvm) = kvm_or_skip() else { return };
    let ends = boot(&kvm, Workload::AbiSelftest, 4, 128 << 20);
    assert_all_passed(&ends, "abi-selftest");
    for end in &ends {
        let expected = format!("abi_selftest: vCPU {:#018x} ok\n", end.index);
        assert_eq!(end.console, expected);
    }
}

/// The same checks catch a broken start state: a wrong vCPU count in RSI must
/// fail check 2 (index >= count) on the last vCPU, proving the test can fail.
#[test]
fn abi_selftest_detects_a_wrong_start_state() {
    let Some(kvm) = kvm_or_skip() else { return };
    let layout = GuestLayout::new(MIN_MEMORY_SIZE, 2).unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let mem = create_guest_memory(&layout).unwrap();
    setup_memory(&mem, &layout).unwrap();
    load_image(&mem, &layout, image(Workload::AbiSelftest)).unwrap();
    // SAFETY: `mem` outlives the VM and the vCPU, both dropped at the end of this test.
    unsafe { register_guest_memory(&vm, &mem) }.unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let vcpu = vm.create_vcpu(1).unwrap();
    vcpu.set_cpuid2(&cpuid).unwrap();
    configure_vcpu(&vcpu, &layout, 1).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rsi = 1;
    vcpu.set_regs(&regs).unwrap();
    let end = run_vcpu(vcpu, 1);
    assert_eq!(end.result, Ok(2), "console: {:?}", end.console);
    assert!(
        end.console
            .starts_with("abi_selftest: FAIL 0x0000000000000002")
    );
}
