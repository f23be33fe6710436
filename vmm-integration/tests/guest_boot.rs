//! Boots the built-in guest workloads on real /dev/kvm with a minimal,
//! test-only runner.
//!
//! `abi-selftest` runs with no Hyper-V at all, proving the start state of
//! `docs/guest-abi.md` independently of the hypercall path. The other
//! workloads run against a bare-bones Hyper-V stand-in built here (CPUID
//! leaves, the three MSRs through user-space MSR exits, a hypercall page that
//! traps with port I/O, and the `hyperv-flush` engine deciding every status),
//! so their status expectations are checked against the engine. It never
//! marks vCPUs as running, so no flush is kicked or executed: flushing itself
//! is the reference VMM's job and is verified there with KVM tracepoints.
#![cfg(feature = "kvm")]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use hyperv_flush::decode::{HypercallRegisters, Offer};
use hyperv_flush::engine::{Level, Partition, PartitionConfig, VcpuKicker};
use kvm_bindings::{
    KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES, KVM_MSR_EXIT_REASON_UNKNOWN,
    kvm_cpuid_entry2, kvm_enable_cap, kvm_regs,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_integration::guest::layout::{
    BENCH_STUB_GPA, CONSOLE_PORT, EXIT_PORT, MARKER_PORT, MIN_MEMORY_SIZE, marker,
};
use vmm_integration::guest::{
    ControlBlock, GuestLayout, Workload, configure_vcpu, create_guest_memory, image, load_image,
    register_guest_memory, request_stop, setup_memory, write_control_page,
};
use vmm_integration::kvm::userspace::{
    CallerMode, HypercallGate, hypercall_gate, inject_invalid_opcode,
};

/// Generous: guest instructions are emulated on our hosts (docs/host-facts.md §1), and
/// other jobs share the machine. Only a hang should ever hit it.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Port the stand-in's hypercall page traps to (`out 0x6b, al; ret`).
const HYPERCALL_PORT: u8 = 0x6b;
/// Port of the bench's trap-only stub.
const TRAP_PORT: u8 = 0x6c;
const MSR_GUEST_OS_ID: u32 = 0x4000_0000;
const MSR_HYPERCALL: u32 = 0x4000_0001;
const MSR_VP_INDEX: u32 = 0x4000_0002;

/// How one vCPU ended.
#[derive(Debug)]
struct VcpuEnd {
    index: u32,
    /// The value written to the exit port, or a description of the unexpected exit.
    result: Result<u32, String>,
    console: String,
}

/// When the runner sets the control page's `stop` word.
#[derive(Clone, Copy, PartialEq)]
enum StopWhen {
    Never,
    /// Once every vCPU has made a hypercall (storm).
    EveryVcpuCalled,
    /// Once vCPU 0 has ended (bench: releases the running targets).
    Vcpu0Ended,
}

struct RunConfig {
    workload: Workload,
    vcpus: u32,
    memory: u64,
    /// Offer Hyper-V (CPUID, MSRs, hypercalls); off for abi-selftest.
    hyperv: bool,
    /// VP index = vCPU index × stride.
    vp_stride: u32,
    /// What the partition offers beyond remote flush (CPUID and engine agree).
    offer: Offer,
    control: ControlBlock,
    stop: StopWhen,
    /// Panic at the first failed vCPU (others may wait for it forever).
    stop_on_failure: bool,
    /// Changes a vCPU's start registers after `configure_vcpu` (negative tests).
    adjust: Option<fn(u32, &mut kvm_regs)>,
}

impl RunConfig {
    fn new(workload: Workload, vcpus: u32) -> Self {
        Self {
            workload,
            vcpus,
            memory: MIN_MEMORY_SIZE,
            hyperv: workload != Workload::AbiSelftest,
            vp_stride: 1,
            offer: Offer::default(),
            control: ControlBlock::default(),
            stop: StopWhen::Never,
            stop_on_failure: true,
            adjust: None,
        }
    }
}

/// State the vCPU threads share.
struct Shared {
    mem: GuestMemoryMmap,
    partition: Partition,
    guest_os_id: AtomicU64,
    hypercall_msr: AtomicU64,
    hypercalls: Vec<AtomicU64>,
    trap_exits: AtomicU64,
    markers: Mutex<Vec<u32>>,
}

struct RunResult {
    ends: Vec<VcpuEnd>,
    markers: Vec<u32>,
    trap_exits: u64,
    hypercalls: u64,
}

/// The engine never kicks here: no vCPU is ever marked as running.
struct NoKicks;

impl VcpuKicker for NoKicks {
    fn kick(&self, _vcpu: usize) {}
}

/// Hypercall registers read once per exit; XMM fetched only for fast calls.
struct ExitRegisters<'a> {
    regs: kvm_regs,
    vcpu: &'a VcpuFd,
}

