//! Kicks a running vCPU out of `KVM_RUN`: set its `immediate_exit`, then
//! signal its thread (the signal interrupts a running or halted vCPU; the
//! flag covers a signal that lands just before `KVM_RUN`).
//!
//! Memory-safe by construction, whatever order the VMM drops things in:
//! * a kick writes `immediate_exit` through the target's **own** mapping of
//!   its `kvm_run` page, made from a duplicate of the vCPU fd at
//!   registration (Firecracker's `VcpuHandle` keeps a vCPU alive the same
//!   way), so it can never touch memory the VMM has unmapped;
//! * it signals with `tgkill` on the thread's kernel id, which fails
//!   cleanly for a thread that is gone (a stale `pthread_t` is undefined
//!   behaviour);
//! * both happen inside the target's [`KickSlot`], which the registration
//!   clears on drop: once [`KickRegistration`] is dropped, no other thread
//!   writes to the vCPU's run page or signals its thread.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};

use hyperv_flush::engine::{KickSlot, VcpuKicker};
use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::mmap::{MmapRegion, MmapRegionError};
use vm_memory::{FileOffset, GuestAddressSpace, VolatileMemory};

use super::steal_time::StealTimeRecord;
use crate::kvm::stats::{KvmStats, StatReader};

/// The generic vCPU statistic that is 1 while the vCPU waits in
/// `kvm_vcpu_block()` (Linux 5.17, commit c3858335c711 "KVM: stats: Add
/// stat to detect if vcpu is currently blocking"; a boolean since 5.19).
const BLOCKING_STAT: &str = "blocking";

/// `kvm_run` is page 0 of a vCPU fd's mapping (KVM API, "KVM_RUN").
const RUN_PAGE_SIZE: usize = 4096;
const IMMEDIATE_EXIT_OFFSET: usize = std::mem::offset_of!(kvm_run, immediate_exit);

