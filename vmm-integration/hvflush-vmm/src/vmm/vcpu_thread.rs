//! One vCPU thread of the reference VMM: the loop a VMM writes around
//! `KVM_RUN`, with the flush hooks in their places.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::VmAddressSpace;
use super::console::Console;
use super::kvm_state::VcpuState;
use super::report::{Marker, VcpuOutcome};
use super::snapshot::Capture;
use crate::guest::BootError;
use crate::guest::layout::{
    BENCH_STUB_GPA, CONSOLE_PORT, EXIT_PORT, MARKER_PORT, POWER_OFF_VALUE, POWER_PORT,
};
use hvflush_api::error_line;
use vmm_integration::kvm::userspace::{
    ExitHandled, KickRegistration, KvmHypercallRegs, KvmUserspaceFlush, KvmVcpuFlush, VcpuKickers,
    hypercall_stub,
};

/// Port of the bench's trap-only stub: the same `out imm8, al; ret` as the
/// hypercall page, so the two round trips differ only in what the VMM does.
pub const BENCH_TRAP_PORT: u8 = 0x9a;

/// Writes the bench's trap stub; returns its GPA for the control page.
pub(crate) fn install_bench_trap_stub(mem: &GuestMemoryMmap) -> Result<u64, BootError> {
    mem.write_slice(
        &hypercall_stub(BENCH_TRAP_PORT),
        GuestAddress(BENCH_STUB_GPA),
    )
    .map_err(|source| BootError::WriteMemory {
        what: "bench trap stub",
        source,
    })?;
    Ok(BENCH_STUB_GPA)
}

pub(crate) struct VcpuThread {
    pub(crate) index: usize,
    pub(crate) vcpu: VcpuFd,
    pub(crate) flush: Option<Arc<KvmUserspaceFlush<VmAddressSpace>>>,
    pub(crate) kickers: Arc<VcpuKickers>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) markers: Arc<Mutex<Vec<Marker>>>,
    pub(crate) start: Instant,
    pub(crate) echo: bool,
    /// Bench markers between which this thread skips the flush hooks
    /// ([`super::RunOptions::bench_hooks_off`]), and whether it does now.
    pub(crate) hooks_off: Option<(u32, u32)>,
    pub(crate) bypass_hooks: bool,
    /// The kick registration when there are no flush hooks to carry it.
    pub(crate) kick_only: Option<KickRegistration>,
    /// Resume after an exit-port write instead of ending the vCPU.
    pub(crate) ignore_exit_port: bool,
    /// Set when the guest powers the VM off (port 0x600); the run loop stops every vCPU.
    pub(crate) power_off: Arc<AtomicBool>,
    /// The last exit-port value, when resumed after it.
    pub(crate) exit_code: Option<u32>,
    /// Where to leave this vCPU's state when the stop is for a snapshot.
    pub(crate) capture: Arc<Capture>,
}

type Registered = (
    Option<KvmVcpuFlush<VmAddressSpace>>,
    Option<KickRegistration>,
);

/// An exit, copied out of `kvm_run` so the vCPU can be borrowed again.
enum Pending {
    Nothing,
    IoOut(u16, [u8; 8], usize),
    End(VcpuOutcome),
}

impl VcpuThread {
    /// Runs the vCPU until the guest ends it, the VMM stops it, or an
    /// unexpected exit. Returns the outcome and the last console lines.
    pub(crate) fn run(mut self) -> (VcpuOutcome, Vec<String>) {
        let mut console = Console::default();
        let (mut hooks, kick_only) = match self.register() {
            Ok(registered) => registered,
            Err(e) => return (VcpuOutcome::Error(e), Vec::new()),
        };
        self.kick_only = kick_only;
        let outcome = loop {
            match self.step(&mut hooks, &mut console) {
                Pending::End(outcome) => break outcome,
                Pending::Nothing | Pending::IoOut(..) => {}
            }
        };
        // Ended by a power-off after its exit-port write: that write is the result.
        let outcome = match (outcome, self.exit_code) {
            (VcpuOutcome::Stopped, Some(code)) => VcpuOutcome::from_exit_code(code),
            (outcome, _) => outcome,
        };
        console.flush(self.index, self.echo);
        // Unregister (and mark stopped) on this thread, before it ends.
        drop(hooks);
        self.kick_only = None;
        (outcome, std::mem::take(&mut console.lines))
    }

    /// The flush hooks (which carry the kick registration), or without a
    /// userspace flush path the kick registration alone (VMM stop).
    fn register(&mut self) -> Result<Registered, String> {
        match &self.flush {
            Some(flush) => flush
                .setup_vcpu(&mut self.vcpu, self.index)
                .map(|h| (Some(h), None))
                .map_err(|e| error_line(&e)),
            None => self
                .kickers
                .register(self.index, &self.vcpu, None)
                .map(|k| (None, Some(k)))
                .map_err(|e| error_line(&e)),
        }
    }

