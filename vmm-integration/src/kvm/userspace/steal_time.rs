//! The flush executor on KVM without in-kernel Hyper-V: KVM's PV TLB
//! flush through the steal-time record (docs/host-facts.md §2; Linux
//! arch/x86/kvm/x86.c `record_steal_time`, which `xchg`s the `preempted`
//! byte to 0 at every entry and flushes the guest TLB if bit 1 was set).

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

use kvm_bindings::kvm_msr_entry;
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryError, Permissions, VolatileMemory};

use super::msrs::MSR_KVM_STEAL_TIME;

/// `KVM_MSR_ENABLED` (bit 0 of the MSR value).
const KVM_MSR_ENABLED: u64 = 1;
/// Offset of `preempted` in `struct kvm_steal_time`.
const PREEMPTED_OFFSET: u64 = 16;
/// `KVM_VCPU_PREEMPTED`.
pub const KVM_VCPU_PREEMPTED: u8 = 1 << 0;
/// `KVM_VCPU_FLUSH_TLB`.
pub const KVM_VCPU_FLUSH_TLB: u8 = 1 << 1;

/// Errors setting up the executor.
#[derive(Debug, Error)]
pub enum StealTimeError {
    /// The record address is not 64-byte aligned.
    #[error("Steal-time record {0:#x} is not 64-byte aligned")]
    Unaligned(u64),
    /// The record is not in guest memory.
    #[error("Steal-time record {0:#x} is outside guest memory")]
    Memory(u64, #[source] GuestMemoryError),
    /// KVM refused the MSR.
    #[error("KVM refused MSR_KVM_STEAL_TIME (needs KVM_FEATURE_STEAL_TIME)")]
    MsrRejected(#[source] Option<kvm_ioctls::Error>),
    /// KVM would not report the MSR.
    #[error("Cannot read MSR_KVM_STEAL_TIME")]
    MsrUnreadable(#[source] Option<kvm_ioctls::Error>),
}

/// One vCPU's steal-time record.
#[derive(Clone, Copy, Debug)]
pub struct StealTimeRecord {
    gpa: u64,
}

impl StealTimeRecord {
    /// Registers the record at `gpa` (64-byte aligned, VMM-owned memory
    /// the guest is not told about) with KVM, before the first `KVM_RUN`.
    pub fn register<M: GuestMemory + ?Sized>(
        vcpu: &VcpuFd,
        mem: &M,
        gpa: u64,
    ) -> Result<Self, StealTimeError> {
        if gpa % 64 != 0 {
            return Err(StealTimeError::Unaligned(gpa));
        }
        let record = Self { gpa };
        record.with_byte(mem, |_| ())?;
        record.write_msr(vcpu)?;
        Ok(record)
    }

    fn msr_value(&self) -> u64 {
        self.gpa | KVM_MSR_ENABLED
    }

    fn write_msr(&self, vcpu: &VcpuFd) -> Result<(), StealTimeError> {
        let msrs = kvm_bindings::Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_KVM_STEAL_TIME,
            data: self.msr_value(),
            ..Default::default()
        }])
        .map_err(|_| StealTimeError::MsrRejected(None))?;
        match vcpu.set_msrs(&msrs) {
            Ok(1) => Ok(()),
            Ok(_) => Err(StealTimeError::MsrRejected(None)),
            Err(e) => Err(StealTimeError::MsrRejected(Some(e))),
        }
    }

