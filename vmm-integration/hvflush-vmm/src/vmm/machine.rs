//! Building the VM: memory, irqchip, CPUID, the flush path the decision
//! picked, and the vCPUs; then running them to completion.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hvflush_config::HypervFlushConfig;
use hyperv_flush::engine::{EngineError, FlushObserver, NoopObserver, Partition, PartitionConfig};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use super::VmAddressSpace;
use super::kvm_state::{self, KvmStateError, VmState};
use super::options::{BootMode, GuestProgram, RunOptions};
use super::report::{RunReport, VcpuOutcome};
use super::snapshot::{Capture, Snapshot, SnapshotError, SnapshotParts, write_snapshot};
use super::vcpu_thread::{self, VcpuThread};
use crate::guest::pvh::{self, PvhImage, PvhParams};
use crate::guest::rom::{self, RomError};
use crate::guest::{self, BootError, ControlBlock, GuestLayout, LayoutError, PvhError};
use hvflush_api::EventMonitor;
use vmm_integration::cpuid::{CpuidError, VmmCpuid, apply_hyperv_cpuid, bits};
use vmm_integration::decision::{self, Decision, FlushPath, Refusal};
use vmm_integration::facts::HostFacts;
use vmm_integration::kernel_counters::KernelCounterSource;
use vmm_integration::kvm::offload::{KvmOffload, OffloadError};
use vmm_integration::kvm::probe::{self, ProbeError};
use vmm_integration::kvm::userspace::{
    KvmUserspaceFlush, RecordRegion, RegionError, UserspaceError, UserspaceOptions, VcpuKickers,
    install_kick_signal_handler, region_size,
};
use vmm_integration::service::VmmFlushService;
use vmm_integration::state::FlushState;

