//! Kicks a running vCPU out of `KVM_RUN`: set its `immediate_exit`, then
//! signal its thread (the signal interrupts a running or halted vCPU; the
//! flag covers a signal that lands just before `KVM_RUN`).

use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, Ordering::SeqCst};

use hyperv_flush::engine::VcpuKicker;
use vm_memory::GuestAddressSpace;

use super::steal_time::StealTimeRecord;

/// What a vCPU thread registers so others can kick it.
struct KickTarget {
    /// `&kvm_run.immediate_exit` of the vCPU's mapping; null when the vCPU
    /// thread has not registered or has unregistered.
    immediate_exit: AtomicPtr<u8>,
    /// `pthread_t` of the vCPU thread (valid while `immediate_exit` is set).
    thread: AtomicU64,
    /// The vCPU's steal-time record GPA + 1 (0 = none).
    steal_time: AtomicU64,
}

impl KickTarget {
    fn new() -> Self {
        Self {
            immediate_exit: AtomicPtr::new(std::ptr::null_mut()),
            thread: AtomicU64::new(0),
            steal_time: AtomicU64::new(0),
        }
    }

    /// Sets or clears `immediate_exit`; false if not registered.
    fn set_immediate_exit(&self, value: u8) -> bool {
        let ptr = self.immediate_exit.load(SeqCst);
        if ptr.is_null() {
            return false;
        }
        // SAFETY: `VcpuKickers::register`'s contract keeps `ptr` valid while
        // it is non-null; we only access the byte atomically, KVM reads it
        // at entry.
        let flag = unsafe { AtomicU8::from_ptr(ptr) };
        flag.store(value, SeqCst);
        true
    }
}

/// Every vCPU thread of a VM, as registered for kicks. Shared by the flush
/// path (kicks to complete flushes) and the VMM (kicks to stop).
pub struct VcpuKickers {
    targets: Box<[KickTarget]>,
    signal: libc::c_int,
}

impl VcpuKickers {
    /// Slots for `vcpus` vCPUs, kicked with `signal`.
    pub fn new(vcpus: usize, signal: libc::c_int) -> Self {
        Self {
            targets: (0..vcpus).map(|_| KickTarget::new()).collect(),
            signal,
        }
    }

    /// Registers the calling thread as vCPU `index`'s thread.
    ///
    /// # Safety
    ///
    /// `immediate_exit` must point to `immediate_exit` in the vCPU's
    /// `kvm_run` mapping and stay valid until [`VcpuKickers::unregister`].
    pub unsafe fn register(
        &self,
        index: usize,
        immediate_exit: *mut u8,
        steal_time: Option<&StealTimeRecord>,
    ) {
        let Some(target) = self.targets.get(index) else {
            return;
        };
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        target.thread.store(me as u64, SeqCst);
        target
            .steal_time
            .store(steal_time.map_or(0, |r| r.gpa() + 1), SeqCst);
        target.immediate_exit.store(immediate_exit, SeqCst);
    }

    /// Forgets vCPU `index`'s thread (before its `kvm_run` goes away).
    pub fn unregister(&self, index: usize) {
        if let Some(target) = self.targets.get(index) {
            target.immediate_exit.store(std::ptr::null_mut(), SeqCst);
        }
    }

    /// vCPU thread, before `KVM_RUN`: clears a kick that was not needed.
    pub fn clear_immediate_exit(&self, index: usize) {
        if let Some(target) = self.targets.get(index) {
            target.set_immediate_exit(0);
        }
    }

    /// Makes vCPU `index` leave `KVM_RUN` soon; no-op if not registered.
    pub fn kick(&self, index: usize) {
        let Some(target) = self.targets.get(index) else {
            return;
        };
        if !target.set_immediate_exit(1) {
            return;
        }
        let thread = target.thread.load(SeqCst) as libc::pthread_t;
        // SAFETY: `thread` is the live vCPU thread registered with a valid
        // pointer (the thread unregisters before it exits); the signal has
        // a handler (see `install_kick_signal_handler`).
        unsafe {
            libc::pthread_kill(thread, self.signal);
        }
    }

    /// Kicks every registered vCPU (VMM stop).
    pub fn kick_all(&self) {
        (0..self.targets.len()).for_each(|i| self.kick(i));
    }

    fn steal_time(&self, index: usize) -> Option<StealTimeRecord> {
        match self.targets.get(index)?.steal_time.load(SeqCst) {
            0 => None,
            gpa_plus_one => Some(StealTimeRecord::at(gpa_plus_one - 1)),
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
    pub fn kickers(&self) -> &VcpuKickers {
        &self.kickers
    }
}

impl<A: GuestAddressSpace> VcpuKicker for KvmKicker<A> {
    fn kick(&self, vcpu: usize) {
        self.kickers.kick(vcpu);
    }

    fn flush_if_preempted(&self, vcpu: usize) -> bool {
        self.kickers
            .steal_time(vcpu)
            .is_some_and(|record| record.flush_if_preempted(&*self.mem.memory()))
    }
}

extern "C" fn kick_signal_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs a no-op handler for the kick signal (its only job is to make
/// `KVM_RUN` return `EINTR`). VMMs that already own a vCPU kick signal
/// (Cloud Hypervisor: `SIGRTMIN`) pass that signal instead and skip this.
pub fn install_kick_signal_handler(signal: libc::c_int) -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(signal, kick_signal_handler)
}