    fn step(
        &mut self,
        hooks: &mut Option<KvmVcpuFlush<VmAddressSpace>>,
        console: &mut Console,
    ) -> Pending {
        let bypass = self.bypass_hooks;
        match hooks.as_mut().filter(|_| !bypass) {
            Some(h) => {
                if let Err(e) = h.before_entry(&self.vcpu) {
                    return Pending::End(VcpuOutcome::Error(error_line(&e)));
                }
            }
            None => {
                let kick = hooks.as_ref().map(|h| h.kick_registration());
                if let Some(k) = kick.or(self.kick_only.as_ref()) {
                    k.clear_immediate_exit();
                }
            }
        }
        // Checked after clearing the kick flag: a stop kick is never lost.
        if self.stop.load(SeqCst) {
            if let Some(h) = hooks.as_mut().filter(|_| !bypass) {
                h.after_exit();
            }
            if self.capture.requested.load(SeqCst) {
                let state = self.save_state();
                self.capture.put(self.index, state);
            }
            return Pending::End(VcpuOutcome::Stopped);
        }
        let result = self.vcpu.run();
        if let Some(h) = hooks.as_mut().filter(|_| !bypass) {
            h.after_exit();
        }
        let pending = match result {
            Ok(VcpuExit::IoOut(port, data)) => {
                let mut buf = [0u8; 8];
                let len = data.len().min(8);
                buf[..len].copy_from_slice(&data[..len]);
                Pending::IoOut(port, buf, len)
            }
            Ok(VcpuExit::X86Rdmsr(mut exit)) => {
                let mine = hooks.as_mut().map(|h| h.handle_rdmsr(&mut exit));
                if mine != Some(ExitHandled::Handled) {
                    *exit.error = 1; // #GP: this VMM emulates no other MSR.
                }
                Pending::Nothing
            }
            Ok(VcpuExit::X86Wrmsr(mut exit)) => {
                let mine = hooks.as_mut().map(|h| h.handle_wrmsr(&mut exit));
                if mine != Some(ExitHandled::Handled) {
                    *exit.error = 1;
                }
                Pending::Nothing
            }
            Ok(VcpuExit::Shutdown) => Pending::End(VcpuOutcome::Error(
                "shutdown (triple fault: the guest took an exception)".into(),
            )),
            Ok(VcpuExit::InternalError) => Pending::End(VcpuOutcome::Error(
                "KVM internal error (instruction emulation failed)".into(),
            )),
            Ok(other) => Pending::End(VcpuOutcome::Error(format!("unexpected exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Pending::Nothing,
            Err(e) => Pending::End(VcpuOutcome::Error(format!("KVM_RUN failed: {e}"))),
        };
        match pending {
            Pending::IoOut(port, buf, len) => self.io_out(hooks, console, port, &buf[..len]),
            other => other,
        }
    }

    /// The vCPU's KVM state for a snapshot. One `KVM_RUN` with
    /// `immediate_exit` first: it completes the last exit (the port write's
    /// instruction, the registers this loop changed through sync regs)
    /// without running guest code.
    fn save_state(&mut self) -> Result<VcpuState, String> {
        self.vcpu.set_kvm_immediate_exit(1);
        let completed = match self.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(format!("KVM_RUN to complete the last exit: {e}")),
            Ok(exit) => Err(format!("unexpected exit {exit:?} while stopping")),
        };
        self.vcpu.set_kvm_immediate_exit(0);
        completed?;
        VcpuState::save(&self.vcpu, &self.capture.msr_list).map_err(|e| error_line(&e))
    }

    fn io_out(
        &mut self,
        hooks: &mut Option<KvmVcpuFlush<VmAddressSpace>>,
        console: &mut Console,
        port: u16,
        data: &[u8],
    ) -> Pending {
        let word = || {
            let mut b = [0u8; 4];
            b[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
            u32::from_le_bytes(b)
        };
        match port {
            CONSOLE_PORT => {
                data.iter()
                    .for_each(|b| console.push(self.index, *b, self.echo));
                Pending::Nothing
            }
            EXIT_PORT if self.ignore_exit_port => {
                self.exit_code = Some(word());
                Pending::Nothing
            }
            EXIT_PORT => Pending::End(VcpuOutcome::from_exit_code(word())),
            POWER_PORT if data.first() == Some(&POWER_OFF_VALUE) => {
                self.power_off.store(true, SeqCst);
                Pending::End(match self.exit_code {
                    Some(code) => VcpuOutcome::from_exit_code(code),
                    None => VcpuOutcome::Error("powered off before its exit-port write".into()),
                })
            }
            MARKER_PORT => {
                let marker = Marker {
                    vcpu: self.index,
                    value: word(),
                    at: self.start.elapsed(),
                };
                if let Some((off, on)) = self.hooks_off.filter(|_| self.index == 0) {
                    if marker.value == off {
                        self.bypass_hooks = true;
                    } else if marker.value == on {
                        self.bypass_hooks = false;
                    }
                }
                self.markers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(marker);
                Pending::Nothing
            }
            p if p == u16::from(BENCH_TRAP_PORT) && hooks.is_some() => {
                // Exactly the register traffic of a hypercall, minus the engine.
                if KvmHypercallRegs::read(&self.vcpu).is_ok() {
                    self.vcpu.sync_regs_mut().regs.rax = 0;
                    self.vcpu.set_sync_dirty_reg(SyncReg::Register);
                }
                Pending::Nothing
            }
            _ => match hooks
                .as_mut()
                .map(|h| h.handle_io_out(&mut self.vcpu, port, data))
            {
                Some(ExitHandled::Handled) => Pending::Nothing,
                _ => Pending::End(VcpuOutcome::Error(format!(
                    "unhandled port write {port:#x} ({} bytes)",
                    data.len()
                ))),
            },
        }
    }
}