/// Errors registering a vCPU thread for kicks.
#[derive(Debug, Error)]
pub enum KickError {
    /// No slot for this vCPU index.
    #[error("No kick slot for vCPU {0}")]
    NoSuchVcpu(usize),
    /// The vCPU fd could not be duplicated.
    #[error("Cannot duplicate the vCPU fd")]
    DupFd(#[source] std::io::Error),
    /// The run page could not be mapped.
    #[error("Cannot map the vCPU's run page")]
    Map(#[source] MmapRegionError),
}

/// A vCPU's `kvm_run` page, mapped from a duplicate of its fd: valid for as
/// long as this value lives, independently of the VMM's `VcpuFd`.
struct RunPage {
    region: MmapRegion<()>,
}

impl RunPage {
    fn map(vcpu: &VcpuFd) -> Result<Self, KickError> {
        // SAFETY: the descriptor belongs to `vcpu`, which is borrowed for
        // the whole call, so it stays open while it is borrowed here.
        let fd = unsafe { BorrowedFd::borrow_raw(vcpu.as_raw_fd()) };
        let file = File::from(fd.try_clone_to_owned().map_err(KickError::DupFd)?);
        let region = MmapRegion::from_file(FileOffset::new(file, 0), RUN_PAGE_SIZE)
            .map_err(KickError::Map)?;
        Ok(Self { region })
    }

    fn set_immediate_exit(&self, value: u8) {
        // In bounds and trivially aligned: a u8 inside the mapped page, so
        // the reference always exists. KVM reads the byte at entry.
        if let Ok(flag) = self
            .region
            .get_atomic_ref::<AtomicU8>(IMMEDIATE_EXIT_OFFSET)
        {
            flag.store(value, SeqCst);
        }
    }
}

/// What other threads use to kick one vCPU.
struct Registered {
    run: Arc<RunPage>,
    /// Kernel thread id of the vCPU thread.
    tid: libc::pid_t,
    /// The vCPU's `blocking` statistic (Linux 5.17+), if the kernel has it.
    blocking: Option<StatReader>,
}

/// One vCPU's kick state.
#[derive(Default)]
struct KickTarget {
    slot: KickSlot<Registered>,
    /// The vCPU's steal-time record GPA + 1 (0 = none).
    steal_time: AtomicU64,
}

/// Every vCPU thread of a VM, as registered for kicks. Shared by the flush
/// path (kicks to complete flushes) and the VMM (kicks to stop).
pub struct VcpuKickers {
    targets: Box<[KickTarget]>,
    signal: libc::c_int,
    pid: libc::pid_t,
    /// Whether registrations open the vCPU's stats fd for
    /// [`Self::kick_and_check_halted`] (see [`Self::with_halted_check`]).
    halted_check: bool,
}

impl VcpuKickers {
    /// Slots for `vcpus` vCPUs, kicked with `signal`.
    pub fn new(vcpus: usize, signal: libc::c_int) -> Self {
        Self {
            targets: (0..vcpus).map(|_| KickTarget::default()).collect(),
            signal,
            pid: std::process::id() as libc::pid_t,
            halted_check: false,
        }
    }

    /// Lets kicks report a target halted, so the flush path does not wait
    /// for it (`kick_and_check_halted`): each registration then opens the
    /// vCPU's binary-stats fd (`KVM_GET_STATS_FD` on the vCPU thread) and
    /// each such kick reads it (`pread64` on the kicking vCPU thread). Off
    /// by default because a VMM whose vCPU seccomp filter lacks either
    /// would trap (Cloud Hypervisor: docs/cloud-hypervisor.md §11).
    pub fn with_halted_check(mut self) -> Self {
        self.halted_check = true;
        self
    }

    /// Registers the **calling thread** as vCPU `index`'s thread, running
    /// `vcpu`. Kicks reach it until the returned registration is dropped;
    /// drop it on that thread before the thread ends.
    pub fn register(
        self: &Arc<Self>,
        index: usize,
        vcpu: &VcpuFd,
        steal_time: Option<&StealTimeRecord>,
    ) -> Result<KickRegistration, KickError> {
        let target = self
            .targets
            .get(index)
            .ok_or(KickError::NoSuchVcpu(index))?;
        let run = Arc::new(RunPage::map(vcpu)?);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        target
            .steal_time
            .store(steal_time.map_or(0, |r| r.gpa() + 1), SeqCst);
        // Without the statistic (older kernels, or no stats fd) every kicked
        // target is waited for.
        let blocking = if self.halted_check {
            blocking_stat(vcpu)
        } else {
            None
        };
        target.slot.set(Registered {
            run: Arc::clone(&run),
            tid,
            blocking,
        });
        Ok(KickRegistration {
            kickers: Arc::clone(self),
            index,
            run,
        })
    }

    /// Makes vCPU `index` leave `KVM_RUN` soon; no-op if not registered.
    pub fn kick(&self, index: usize) {
        self.signal(index, false);
    }

    /// [`Self::kick`], then true only if the signal was queued to the vCPU
    /// thread and the vCPU then read as blocked in `kvm_vcpu_block()`.
    ///
    /// Why that vCPU cannot run guest code before it returns to userspace
    /// (Linux virt/kvm/kvm_main.c, arch/x86/kvm/x86.c): `tgkill` sets the
    /// thread's `TIF_SIGPENDING` before it returns. `blocking` is 1 only
    /// between `kvm_vcpu_block()`'s first and last statements, outside
    /// guest mode. To enter the guest afterwards the vCPU stores
    /// `blocking = 0`, then `vcpu_enter_guest()` publishes `IN_GUEST_MODE`
    /// with a full barrier (`smp_store_mb`, so the 0 is visible first on
    /// x86) and only then checks `kvm_vcpu_exit_request()`, which sees the
    /// pending signal, cancels the entry and makes `KVM_RUN` return
    /// `EINTR`. So a read of 1 after the signal was queued means the next
    /// entry attempt fails and the thread passes through the VMM's
    /// `before_entry`, which takes the flush.
    pub fn kick_and_check_halted(&self, index: usize) -> bool {
        self.signal(index, true)
    }

    /// The kick; with `check_halted`, also the `blocking` read (only the
    /// first kick of a flush needs it: re-kicks and stop kicks do not).
    fn signal(&self, index: usize, check_halted: bool) -> bool {
        let Some(target) = self.targets.get(index) else {
            return false;
        };
        target
            .slot
            .with(|r| {
                r.run.set_immediate_exit(1);
                // SAFETY: tgkill takes no pointers; a thread that is gone
                // makes it fail with ESRCH. The signal has a handler
                // (`install_kick_signal_handler`, or the VMM's own).
                let sent = unsafe {
                    libc::syscall(
                        libc::SYS_tgkill,
                        libc::c_long::from(self.pid),
                        libc::c_long::from(r.tid),
                        libc::c_long::from(self.signal),
                    )
                } == 0;
                check_halted
                    && sent
                    && r.blocking
                        .as_ref()
                        .is_some_and(|b| matches!(b.read(), Ok(1)))
            })
            .unwrap_or(false)
    }

    /// Whether kicks to vCPU `index` can report it halted (enabled with
    /// [`Self::with_halted_check`], and its kernel has the `blocking`
    /// statistic).
    pub fn reports_halted(&self, index: usize) -> bool {
        self.targets
            .get(index)
            .and_then(|t| t.slot.with(|r| r.blocking.is_some()))
            .unwrap_or(false)
    }

    /// Kicks every registered vCPU (VMM stop).
    pub fn kick_all(&self) {
        (0..self.targets.len()).for_each(|i| self.kick(i));
    }

    /// Whether vCPU `index` is registered (tests and diagnostics).
    pub fn is_registered(&self, index: usize) -> bool {
        self.targets.get(index).is_some_and(|t| t.slot.is_set())
    }

    fn steal_time(&self, index: usize) -> Option<StealTimeRecord> {
        match self.targets.get(index)?.steal_time.load(SeqCst) {
            0 => None,
            gpa_plus_one => Some(StealTimeRecord::at(gpa_plus_one - 1)),
        }
    }
}

/// A vCPU thread's registration for kicks; dropping it unregisters, and
/// once the drop returns no other thread touches the vCPU.
pub struct KickRegistration {
    kickers: Arc<VcpuKickers>,
    index: usize,
    run: Arc<RunPage>,
}

impl KickRegistration {
    /// vCPU thread, right before `KVM_RUN`: clears a kick that is no
    /// longer needed (a stop check or the flush hooks follow it).
    pub fn clear_immediate_exit(&self) {
        self.run.set_immediate_exit(0);
    }

    /// The vCPU index.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for KickRegistration {
    fn drop(&mut self) {
        if let Some(target) = self.kickers.targets.get(self.index) {
            target.steal_time.store(0, SeqCst);
            // Waits for a kick in progress: none runs after this.
            drop(target.slot.clear());
        }
    }
}

/// The flush path's kicker: the VM's kickers plus guest memory for the
/// steal-time shortcut.
pub struct KvmKicker<A: GuestAddressSpace> {
    kickers: Arc<VcpuKickers>,
    mem: A,
}

impl<A: GuestAddressSpace> KvmKicker<A> {
    pub(crate) fn new(kickers: Arc<VcpuKickers>, mem: A) -> Self {
        Self { kickers, mem }
    }

    /// The VM's kickers.
    pub fn kickers(&self) -> &Arc<VcpuKickers> {
        &self.kickers
    }
}

impl<A: GuestAddressSpace> VcpuKicker for KvmKicker<A> {
    fn kick(&self, vcpu: usize) {
        self.kickers.kick(vcpu);
    }

    fn kick_and_check_halted(&self, vcpu: usize) -> bool {
        self.kickers.kick_and_check_halted(vcpu)
    }

    fn flush_if_preempted(&self, vcpu: usize) -> bool {
        self.kickers
            .steal_time(vcpu)
            .is_some_and(|record| record.flush_if_preempted(&*self.mem.memory()))
    }
}

/// The vCPU's `blocking` statistic, if its kernel has one.
fn blocking_stat(vcpu: &VcpuFd) -> Option<StatReader> {
    KvmStats::for_vcpu(vcpu).ok()?.into_stat(BLOCKING_STAT)
}

/// Whether `vcpu`'s kernel has what [`VcpuKickers::with_halted_check`]
/// needs (the `blocking` statistic, Linux 5.17+); without it every kicked
/// target is waited for.
pub fn halted_check_available(vcpu: &VcpuFd) -> bool {
    blocking_stat(vcpu).is_some()
}

extern "C" fn kick_signal_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs a no-op handler for the kick signal (its only job is to make
/// `KVM_RUN` return `EINTR`). VMMs that already own a vCPU kick signal
/// (Cloud Hypervisor: `SIGRTMIN`) pass that signal instead and skip this.
pub fn install_kick_signal_handler(signal: libc::c_int) -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(signal, kick_signal_handler)
}
