//! The KVM userspace flush path, for hosts without in-kernel Hyper-V.
//!
//! The VMM calls, and nothing more:
//! * [`KvmUserspaceFlush::setup_vm`] once per VM (after creating it);
//! * [`KvmUserspaceFlush::setup_vcpu`] on each vCPU's own thread, before
//!   its first `KVM_RUN`;
//! * [`KvmVcpuFlush::before_entry`] right before every `KVM_RUN` and
//!   [`KvmVcpuFlush::after_exit`] right after it returns;
//! * the exit handlers ([`KvmVcpuFlush::handle_io_out`],
//!   [`KvmVcpuFlush::handle_rdmsr`], [`KvmVcpuFlush::handle_wrmsr`]), which
//!   say whether the exit was theirs.
//!
//! # Example
//!
//! The whole integration, for one vCPU (a VMM runs the vCPU part on each
//! vCPU's own thread; `vmm::vcpu_thread` is the reference loop):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use hyperv_flush::engine::{Partition, PartitionConfig};
//! use kvm_ioctls::{Kvm, VcpuExit};
//! use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
//! use vmm_integration::kvm::userspace::{
//!     ExitHandled, KvmUserspaceFlush, RecordRegion, UserspaceOptions, VcpuKickers,
//!     install_kick_signal_handler, region_size,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)])?;
//! // (register `ram` with KVM, load the guest, set CPUID: the VMM's job)
//! let partition = Arc::new(Partition::new(PartitionConfig::new(1))?);
//! let signal = vmm_sys_util::signal::SIGRTMIN();
//! install_kick_signal_handler(signal)?;
//! let kickers = Arc::new(VcpuKickers::new(1, signal));
//! // 0. The flush records: a range the VMM reserves (E820 reserved, no
//! //    firmware table in it), checked against what else it put in memory.
//! let records = RecordRegion::new(&ram, 0x9000, region_size(1), 1, &[])?;
//! // 1. Once per VM.
//! let flush = KvmUserspaceFlush::setup_vm(
//!     &vm,
//!     partition,
//!     GuestMemoryAtomic::new(ram),
//!     kickers,
//!     UserspaceOptions { hypercall_port: 0x99, records },
//! )?;
//! // 2. On the vCPU's thread, before its first KVM_RUN.
//! let mut vcpu = vm.create_vcpu(0)?;
//! let mut hooks = flush.setup_vcpu(&mut vcpu, 0)?;
//! loop {
//!     // 3. Around every KVM_RUN.
//!     hooks.before_entry(&vcpu)?;
//!     let exit = vcpu.run();
//!     hooks.after_exit();
//!     // 4. The exits: ours first, "not mine" falls through to the VMM.
//!     let handled = match exit {
//!         Ok(VcpuExit::IoOut(port, data)) => {
//!             // Copied out of kvm_run, so the vCPU can be borrowed again.
//!             let mut buf = [0u8; 8];
//!             let len = data.len().min(buf.len());
//!             buf[..len].copy_from_slice(&data[..len]);
//!             hooks.handle_io_out(&mut vcpu, port, &buf[..len])
//!         }
//!         Ok(VcpuExit::X86Rdmsr(mut e)) => hooks.handle_rdmsr(&mut e),
//!         Ok(VcpuExit::X86Wrmsr(mut e)) => hooks.handle_wrmsr(&mut e),
//!         _ => break,
//!     };
//!     if handled == ExitHandled::NotMine {
//!         break; // the VMM's own device model
//!     }
//! }
//! // 5. Dropping the hooks unregisters the vCPU (marked stopped, no kick).
//! drop(hooks);
//! # Ok(())
//! # }
//! ```

mod gate;
mod kicker;
mod msrs;
mod records;
mod regs;
mod steal_time;
mod vm_setup;

use std::sync::Arc;

use hyperv_flush::abi::HvStatus;
use hyperv_flush::engine::{EngineError, Level, Partition, Refusal};
use kvm_ioctls::{ReadMsrExit, SyncReg, VcpuFd, VmFd, WriteMsrExit};
use thiserror::Error;
use vm_memory::GuestAddressSpace;