    /// Whether KVM still holds this registration. `kvm_vcpu_reset()`
    /// (Linux arch/x86/kvm/x86.c), which runs for INIT as well as RESET,
    /// clears it; then KVM never reads the record again and an armed flush
    /// is never executed. One `KVM_GET_MSRS` on the vCPU's own thread.
    pub fn is_registered(&self, vcpu: &VcpuFd) -> Result<bool, StealTimeError> {
        let mut msrs = kvm_bindings::Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_KVM_STEAL_TIME,
            ..Default::default()
        }])
        .map_err(|_| StealTimeError::MsrUnreadable(None))?;
        match vcpu.get_msrs(&mut msrs) {
            Ok(1) => Ok(msrs.as_slice()[0].data == self.msr_value()),
            Ok(_) => Err(StealTimeError::MsrUnreadable(None)),
            Err(e) => Err(StealTimeError::MsrUnreadable(Some(e))),
        }
    }

    /// Target's own thread, outside `KVM_RUN`: makes sure KVM holds the
    /// registration, restoring it if an INIT or RESET dropped it. Returns
    /// whether it had to be restored. Nothing but `kvm_vcpu_reset()` (run
    /// on this thread, inside `KVM_RUN`) or the VMM clears it: the guest
    /// cannot reach the MSR (the filter denies it), so the answer holds
    /// until this thread's next `KVM_RUN`.
    pub fn ensure_registered(&self, vcpu: &VcpuFd) -> Result<bool, StealTimeError> {
        if self.is_registered(vcpu)? {
            return Ok(false);
        }
        self.write_msr(vcpu)?;
        Ok(true)
    }

    /// A handle to an already registered record at `gpa`.
    pub(crate) fn at(gpa: u64) -> Self {
        Self { gpa }
    }

    /// The record's GPA.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    fn with_byte<M: GuestMemory + ?Sized, T>(
        &self,
        mem: &M,
        f: impl FnOnce(&AtomicU8) -> T,
    ) -> Result<T, StealTimeError> {
        let addr = GuestAddress(self.gpa + PREEMPTED_OFFSET);
        let slice = mem
            .get_slices(addr, 1, Permissions::ReadWrite)
            .and_then(|mut slices| {
                slices
                    .next()
                    .unwrap_or(Err(GuestMemoryError::InvalidGuestAddress(addr)))
            })
            .map_err(|e| StealTimeError::Memory(self.gpa, e))?;
        let byte = slice
            .get_atomic_ref::<AtomicU8>(0)
            .map_err(|e| StealTimeError::Memory(self.gpa, e.into()))?;
        Ok(f(byte))
    }

    /// Target's own thread, outside `KVM_RUN`: requests a full flush at the
    /// next entry. Only the target's thread may do this (docs/host-facts.md §2: KVM
    /// overwrites the byte while the vCPU is inside `KVM_RUN`).
    pub fn arm_flush<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<(), StealTimeError> {
        self.with_byte(mem, |b| {
            b.fetch_or(KVM_VCPU_FLUSH_TLB, SeqCst);
        })
    }

    /// Target's own thread, after `KVM_RUN` returned: whether an armed
    /// flush is still waiting. `record_steal_time()` `xchg`s the byte to 0
    /// and flushes before any guest instruction of the entry; a bit still
    /// set means KVM did not get there (the run ended before entering the
    /// guest, or an INIT/RESET dropped the registration).
    pub fn flush_still_armed<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
    ) -> Result<bool, StealTimeError> {
        self.with_byte(mem, |b| b.load(SeqCst) & KVM_VCPU_FLUSH_TLB != 0)
    }

    /// Initiator: if KVM marked the target preempted, turns that mark into
    /// PREEMPTED|FLUSH (what Linux guests do for KVM's PV flush). KVM does
    /// not touch the byte again until the target's next `record_steal_time`,
    /// which then flushes. Returns whether it took.
    pub fn flush_if_preempted<M: GuestMemory + ?Sized>(&self, mem: &M) -> bool {
        self.with_byte(mem, |b| {
            b.compare_exchange(
                KVM_VCPU_PREEMPTED,
                KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB,
                SeqCst,
                SeqCst,
            )
            .is_ok()
        })
        .unwrap_or(false)
    }

    /// The raw `preempted` byte (tests and diagnostics).
    pub fn preempted_byte<M: GuestMemory + ?Sized>(&self, mem: &M) -> Option<u8> {
        self.with_byte(mem, |b| b.load(SeqCst)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn record_at(gpa: u64) -> (GuestMemoryMmap, StealTimeRecord) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        (mem, StealTimeRecord { gpa })
    }

    // The host never reports PREEMPTED on our CI hosts (docs/host-facts.md §2), so
    // the initiator's shortcut is tested against a simulated record.
    #[test]
    fn preempted_record_takes_the_flush_bit_without_a_kick() {
        let (mem, rec) = record_at(0x9040);
        assert!(!rec.flush_if_preempted(&mem), "not preempted: must kick");
        mem.write_obj(KVM_VCPU_PREEMPTED, GuestAddress(0x9040 + PREEMPTED_OFFSET))
            .unwrap();
        assert!(rec.flush_if_preempted(&mem));
        assert_eq!(
            rec.preempted_byte(&mem),
            Some(KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB)
        );
        // Already marked: a second initiator does not need to kick either
        // way, but the exchange only succeeds from the plain PREEMPTED state.
        assert!(!rec.flush_if_preempted(&mem));
    }

    #[test]
    fn arming_sets_only_the_flush_bit() {
        let (mem, rec) = record_at(0x9000);
        rec.arm_flush(&mem).unwrap();
        assert_eq!(rec.preempted_byte(&mem), Some(KVM_VCPU_FLUSH_TLB));
        let (mem, rec) = record_at(1 << 30);
        assert!(rec.arm_flush(&mem).is_err());
    }
}