impl HypercallRegisters for ExitRegisters<'_> {
    fn control(&self) -> u64 {
        self.regs.rcx
    }
    fn input(&self) -> u64 {
        self.regs.rdx
    }
    fn output(&self) -> u64 {
        self.regs.r8
    }
    fn xmm(&mut self) -> [u128; 6] {
        let fpu = self.vcpu.get_fpu().expect("KVM_GET_FPU");
        std::array::from_fn(|i| u128::from_le_bytes(fpu.xmm[i]))
    }
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

/// Hyper-V leaves as a Linux guest wants them (docs/host-facts.md §3-4), replacing KVM's own.
fn hyperv_leaves(offer: &Offer) -> Vec<kvm_cpuid_entry2> {
    let sig = |s: &[u8; 4]| u32::from_le_bytes(*s);
    let leaf = |function, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    vec![
        leaf(
            0x4000_0000,
            0x4000_0005,
            sig(b"Micr"),
            sig(b"osof"),
            sig(b"t Hv"),
        ),
        leaf(0x4000_0001, sig(b"Hv#1"), 0, 0, 0),
        // EAX: hypercall MSR (5), VP index (6). EDX: XMM fast input (4), extended GVA ranges (14).
        leaf(
            0x4000_0003,
            1 << 5 | 1 << 6,
            0,
            0,
            u32::from(offer.xmm_input) << 4 | 1 << 14,
        ),
        // EAX: remote TLB flush (2), Ex processor masks (11).
        leaf(
            0x4000_0004,
            1 << 2 | u32::from(offer.ex_masks) << 11,
            0,
            0,
            0,
        ),
        leaf(0x4000_0005, 0, 0, 0, 0),
    ]
}

/// Serves an MSR exit: the three Hyper-V MSRs; anything else is #GP.
fn msr_read(shared: &Shared, index: u32, msr: u32) -> Option<u64> {
    match msr {
        MSR_GUEST_OS_ID => Some(shared.guest_os_id.load(Ordering::SeqCst)),
        MSR_HYPERCALL => Some(shared.hypercall_msr.load(Ordering::SeqCst)),
        MSR_VP_INDEX => shared.partition.vp_index(index as usize).map(u64::from),
        _ => None,
    }
}

fn msr_write(shared: &Shared, msr: u32, value: u64) -> bool {
    match msr {
        MSR_GUEST_OS_ID => {
            shared.guest_os_id.store(value, Ordering::SeqCst);
            // A zero guest OS ID disables the hypercall page (KVM).
            if value == 0 {
                shared.hypercall_msr.fetch_and(!1, Ordering::SeqCst);
            }
        }
        MSR_HYPERCALL => {
            // Like KVM: enabling is ignored while GUEST_OS_ID is 0.
            let enable = value & 1 != 0 && shared.guest_os_id.load(Ordering::SeqCst) != 0;
            if enable {
                let stub = [0xe6, HYPERCALL_PORT, 0xc3]; // out imm8, al; ret
                if shared
                    .mem
                    .write_slice(&stub, GuestAddress(value & !0xfff))
                    .is_err()
                {
                    return false;
                }
            }
            let stored = if enable { value } else { value & !1 };
            shared.hypercall_msr.store(stored, Ordering::SeqCst);
        }
        _ => return false,
    }
    true
}