pub use gate::{
    CallerMode, HypercallGate, KVM_ENOSYS, KVM_EPERM, RAX_KVM_ENOSYS, hypercall_gate,
    inject_invalid_opcode,
};
pub use kicker::{
    KickError, KickRegistration, KvmKicker, VcpuKickers, halted_check_available,
    install_kick_signal_handler,
};
pub use msrs::{HypervMsrs, MSR_KVM_STEAL_TIME, MsrOutcome, hypercall_stub};
pub use records::{RECORD_BYTES, REGION_ALIGN, RecordRegion, RegionError, UsedRange, region_size};
pub use regs::KvmHypercallRegs;
pub use steal_time::{KVM_VCPU_FLUSH_TLB, KVM_VCPU_PREEMPTED, StealTimeError, StealTimeRecord};
pub use vm_setup::{VmSetupError, setup_msr_exits};

/// Errors of the userspace path.
#[derive(Debug, Error)]
pub enum UserspaceError {
    /// VM-wide setup failed.
    #[error("Cannot set up the VM for userspace flushes")]
    VmSetup(#[source] VmSetupError),
    /// The flush executor could not be set up for a vCPU.
    #[error("Cannot set up the flush executor of vCPU {0}")]
    Executor(usize, #[source] StealTimeError),
    /// The vCPU thread could not be registered for kicks.
    #[error("Cannot register vCPU {0} for kicks")]
    Kick(usize, #[source] KickError),
    /// The engine refused a vCPU index.
    #[error("Flush engine error")]
    Engine(#[source] EngineError),
    /// The flush-record region cannot serve a vCPU.
    #[error("No flush record for vCPU")]
    Records(#[source] RegionError),
    /// The hypercall port is not an 8-bit port.
    #[error("Hypercall port {0:#x} is not an 8-bit I/O port")]
    Port(u16),
}

/// Options of the userspace path.
#[derive(Clone, Debug)]
pub struct UserspaceOptions {
    /// I/O port of the hypercall stub (`out imm8, al`).
    pub hypercall_port: u16,
    /// Where the per-vCPU flush records live.
    pub records: RecordRegion,
}

/// Per-VM state of the userspace path.
pub struct KvmUserspaceFlush<A: GuestAddressSpace> {
    partition: Arc<Partition>,
    msrs: HypervMsrs,
    kicker: KvmKicker<A>,
    mem: A,
    port: u16,
    records: RecordRegion,
}

/// Whether an exit belonged to this component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitHandled {
    /// Handled: re-enter the guest.
    Handled,
    /// Not ours: the VMM handles it.
    NotMine,
}

impl<A: GuestAddressSpace> KvmUserspaceFlush<A> {
    /// VM-wide setup: MSR exits and filter. `mem` is the guest address
    /// space the hypercall inputs, the hypercall page and the steal-time
    /// records are in; it is read anew at every use, so memory hotplug
    /// through `GuestMemoryAtomic` is seen.
    pub fn setup_vm(
        vm: &VmFd,
        partition: Arc<Partition>,
        mem: A,
        kickers: Arc<VcpuKickers>,
        options: UserspaceOptions,
    ) -> Result<Arc<Self>, UserspaceError> {
        let port = u8::try_from(options.hypercall_port)
            .map_err(|_| UserspaceError::Port(options.hypercall_port))?;
        // Every vCPU the engine knows must have a record.
        if let Some(last) = partition.vcpu_count().checked_sub(1) {
            options
                .records
                .record_gpa(last)
                .map_err(UserspaceError::Records)?;
        }
        setup_msr_exits(vm).map_err(UserspaceError::VmSetup)?;
        Ok(Arc::new(Self {
            kicker: KvmKicker::new(kickers, mem.clone()),
            msrs: HypervMsrs::new(port),
            partition,
            mem,
            port: options.hypercall_port,
            records: options.records,
        }))
    }

    /// The kicker the engine uses (also stops vCPUs: `VcpuKicker::kick`).
    pub fn kicker(&self) -> &KvmKicker<A> {
        &self.kicker
    }

    /// The engine.
    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// The partition-wide Hyper-V MSRs (state to carry across snapshots).
    pub fn msrs(&self) -> &HypervMsrs {
        &self.msrs
    }

    /// Per-vCPU setup, called **on the vCPU's own thread** before its first
    /// `KVM_RUN`: registers the vCPU's record in the region of
    /// [`UserspaceOptions::records`], enables register sync on exits, and
    /// registers the thread for kicks. Drop the hooks on that thread when
    /// it stops running the vCPU; they may outlive the `VcpuFd` (kicks use
    /// their own mapping of the vCPU's run page).
    pub fn setup_vcpu(
        self: &Arc<Self>,
        vcpu: &mut VcpuFd,
        index: usize,
    ) -> Result<KvmVcpuFlush<A>, UserspaceError> {
        if index >= self.partition.vcpu_count() {
            return Err(UserspaceError::Engine(EngineError::NoSuchVcpu(index)));
        }
        let gpa = self
            .records
            .record_gpa(index)
            .map_err(UserspaceError::Records)?;
        let record = StealTimeRecord::register(vcpu, &*self.mem.memory(), gpa)
            .map_err(|e| UserspaceError::Executor(index, e))?;
        vcpu.set_sync_valid_reg(SyncReg::Register);
        // CPL and mode of a hypercall's caller (the gates of `gate.rs`).
        vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        let kick = self
            .kicker
            .kickers()
            .register(index, vcpu, Some(&record))
            .map_err(|e| UserspaceError::Kick(index, e))?;
        Ok(KvmVcpuFlush {
            shared: Arc::clone(self),
            index,
            record,
            armed: false,
            kick,
        })
    }
}

/// One vCPU's hooks, owned by its thread. Dropping them unregisters the
/// vCPU: it is marked stopped, and no kick reaches it afterwards.
pub struct KvmVcpuFlush<A: GuestAddressSpace> {
    shared: Arc<KvmUserspaceFlush<A>>,
    index: usize,
    record: StealTimeRecord,
    /// A flush is armed in the record and KVM has not been seen to
    /// perform it yet.
    armed: bool,
    kick: KickRegistration,
}

impl<A: GuestAddressSpace> KvmVcpuFlush<A> {
    /// Right before `KVM_RUN`, on the vCPU's thread, with the `VcpuFd` it
    /// runs: clears a pending kick, marks the vCPU in the guest and arms
    /// the executor if another vCPU queued a flush for it.
    ///
    /// Before arming, it checks that KVM still holds the vCPU's steal-time
    /// registration and restores it if an INIT or RESET dropped it
    /// (counted in `executor_repairs`). That costs one `KVM_GET_MSRS`, and
    /// only on entries that carry a flush; other entries cost a few loads.
    pub fn before_entry(&mut self, vcpu: &VcpuFd) -> Result<(), UserspaceError> {
        self.kick.clear_immediate_exit();
        let pending = self
            .shared
            .partition
            .before_entry(self.index)
            .map_err(UserspaceError::Engine)?;
        if !pending.is_some() && !self.armed {
            return Ok(());
        }
        if let Err(e) = self.arm(vcpu, pending.is_some()) {
            // Leave the vCPU marked outside so nothing waits on it.
            let _ = self.shared.partition.after_exit(self.index);
            return Err(UserspaceError::Executor(self.index, e));
        }
        Ok(())
    }

    /// Makes KVM hold the registration, then arms a flush if `new` work
    /// was taken (an armed one serves it too). A full flush serves ranges
    /// too: over-flushing is always allowed (TLFS), and it is the one
    /// flush KVM offers userspace.
    fn arm(&mut self, vcpu: &VcpuFd, new: bool) -> Result<(), StealTimeError> {
        if self.record.ensure_registered(vcpu)? {
            // The index was validated in `setup_vcpu`.
            let _ = self.shared.partition.executor_repaired(self.index);
        }
        if new {
            self.record.arm_flush(&*self.shared.mem.memory())?;
            self.armed = true;
        }
        Ok(())
    }

    /// Right after `KVM_RUN` returned (whatever it returned): marks the
    /// vCPU outside and counts armed flushes KVM has performed.
    pub fn after_exit(&mut self) {
        // The index was validated in `setup_vcpu`.
        let _ = self.shared.partition.after_exit(self.index);
        if !self.armed {
            return;
        }
        // An unreadable record keeps the flush armed: the next entry
        // checks the registration again and reports the memory error.
        let mem = self.shared.mem.memory();
        if let Ok(false) = self.record.flush_still_armed(&*mem) {
            let _ = self.shared.partition.flushes_executed(self.index, 1);
            self.armed = false;
        }
    }

    /// A `KVM_EXIT_IO` out: serves the hypercall if `port` is the stub's.
    ///
    /// KVM's gates come first (`gate.rs`): while GUEST_OS_ID is 0 the
    /// call is KVM's own hypercall (RAX = `-KVM_ENOSYS`, nothing flushed);
    /// from CPL > 0 or outside 64-bit mode it gets #UD with RAX unchanged
    /// and RIP back at the `out`. CPL and mode come from the system
    /// registers synced with the exit (no ioctl); only the #UD path makes
    /// ioctls.
    pub fn handle_io_out(&mut self, vcpu: &mut VcpuFd, port: u16, data: &[u8]) -> ExitHandled {
        if port != self.shared.port || data.len() != 1 {
            return ExitHandled::NotMine;
        }
        let shared = &self.shared;
        let synced = vcpu.sync_regs();
        let mode = CallerMode::from_sregs(&synced.sregs, synced.regs.rflags);
        let result = match hypercall_gate(mode, shared.msrs.guest_os_id()) {
            HypercallGate::Serve => match KvmHypercallRegs::read(vcpu) {
                Ok(mut regs) => shared
                    .partition
                    .handle_hypercall(
                        self.index,
                        Level::L1,
                        &mut regs,
                        &*shared.mem.memory(),
                        &shared.kicker,
                    )
                    .map_or(HvStatus::INVALID_PARAMETER.to_result(0), |o| o.result),
                Err(_) => HvStatus::INVALID_HYPERCALL_INPUT.to_result(0),
            },
            HypercallGate::NotHyperV { rax } => {
                // The index was validated in `setup_vcpu`.
                let _ = shared
                    .partition
                    .hypercall_refused(self.index, Refusal::NoGuestOsId);
                rax
            }
            HypercallGate::InvalidOpcode => {
                let _ = shared
                    .partition
                    .hypercall_refused(self.index, Refusal::InvalidOpcode);
                let mem = shared.mem.memory();
                match inject_invalid_opcode(vcpu, &*mem, port) {
                    Ok(()) => return ExitHandled::Handled,
                    // Could not inject: fail the call rather than serve it.
                    Err(_) => HvStatus::ACCESS_DENIED.to_result(0),
                }
            }
        };
        vcpu.sync_regs_mut().regs.rax = result;
        vcpu.set_sync_dirty_reg(SyncReg::Register);
        ExitHandled::Handled
    }

    /// A `KVM_EXIT_X86_RDMSR`.
    pub fn handle_rdmsr(&mut self, exit: &mut ReadMsrExit<'_>) -> ExitHandled {
        let vp = self.shared.partition.vp_index(self.index);
        match self.shared.msrs.read(exit.index, vp) {
            MsrOutcome::NotMine => ExitHandled::NotMine,
            MsrOutcome::Done(value) => {
                *exit.data = value;
                *exit.error = 0;
                ExitHandled::Handled
            }
            MsrOutcome::Fault => {
                *exit.error = 1;
                ExitHandled::Handled
            }
        }
    }

    /// A `KVM_EXIT_X86_WRMSR`.
    pub fn handle_wrmsr(&mut self, exit: &mut WriteMsrExit<'_>) -> ExitHandled {
        match self
            .shared
            .msrs
            .write(exit.index, exit.data, &*self.shared.mem.memory())
        {
            MsrOutcome::NotMine => ExitHandled::NotMine,
            MsrOutcome::Done(_) => {
                *exit.error = 0;
                ExitHandled::Handled
            }
            MsrOutcome::Fault => {
                *exit.error = 1;
                ExitHandled::Handled
            }
        }
    }

    /// The I/O port of the hypercall stub: a VMM whose exit path copies
    /// port writes can test this before calling [`Self::handle_io_out`].
    pub fn hypercall_port(&self) -> u16 {
        self.shared.port
    }

    /// The vCPU index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The vCPU's kick registration (a VMM that runs the vCPU without the
    /// hooks for a while clears `immediate_exit` through it).
    pub fn kick_registration(&self) -> &KickRegistration {
        &self.kick
    }
}

impl<A: GuestAddressSpace> Drop for KvmVcpuFlush<A> {
    fn drop(&mut self) {
        // The kick registration (a field) is dropped right after this: a
        // kicker that still sees the vCPU "in guest" finds it stopped and
        // stops waiting; one that kicks meanwhile reaches a live thread.
        let _ = self.shared.partition.vcpu_stopped(self.index);
    }
}