/// Errors building or running the VM.
#[derive(Debug, Error)]
pub enum MachineError {
    /// /dev/kvm is missing or not accessible.
    #[error(
        "Cannot open /dev/kvm: load the KVM module (modprobe kvm_intel or kvm_amd) and give this user read/write access to /dev/kvm (e.g. add it to the kvm group)"
    )]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// A KVM call failed.
    #[error("KVM: cannot {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Host probing failed.
    #[error("Cannot probe the host")]
    Probe(#[source] ProbeError),
    /// The flush configuration does not fit the machine.
    #[error("Invalid Hyper-V flush configuration for this machine")]
    Config(#[source] hvflush_config::ConfigError),
    /// A snapshot could not be written or loaded.
    #[error("Snapshot failed")]
    Snapshot(#[source] SnapshotError),
    /// KVM's VM or vCPU state could not be read or loaded.
    #[error("Cannot save or load KVM state")]
    KvmState(#[source] KvmStateError),
    /// The flush-record region is unusable.
    #[error("Cannot place the flush records")]
    Records(#[source] RegionError),
    /// The configuration cannot be served on this host.
    #[error("Hyper-V flush configuration refused")]
    Refused(#[source] Refusal),
    /// Memory size or vCPU count out of range.
    #[error("Invalid machine size")]
    Layout(#[source] LayoutError),
    /// Guest memory or image setup failed.
    #[error("Cannot set up the guest")]
    Boot(#[source] BootError),
    /// The PVH image was refused or could not be loaded.
    #[error("Cannot boot the PVH image")]
    Pvh(#[source] PvhError),
    /// The reset ROM could not be set up.
    #[error("Cannot set up the reset ROM")]
    Rom(#[source] RomError),
    /// CPUID composition failed.
    #[error("Cannot compose the guest CPUID")]
    Cpuid(#[source] CpuidError),
    /// The userspace flush path could not be set up.
    #[error("Cannot set up the userspace flush path")]
    Userspace(#[source] UserspaceError),
    /// The offload path could not be set up.
    #[error("Cannot set up in-kernel Hyper-V offload")]
    Offload(#[source] OffloadError),
    /// The flush engine refused the setup.
    #[error("Flush engine setup failed")]
    Engine(#[source] EngineError),
    /// The kick signal handler could not be installed.
    #[error("Cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// A vCPU thread could not be started.
    #[error("Cannot start vCPU thread")]
    Thread(#[source] std::io::Error),
}

/// The partition's offer for the decided request (what the CPUID shows).
/// Whether `cpuid` shows VMX (Intel) or SVM (AMD) to the vCPUs.
fn shows_nested(cpuid: &CpuId) -> bool {
    cpuid.as_slice().iter().any(|e| {
        (e.function == 1 && e.ecx & bits::LEAF1_ECX_VMX != 0)
            || (e.function == 0x8000_0001 && e.ecx & bits::EXT1_ECX_SVM != 0)
    })
}

/// A built VM, ready to run.
pub struct Machine {
    // Drop order: vCPU threads end inside `run`; the VM outlives the memory
    // registration it uses.
    vm: VmFd,
    mem: GuestMemoryMmap,
    /// The reset ROM (PVH boot); mapped as long as the VM.
    _rom: Option<GuestMemoryMmap>,
    vcpus: Vec<VcpuFd>,
    kernel_counters: Arc<KernelCounterSource>,
    partition: Arc<Partition>,
    flush: Option<Arc<KvmUserspaceFlush<VmAddressSpace>>>,
    kickers: Arc<VcpuKickers>,
    decision: Decision,
    host: HostFacts,
    options: RunOptions,
    program_name: String,
    /// The MSRs a snapshot saves.
    msr_list: Vec<u32>,
}

impl Machine {
    /// Creates the VM, its memory and vCPUs, and the flush path.
    pub fn create(options: &RunOptions) -> Result<Self, MachineError> {
        Self::create_with_observer(options, Arc::new(NoopObserver))
    }

    /// Like [`Machine::create`], reporting flush-path events to `observer`.
    pub fn create_with_observer(
        options: &RunOptions,
        observer: Arc<dyn FlushObserver>,
    ) -> Result<Self, MachineError> {
        options
            .flush
            .validate_vcpus(options.vcpus)
            .map_err(MachineError::Config)?;
        let kvm = Kvm::new().map_err(MachineError::OpenKvm)?;
        let msr_list = kvm_state::msr_list(&kvm).map_err(MachineError::KvmState)?;
        let facts = probe::probe(&kvm).map_err(MachineError::Probe)?;
        let host = HostFacts::kvm(facts.clone());
        let decision = decision::decide(&options.flush, &host).map_err(MachineError::Refused)?;
        let layout = GuestLayout::new(options.memory_mib << 20, options.vcpus)
            .map_err(MachineError::Layout)?;

        let vm = kvm
            .create_vm()
            .map_err(|e| MachineError::Kvm("create a VM", e))?;
        vm.set_tss_address(0xfffb_d000)
            .map_err(|e| MachineError::Kvm("set the TSS address", e))?;
        vm.create_irq_chip()
            .map_err(|e| MachineError::Kvm("create the irqchip", e))?;
        let mem = guest::create_guest_memory(&layout).map_err(MachineError::Boot)?;
        // SAFETY: `mem` is stored in the Machine next to `vm` and dropped
        // after every vCPU thread has ended.
        unsafe { guest::register_guest_memory(&vm, &mem) }.map_err(MachineError::Boot)?;
        guest::setup_memory(&mem, &layout).map_err(MachineError::Boot)?;
        let (image, program_name) = match &options.program {
            GuestProgram::Builtin(w) => (
                match options.boot {
                    BootMode::Pvh => pvh::build_image(*w),
                    BootMode::Flat => guest::image(*w).to_vec(),
                },
                w.name().to_string(),
            ),
            GuestProgram::Image(path) => (
                guest::read_image_file(path, &layout).map_err(MachineError::Boot)?,
                path.display().to_string(),
            ),
        };
        // A PVH ELF boots like on hardware: entry and start_info for the BSP.
        let pvh_boot = if pvh::is_elf(&image) {
            let elf = PvhImage::parse(&image, &layout).map_err(MachineError::Pvh)?;
            elf.load(&mem).map_err(MachineError::Pvh)?;
            let start_info = pvh::write_boot_info(&mem, &layout, &PvhParams::for_layout(&layout))
                .map_err(MachineError::Pvh)?;
            Some((elf.entry(), start_info))
        } else {
            guest::load_image(&mem, &layout, &image).map_err(MachineError::Boot)?;
            None
        };
        let rom = match pvh_boot {
            Some((entry, start_info)) => {
                let bytes = rom::rom_image(entry, start_info).map_err(MachineError::Rom)?;
                let rom = rom::create_rom(&bytes).map_err(MachineError::Rom)?;
                let readonly = kvm.check_extension(Cap::ReadonlyMem);
                let slot = mem.num_regions() as u32;
                // SAFETY: `rom` is stored in the Machine next to `vm`, like `mem`.
                unsafe { rom::register_rom(&vm, &rom, slot, readonly) }
                    .map_err(MachineError::Rom)?;
                Some(rom)
            }
            None => None,
        };
        let trap_stub_gpa =
            vcpu_thread::install_bench_trap_stub(&mem).map_err(MachineError::Boot)?;
        let block = ControlBlock {
            iterations: options.iterations,
            param: options.param,
            trap_stub_gpa,
        };
        guest::write_control_page(&mem, &block).map_err(MachineError::Boot)?;

        let vcpus = options.vcpus as usize;
        let mut config = PartitionConfig::new(vcpus);
        config.offer = decision.engine_offer();
        let partition = Arc::new(
            Partition::new(config)
                .map_err(MachineError::Engine)?
                .with_observer(observer),
        );
        for v in 0..vcpus {
            let vp = (v as u32).saturating_mul(options.vp_index_stride.max(1));
            partition
                .set_vp_index(v, vp)
                .map_err(MachineError::Engine)?;
        }

        let kick_signal = vmm_sys_util::signal::SIGRTMIN();
        install_kick_signal_handler(kick_signal).map_err(MachineError::Signal)?;
        // Its vCPU threads run without seccomp: the halted check can read stats.
        let kickers = Arc::new(VcpuKickers::new(vcpus, kick_signal).with_halted_check());

        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| MachineError::Kvm("get the supported CPUID", e))?;
        // This VMM shows its vCPUs the whole supported table, nested
        // virtualization included when the host has it, and no Hyper-V
        // enlightenments of its own.
        let vmm_cpuid = VmmCpuid {
            kvm_hyperv: false,
            nested: shows_nested(&cpuid),
            max_vcpus: options.vcpus,
        };
        apply_hyperv_cpuid(
            &mut cpuid,
            &decision,
            facts.supported_hv_cpuid.as_ref(),
            &vmm_cpuid,
        )
        .map_err(MachineError::Cpuid)?;
        let offload = match decision.selected_mode {
            FlushPath::Offload => {
                Some(KvmOffload::new(&decision.features, &facts).map_err(MachineError::Offload)?)
            }
            _ => None,
        };
        let flush = match decision.selected_mode {
            FlushPath::Userspace => Some(
                KvmUserspaceFlush::setup_vm(
                    &vm,
                    Arc::clone(&partition),
                    VmAddressSpace::new(mem.clone()),
                    Arc::clone(&kickers),
                    UserspaceOptions {
                        hypercall_port: options.flush.hypercall_port,
                        records: RecordRegion::new(
                            &mem,
                            crate::guest::layout::STEAL_TIME_GPA,
                            region_size(crate::guest::layout::MAX_VCPUS),
                            options.vcpus,
                            &crate::guest::layout::used_ranges(),
                        )
                        .map_err(MachineError::Records)?,
                    },
                )
                .map_err(MachineError::Userspace)?,
            ),
            _ => None,
        };

        let mut vcpu_fds = Vec::with_capacity(vcpus);
        for index in 0..options.vcpus {
            let vcpu = vm
                .create_vcpu(u64::from(index))
                .map_err(|e| MachineError::Kvm("create a vCPU", e))?;
            let vcpu_cpuid = per_vcpu_cpuid(&cpuid, index);
            vcpu.set_cpuid2(&vcpu_cpuid)
                .map_err(|e| MachineError::Kvm("set the vCPU CPUID", e))?;
            if let Some(o) = &offload {
                o.setup_vcpu(&vcpu, &vcpu_cpuid)
                    .map_err(MachineError::Offload)?;
            }
            match pvh_boot {
                Some((entry, start_info)) if index == 0 => {
                    guest::configure_pvh_bsp(&vcpu, entry, start_info)
                        .map_err(MachineError::Boot)?;
                }
                // APs: KVM's power-on state, waiting for INIT/SIPI.
                Some(_) => {}
                None => guest::configure_vcpu(&vcpu, &layout, index).map_err(MachineError::Boot)?,
            }
            vcpu_fds.push(vcpu);
        }
        Ok(Self {
            vm,
            mem,
            _rom: rom,
            kernel_counters: Arc::new(KernelCounterSource::open(&vcpu_fds)),
            vcpus: vcpu_fds,
            partition,
            flush,
            kickers,
            decision,
            host,
            options: options.clone(),
            program_name,
            msr_list,
        })
    }

    /// Builds the VM a snapshot describes, the same way it was built, then
    /// loads its memory, its in-kernel devices, every vCPU's KVM state and
    /// the component's state, before any vCPU runs.
    /// `options` are the snapshot's ([`Snapshot::run_options`]), with the
    /// caller's console choice.
    pub fn restore(
        snapshot: &Snapshot,
        options: &RunOptions,
        observer: Arc<dyn FlushObserver>,
    ) -> Result<Self, MachineError> {
        let machine = Self::create_with_observer(options, observer)?;
        snapshot
            .load_memory(&machine.mem)
            .map_err(MachineError::Snapshot)?;
        snapshot
            .vm_state()
            .restore(&machine.vm)
            .map_err(MachineError::KvmState)?;
        for (index, vcpu) in machine.vcpus.iter().enumerate() {
            let state = snapshot.vcpu_state(index).ok_or_else(|| {
                MachineError::Snapshot(SnapshotError::Inconsistent(format!("no vCPU {index}")))
            })?;
            state.restore(vcpu).map_err(MachineError::KvmState)?;
        }
        snapshot
            .flush_state()
            .restore(
                &machine.host,
                &machine.mem,
                &machine.partition,
                machine.flush.as_ref().map(|f| f.msrs()),
            )
            .map_err(|e| MachineError::Snapshot(SnapshotError::Flush(e)))?;
        Ok(machine)
    }

    /// The REST API's service for this machine (before it runs), with the
    /// kernel's counters; `config-changed` events go to `monitor`.
    pub fn flush_service(&self, monitor: Option<Arc<EventMonitor>>) -> VmmFlushService {
        VmmFlushService::new(
            Arc::clone(&self.partition),
            self.decision.clone(),
            self.host.clone(),
            self.options.flush.clone(),
            monitor,
        )
        .with_kernel_counters(Arc::clone(&self.kernel_counters))
    }

    /// The component's state now (what a snapshot would save).
    pub fn flush_state(&self) -> FlushState {
        FlushState::capture(
            &self.partition,
            &self.options.flush,
            &self.decision,
            self.flush.as_ref().map(|f| f.msrs()),
        )
    }

    /// The engine (counters, VP map, runtime offer).
    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// The kernel's own counters for this VM (KVM statistics, tracepoints).
    pub fn kernel_counters(&self) -> &Arc<KernelCounterSource> {
        &self.kernel_counters
    }

    /// The path decision and its reasons.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The host facts the decision was made from (to decide again on a
    /// runtime configuration change).
    pub fn host_facts(&self) -> &HostFacts {
        &self.host
    }

    /// The flush configuration the machine was built with.
    pub fn flush_config(&self) -> &HypervFlushConfig {
        &self.options.flush
    }

    /// Runs every vCPU until all have ended, the timeout passed, or `stop`
    /// was set (then the vCPUs are kicked out and reported as stopped).
    pub fn run(self) -> Result<RunReport, MachineError> {
        self.run_until(&AtomicBool::new(false))
    }

    /// Like [`Machine::run`], also ending when `external_stop` becomes true
    /// (SIGINT/SIGTERM in the binary).
    pub fn run_until(mut self, external_stop: &AtomicBool) -> Result<RunReport, MachineError> {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let markers = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let tids = Arc::new(Mutex::new(Vec::new()));
        let power_off = Arc::new(AtomicBool::new(false));
        let capture = Arc::new(Capture::new(self.vcpus.len(), self.msr_list.clone()));
        let mut handles = Vec::new();
        for (index, vcpu) in self.vcpus.drain(..).enumerate() {
            let thread = VcpuThread {
                index,
                vcpu,
                flush: self.flush.clone(),
                kickers: Arc::clone(&self.kickers),
                stop: Arc::clone(&stop),
                markers: Arc::clone(&markers),
                start,
                echo: self.options.echo_console,
                hooks_off: self.options.bench_hooks_off,
                bypass_hooks: false,
                kick_only: None,
                ignore_exit_port: self.options.ignore_exit_port,
                power_off: Arc::clone(&power_off),
                exit_code: None,
                capture: Arc::clone(&capture),
            };
            let tx = tx.clone();
            let tids = Arc::clone(&tids);
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    tids.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(tid as u32);
                    let result = thread.run();
                    let _ = tx.send((index, result));
                })
                .map_err(MachineError::Thread)?;
            handles.push(handle);
        }
        drop(tx);
        if self.decision.selected_mode == FlushPath::Offload {
            self.start_offload_trace(&tids);
        }

        let count = handles.len();
        let mut outcomes = vec![VcpuOutcome::Stopped; count];
        let mut console = vec![Vec::new(); count];
        let mut stop_reason = None;
        let mut stop_requested = false;
        let mut ended = 0;
        while ended < count {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok((index, (outcome, lines))) => {
                    outcomes[index] = outcome;
                    console[index] = lines;
                    ended += 1;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if power_off.load(SeqCst) {
                // The guest powered off: every vCPU ends, no failure by itself.
                stop.store(true, SeqCst);
                self.kickers.kick_all();
            }
            let elapsed = start.elapsed();
            let marker_seen = self.options.stop_on_marker.is_some_and(|value| {
                let markers = markers.lock().unwrap_or_else(|e| e.into_inner());
                markers.iter().any(|m| m.value == value)
            });
            if !stop_requested
                && (marker_seen || self.options.duration.is_some_and(|d| elapsed >= d))
            {
                stop_requested = true;
                guest::request_stop(&self.mem).map_err(MachineError::Boot)?;
            }
            if self
                .options
                .snapshot
                .as_ref()
                .is_some_and(|a| elapsed >= a.after)
            {
                if !capture.requested.swap(true, SeqCst) {
                    stop.store(true, SeqCst);
                }
                self.kickers.kick_all();
            }
            let reason = if external_stop.load(SeqCst) {
                Some("stopped by signal".to_string())
            } else if elapsed >= self.options.timeout {
                Some(format!("timeout after {:?}", self.options.timeout))
            } else {
                None
            };
            if let Some(reason) = reason {
                if stop_reason.is_none() {
                    stop_reason = Some(reason);
                    stop.store(true, SeqCst);
                }
                self.kickers.kick_all();
            }
        }
        for h in handles {
            let _ = h.join();
        }
        let snapshot = match &self.options.snapshot {
            Some(at) if capture.requested.load(SeqCst) => {
                self.write_snapshot(&capture, start.elapsed())?;
                Some(at.dir.clone())
            }
            _ => None,
        };
        let mode = match self.decision.selected_mode {
            FlushPath::Offload => "offload",
            FlushPath::Userspace => "userspace",
            FlushPath::Off => "off",
        };
        let mut markers = std::mem::take(&mut *markers.lock().unwrap_or_else(|e| e.into_inner()));
        markers.sort_by_key(|m| m.at);
        let report = RunReport {
            program: self.program_name.clone(),
            mode: mode.to_string(),
            outcomes,
            console,
            counters: self.partition.counters(),
            markers,
            elapsed: start.elapsed(),
            stop_reason,
            snapshot,
        };
        // The VM (and its memory registration) goes after every vCPU thread.
        drop(self.flush.take());
        let _ = &self.vm;
        Ok(report)
    }
}

impl Machine {
    /// Every vCPU has stopped for a snapshot: writes it.
    fn write_snapshot(&self, capture: &Capture, elapsed: Duration) -> Result<(), MachineError> {
        let Some(at) = &self.options.snapshot else {
            return Ok(());
        };
        let vcpus = capture.take().map_err(MachineError::Snapshot)?;
        let vm = VmState::save(&self.vm).map_err(MachineError::KvmState)?;
        let flush = self.flush_state();
        let parts = SnapshotParts {
            options: &self.options,
            elapsed,
            mem: &self.mem,
            vm,
            vcpus,
            flush,
        };
        write_snapshot(&at.dir, parts).map_err(MachineError::Snapshot)
    }

    /// Offload mode: once every vCPU thread has said who it is (bounded
    /// wait), count the kernel's flush tracepoints for those threads.
    fn start_offload_trace(&self, tids: &Mutex<Vec<u32>>) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let known = tids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if known.len() == self.options.vcpus as usize || Instant::now() >= deadline {
                let name = format!("hvflush-{}", std::process::id());
                self.kernel_counters.start_trace(&name, &known);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The VM's CPUID with this vCPU's APIC IDs (leaf 1 EBX[31:24], leaf 0xB EDX).
fn per_vcpu_cpuid(cpuid: &CpuId, index: u32) -> CpuId {
    let mut own = cpuid.clone();
    for entry in own.as_mut_slice() {
        match entry.function {
            1 => entry.ebx = (entry.ebx & 0x00ff_ffff) | (index << 24),
            0xb | 0x1f => entry.edx = index,
            _ => {}
        }
    }
    own
}