/// Runs one vCPU until it writes the exit port or exits unexpectedly.
fn run_vcpu(mut vcpu: VcpuFd, index: u32, shared: &Shared) -> VcpuEnd {
    let mut console = Vec::new();
    let result = loop {
        let hypercall = match vcpu.run() {
            Ok(VcpuExit::IoOut(CONSOLE_PORT, data)) => {
                console.extend_from_slice(data);
                false
            }
            Ok(VcpuExit::IoOut(EXIT_PORT, data)) => match <[u8; 4]>::try_from(data) {
                Ok(bytes) => break Ok(u32::from_le_bytes(bytes)),
                Err(_) => break Err(format!("exit port written with {} bytes", data.len())),
            },
            Ok(VcpuExit::IoOut(MARKER_PORT, data)) => match <[u8; 4]>::try_from(data) {
                Ok(bytes) => {
                    shared
                        .markers
                        .lock()
                        .unwrap()
                        .push(u32::from_le_bytes(bytes));
                    false
                }
                Err(_) => break Err(format!("marker port written with {} bytes", data.len())),
            },
            Ok(VcpuExit::IoOut(port, _)) if port == u16::from(TRAP_PORT) => {
                shared.trap_exits.fetch_add(1, Ordering::SeqCst);
                false
            }
            Ok(VcpuExit::IoOut(port, _)) if port == u16::from(HYPERCALL_PORT) => true,
            Ok(VcpuExit::X86Rdmsr(exit)) => {
                match msr_read(shared, index, exit.index) {
                    Some(value) => *exit.data = value,
                    None => *exit.error = 1,
                }
                false
            }
            Ok(VcpuExit::X86Wrmsr(exit)) => {
                if !msr_write(shared, exit.index, exit.data) {
                    *exit.error = 1;
                }
                false
            }
            Ok(other) => {
                let exit = format!("{other:?}");
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                break Err(format!("unexpected exit {exit} at RIP {rip:#x}"));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => false,
            Err(e) => break Err(format!("KVM_RUN failed: {e}")),
        };
        if hypercall {
            // The same gates as the component's port path (R35, R36).
            let sregs = vcpu.get_sregs().unwrap();
            let rflags = vcpu.get_regs().unwrap().rflags;
            let os_id = shared.guest_os_id.load(Ordering::SeqCst);
            match hypercall_gate(CallerMode::from_sregs(&sregs, rflags), os_id) {
                HypercallGate::Serve => {}
                HypercallGate::NotHyperV { rax } => {
                    let mut regs = vcpu.get_regs().unwrap();
                    regs.rax = rax;
                    vcpu.set_regs(&regs).unwrap();
                    continue;
                }
                HypercallGate::InvalidOpcode => {
                    inject_invalid_opcode(&vcpu, &shared.mem, u16::from(HYPERCALL_PORT)).unwrap();
                    continue;
                }
            }
            shared.hypercalls[index as usize].fetch_add(1, Ordering::SeqCst);
            let mut regs = ExitRegisters {
                regs: vcpu.get_regs().unwrap(),
                vcpu: &vcpu,
            };
            let outcome = shared
                .partition
                .handle_hypercall(index as usize, Level::L1, &mut regs, &shared.mem, &NoKicks)
                .unwrap();
            let mut regs = regs.regs;
            regs.rax = outcome.result;
            vcpu.set_regs(&regs).unwrap();
        }
    };
    VcpuEnd {
        index,
        result,
        console: String::from_utf8_lossy(&console).into_owned(),
    }
}

/// Boots the configured workload and returns how each vCPU ended, by index.
fn boot(kvm: &Kvm, config: &RunConfig) -> RunResult {
    let vcpus = config.vcpus;
    let layout = GuestLayout::new(config.memory, vcpus).unwrap();
    let vm = kvm.create_vm().unwrap();
    // With an in-kernel irqchip, APs wait for INIT/SIPI unless made RUNNABLE
    // (configure_vcpu does that; docs/host-facts.md §1).
    vm.create_irq_chip().unwrap();
    let mem = create_guest_memory(&layout).unwrap();
    setup_memory(&mem, &layout).unwrap();
    load_image(&mem, &layout, image(config.workload)).unwrap();
    let trap_stub = [0xe6, TRAP_PORT, 0xc3]; // out imm8, al; ret
    mem.write_slice(&trap_stub, GuestAddress(BENCH_STUB_GPA))
        .unwrap();
    write_control_page(&mem, &config.control).unwrap();
    let partition = Partition::new(PartitionConfig {
        offer: config.offer,
        ..PartitionConfig::new(vcpus as usize)
    })
    .unwrap();
    for i in 0..vcpus {
        partition
            .set_vp_index(i as usize, i * config.vp_stride)
            .unwrap();
    }
    let shared = Arc::new(Shared {
        mem,
        partition,
        guest_os_id: AtomicU64::new(0),
        hypercall_msr: AtomicU64::new(0),
        hypercalls: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
        trap_exits: AtomicU64::new(0),
        markers: Mutex::new(Vec::new()),
    });
    // SAFETY: `shared` (and with it the memory) is kept alive, or leaked on
    // timeout, for as long as the VM exists.
    unsafe { register_guest_memory(&vm, &shared.mem) }.unwrap();

    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    if config.hyperv {
        cpuid.retain(|e| !(0x4000_0000..0x4000_0100).contains(&e.function));
        for leaf in hyperv_leaves(&config.offer) {
            cpuid.push(leaf).unwrap();
        }
        let cap = kvm_enable_cap {
            cap: KVM_CAP_X86_USER_SPACE_MSR,
            args: [u64::from(KVM_MSR_EXIT_REASON_UNKNOWN), 0, 0, 0],
            ..Default::default()
        };
        vm.enable_cap(&cap).unwrap();
    }

    let (tx, rx) = mpsc::channel();
    for index in 0..vcpus {
        let vcpu = vm.create_vcpu(u64::from(index)).unwrap();
        vcpu.set_cpuid2(&cpuid).unwrap();
        configure_vcpu(&vcpu, &layout, index).unwrap();
        if let Some(adjust) = config.adjust {
            let mut regs = vcpu.get_regs().unwrap();
            adjust(index, &mut regs);
            vcpu.set_regs(&regs).unwrap();
        }
        let tx = tx.clone();
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            let _ = tx.send(run_vcpu(vcpu, index, &shared));
        });
    }
    drop(tx);

    let mut ends: Vec<VcpuEnd> = Vec::new();
    let mut stopped = false;
    let poll = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while ends.len() < vcpus as usize {
        let stop_now = match config.stop {
            StopWhen::Never => false,
            StopWhen::EveryVcpuCalled => shared
                .hypercalls
                .iter()
                .all(|c| c.load(Ordering::SeqCst) > 0),
            StopWhen::Vcpu0Ended => ends.iter().any(|e| e.index == 0),
        };
        if stop_now && !stopped {
            request_stop(&shared.mem).unwrap();
            stopped = true;
        }
        let received = rx.recv_timeout(poll);
        let failed = matches!(&received, Ok(end) if end.result != Ok(0) && config.stop_on_failure);
        match received {
            Ok(end) => ends.push(end),
            Err(mpsc::RecvTimeoutError::Timeout) if waited < TIMEOUT => waited += poll,
            Err(e) => {
                // vCPU threads may still be inside KVM_RUN: never unmap their RAM.
                std::mem::forget(shared);
                std::mem::forget(vm);
                panic!("{} on {vcpus} vCPUs: {e} after {ends:?}", config.workload);
            }
        }
        if failed {
            // The others may wait for the failed vCPU forever (barriers).
            std::mem::forget(shared);
            std::mem::forget(vm);
            panic!("{} on {vcpus} vCPUs failed: {ends:?}", config.workload);
        }
    }
    ends.sort_by_key(|e| e.index);
    let markers = shared.markers.lock().unwrap().clone();
    RunResult {
        ends,
        markers,
        trap_exits: shared.trap_exits.load(Ordering::SeqCst),
        hypercalls: shared.partition.counters().hypercalls.iter().sum(),
    }
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
    let ends = boot(&kvm, &RunConfig::new(Workload::AbiSelftest, 1)).ends;
    assert_all_passed(&ends, "abi-selftest");
    assert_eq!(
        ends[0].console,
        "abi_selftest: vCPU 0x0000000000000000 ok\n"
    );
}

#[test]
fn abi_selftest_passes_on_four_vcpus() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        memory: 128 << 20,
        ..RunConfig::new(Workload::AbiSelftest, 4)
    };
    let ends = boot(&kvm, &config).ends;
    assert_all_passed(&ends, "abi-selftest");
    for end in &ends {
        let expected = format!("abi_selftest: vCPU {:#018x} ok\n", end.index);
        assert_eq!(end.console, expected);
    }
}

/// The same checks catch a broken start state: with RSI = 1 on both vCPUs,
/// vCPU 1 must fail check 2 (index >= count), proving the test can fail.
#[test]
fn abi_selftest_detects_a_wrong_start_state() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        adjust: Some(|_, regs| regs.rsi = 1),
        stop_on_failure: false,
        ..RunConfig::new(Workload::AbiSelftest, 2)
    };
    let ends = boot(&kvm, &config).ends;
    assert_eq!(ends[0].result, Ok(0), "console: {:?}", ends[0].console);
    assert_eq!(ends[1].result, Ok(2), "console: {:?}", ends[1].console);
    assert!(
        ends[1]
            .console
            .starts_with("abi_selftest: FAIL 0x0000000000000002")
    );
}

#[test]
fn smoke_passes_with_identity_vp_indices() {
    let Some(kvm) = kvm_or_skip() else { return };
    for vcpus in [1, 4] {
        let run = boot(&kvm, &RunConfig::new(Workload::Smoke, vcpus));
        assert_all_passed(&run.ends, "smoke");
        assert_eq!(run.ends[0].console, "smoke: all vCPUs passed\n");
        // 8 calls per round, 2 rounds, every vCPU.
        assert_eq!(run.hypercalls, 16 * u64::from(vcpus));
    }
}

#[test]
fn smoke_passes_with_vp_indices_across_banks() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        vp_stride: 64,
        ..RunConfig::new(Workload::Smoke, 3)
    };
    let run = boot(&kvm, &config);
    assert_all_passed(&run.ends, "smoke");
}

/// Every case's expected status matches the engine (two vCPUs: no VP >= 64, so
/// the cross-bank cases are skipped and say so).
#[test]
fn conformance_matches_the_engine() {
    let Some(kvm) = kvm_or_skip() else { return };
    let run = boot(&kvm, &RunConfig::new(Workload::Conformance, 2));
    assert_all_passed(&run.ends, "conformance");
    let console = &run.ends[0].console;
    assert!(
        console.contains("conformance: skipped case 0x0000000000000019"),
        "{console}"
    );
    assert!(
        console
            .contains("conformance: cases passed 0x000000000000004e, skipped 0x0000000000000004\n"),
        "{console}"
    );
    // The gate phase ran after the table (its checks are the guest's own).
    assert!(console.contains("\nconformance: gates ud "), "{console}");
}

#[test]
fn conformance_matches_the_engine_across_banks() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        vp_stride: 40,
        ..RunConfig::new(Workload::Conformance, 3)
    };
    let run = boot(&kvm, &config);
    assert_all_passed(&run.ends, "conformance");
    let console = &run.ends[0].console;
    assert!(
        console
            .contains("conformance: cases passed 0x0000000000000052, skipped 0x0000000000000000\n"),
        "{console}"
    );
    // The gate phase ran after the table (its checks are the guest's own).
    assert!(console.contains("\nconformance: gates ud "), "{console}");
}

/// Without Ex masks every Ex case must be refused with ACCESS_DENIED, and
/// without XMM fast input every fast flush with INVALID_HYPERCALL_INPUT.
#[test]
fn conformance_follows_what_is_offered() {
    let Some(kvm) = kvm_or_skip() else { return };
    for (ex_masks, xmm_input) in [(false, true), (true, false), (false, false)] {
        let config = RunConfig {
            vp_stride: 40,
            offer: Offer {
                ex_masks,
                xmm_input,
                ..Offer::default()
            },
            ..RunConfig::new(Workload::Conformance, 3)
        };
        let run = boot(&kvm, &config);
        assert_all_passed(&run.ends, "conformance");
    }
}

#[test]
fn smoke_and_storm_skip_what_is_not_offered() {
    let Some(kvm) = kvm_or_skip() else { return };
    let offer = Offer {
        ex_masks: false,
        xmm_input: false,
        ..Offer::default()
    };
    let smoke = RunConfig {
        offer,
        vp_stride: 64,
        ..RunConfig::new(Workload::Smoke, 3)
    };
    let run = boot(&kvm, &smoke);
    assert_all_passed(&run.ends, "smoke");
    // Only the memory-input Space and List calls remain.
    assert_eq!(run.hypercalls, 2 * 2 * 3);
    let storm = RunConfig {
        offer,
        stop: StopWhen::EveryVcpuCalled,
        ..RunConfig::new(Workload::Storm, 2)
    };
    assert_all_passed(&boot(&kvm, &storm).ends, "storm");
}

#[test]
fn storm_runs_until_stopped() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        vp_stride: 33,
        stop: StopWhen::EveryVcpuCalled,
        ..RunConfig::new(Workload::Storm, 3)
    };
    let run = boot(&kvm, &config);
    assert_all_passed(&run.ends, "storm");
    for end in &run.ends {
        assert!(
            end.console.starts_with("storm: calls made 0x"),
            "{}",
            end.console
        );
    }
}

#[test]
fn bench_marks_both_phases() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        control: ControlBlock {
            iterations: 5,
            param: 1,
            trap_stub_gpa: BENCH_STUB_GPA,
        },
        stop: StopWhen::Vcpu0Ended,
        ..RunConfig::new(Workload::Bench, 3)
    };
    let run = boot(&kvm, &config);
    assert_all_passed(&run.ends, "bench");
    assert_eq!(
        run.markers,
        [
            marker::TRAP_START,
            marker::HYPERCALL_START,
            marker::HYPERCALL_END
        ]
    );
    assert_eq!(run.trap_exits, 5);
    assert_eq!(run.hypercalls, 5);
}

#[test]
fn bench_without_a_trap_stub_fails_cleanly() {
    let Some(kvm) = kvm_or_skip() else { return };
    let config = RunConfig {
        stop_on_failure: false,
        ..RunConfig::new(Workload::Bench, 1)
    };
    let run = boot(&kvm, &config);
    assert_eq!(run.ends[0].result, Ok(0x501), "{}", run.ends[0].console);
    assert!(run.markers.is_empty());
}
