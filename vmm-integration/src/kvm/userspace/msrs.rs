//! The Hyper-V synthetic MSRs this component owns, emulated in userspace
//! with KVM semantics (arch/x86/kvm/hyperv.c `kvm_hv_set_msr_pw`,
//! `kvm_hv_get_msr`): GUEST_OS_ID, HYPERCALL (partition-wide) and
//! VP_INDEX (per vCPU, read-only to the guest). Any other MSR of the
//! 0x40000000-0x400001FF range (crash, reenlightenment and TSC-invariant
//! MSRs included), and `MSR_KVM_STEAL_TIME`, is #GP.

use std::sync::Mutex;

use hyperv_flush::abi::msr;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// `MSR_KVM_STEAL_TIME`: owned by the VMM (flush executor), hidden from the guest.
pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;

/// The hypercall page stub: `out imm8, al; ret`. The 8-bit immediate form
/// traps to the VMM (KVM_EXIT_IO) without clobbering any register but
/// RAX/flags, so RCX/RDX/R8 and XMM reach the VMM as the guest set them.
/// Encoding: Intel SDM Vol. 2B "OUT" (E6 ib) and "RET" (C3).
pub fn hypercall_stub(port: u8) -> [u8; 3] {
    const OUT_IMM8_AL: u8 = 0xe6;
    const RET_NEAR: u8 = 0xc3;
    [OUT_IMM8_AL, port, RET_NEAR]
}

/// What an MSR access resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrOutcome {
    /// Not an MSR of this component.
    NotMine,
    /// Completed; for reads, the value.
    Done(u64),
    /// Inject #GP.
    Fault,
}

#[derive(Default)]
struct PartitionMsrs {
    guest_os_id: u64,
    hypercall: u64,
}

/// Partition-wide MSR state.
pub struct HypervMsrs {
    state: Mutex<PartitionMsrs>,
    port: u8,
}

impl HypervMsrs {
    /// State for a partition whose stub traps through `port`.
    pub fn new(port: u8) -> Self {
        Self {
            state: Mutex::new(PartitionMsrs::default()),
            port,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionMsrs> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `index` is handled here.
    pub fn owns(index: u32) -> bool {
        (msr::SYNTHETIC_FIRST..=msr::SYNTHETIC_LAST).contains(&index) || index == MSR_KVM_STEAL_TIME
    }

    /// A guest RDMSR. `vp_index` is the reading vCPU's VP index.
    pub fn read(&self, index: u32, vp_index: Option<u32>) -> MsrOutcome {
        if !Self::owns(index) {
            return MsrOutcome::NotMine;
        }
        match index {
            msr::GUEST_OS_ID => MsrOutcome::Done(self.lock().guest_os_id),
            msr::HYPERCALL => MsrOutcome::Done(self.lock().hypercall),
            msr::VP_INDEX => vp_index.map_or(MsrOutcome::Fault, |vp| MsrOutcome::Done(vp.into())),
            _ => MsrOutcome::Fault,
        }
    }

    /// A guest WRMSR; enabling the hypercall page writes the stub into it.
    pub fn write<M: GuestMemory + ?Sized>(&self, index: u32, value: u64, mem: &M) -> MsrOutcome {
        if !Self::owns(index) {
            return MsrOutcome::NotMine;
        }
        let mut state = self.lock();
        match index {
            msr::GUEST_OS_ID => {
                state.guest_os_id = value;
                // A zero guest OS ID disables the hypercall page (KVM).
                if value == 0 {
                    state.hypercall &= !msr::HYPERCALL_ENABLE;
                }
                MsrOutcome::Done(0)
            }
            // Ignored until the guest identifies itself (KVM).
            msr::HYPERCALL if state.guest_os_id == 0 => MsrOutcome::Done(0),
            msr::HYPERCALL if value & msr::HYPERCALL_ENABLE == 0 => {
                state.hypercall = value;
                MsrOutcome::Done(0)
            }
            msr::HYPERCALL => {
                let page = GuestAddress(value & !0xfff);
                let stub = hypercall_stub(self.port);
                // The whole stub must be RAM before a byte is written: a
                // page where RAM ends inside the stub would otherwise get
                // its first bytes and the guest a #GP (found by fuzzing,
                // tests/fuzz `msrs`).
                if !mem.check_range(page, stub.len(), Permissions::Write) {
                    return MsrOutcome::Fault;
                }
                match mem.write_slice(&stub, page) {
                    Ok(()) => {
                        state.hypercall = value;
                        MsrOutcome::Done(0)
                    }
                    Err(_) => MsrOutcome::Fault,
                }
            }
            _ => MsrOutcome::Fault,
        }
    }

    /// The current HYPERCALL MSR value (for snapshots).
    pub fn hypercall_msr(&self) -> u64 {
        self.lock().hypercall
    }

    /// The current GUEST_OS_ID value (for snapshots).
    pub fn guest_os_id(&self) -> u64 {
        self.lock().guest_os_id
    }

    /// Restores both partition-wide MSRs (after a snapshot restore; the
    /// hypercall page contents travel with guest memory).
    pub fn restore(&self, guest_os_id: u64, hypercall: u64) {
        let mut state = self.lock();
        state.guest_os_id = guest_os_id;
        state.hypercall = hypercall;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn hypercall_enable_is_ignored_until_guest_os_id_is_set() {
        let (m, msrs) = (mem(), HypervMsrs::new(0x99));
        assert_eq!(msrs.write(msr::HYPERCALL, 0x2001, &m), MsrOutcome::Done(0));
        assert_eq!(msrs.read(msr::HYPERCALL, None), MsrOutcome::Done(0));
        msrs.write(msr::GUEST_OS_ID, 0x8100, &m);
        msrs.write(msr::HYPERCALL, 0x2001, &m);
        assert_eq!(msrs.read(msr::HYPERCALL, None), MsrOutcome::Done(0x2001));
        let mut stub = [0u8; 3];
        m.read_slice(&mut stub, GuestAddress(0x2000)).unwrap();
        assert_eq!(stub, [0xe6, 0x99, 0xc3]);
    }

    #[test]
    fn zero_guest_os_id_disables_and_relocation_rewrites() {
        let (m, msrs) = (mem(), HypervMsrs::new(0x99));
        msrs.write(msr::GUEST_OS_ID, 1, &m);
        msrs.write(msr::HYPERCALL, 0x3001, &m);
        msrs.write(msr::HYPERCALL, 0x5001, &m);
        let mut stub = [0u8; 3];
        m.read_slice(&mut stub, GuestAddress(0x5000)).unwrap();
        assert_eq!(stub[0], 0xe6);
        msrs.write(msr::GUEST_OS_ID, 0, &m);
        assert_eq!(msrs.read(msr::HYPERCALL, None), MsrOutcome::Done(0x5000));
    }

    #[test]
    fn page_outside_ram_and_foreign_msrs_fault() {
        let (m, msrs) = (mem(), HypervMsrs::new(0x99));
        msrs.write(msr::GUEST_OS_ID, 1, &m);
        assert_eq!(
            msrs.write(msr::HYPERCALL, 1 << 40 | 1, &m),
            MsrOutcome::Fault
        );
        assert_eq!(msrs.write(msr::VP_INDEX, 3, &m), MsrOutcome::Fault);
        assert_eq!(msrs.read(0x4000_0010, None), MsrOutcome::Fault);
        assert_eq!(msrs.read(MSR_KVM_STEAL_TIME, Some(0)), MsrOutcome::Fault);
        assert_eq!(msrs.read(msr::VP_INDEX, Some(7)), MsrOutcome::Done(7));
        assert_eq!(msrs.read(0x10, Some(0)), MsrOutcome::NotMine);
        assert_eq!(msrs.read(0x4000_0200, Some(0)), MsrOutcome::NotMine);
    }

    #[test]
    fn a_page_that_is_partly_ram_faults_and_is_not_written() {
        // RAM ends one byte into the page: the stub does not fit.
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2001)]).unwrap();
        let msrs = HypervMsrs::new(0x99);
        msrs.write(msr::GUEST_OS_ID, 1, &m);
        assert_eq!(msrs.write(msr::HYPERCALL, 0x2001, &m), MsrOutcome::Fault);
        let mut byte = [0u8; 1];
        m.read_slice(&mut byte, GuestAddress(0x2000)).unwrap();
        assert_eq!(byte, [0], "nothing written");
        assert_eq!(msrs.read(msr::HYPERCALL, None), MsrOutcome::Done(0));
    }

    // conformance: R37
    #[test]
    fn crash_reenlightenment_and_tsc_invariant_msrs_fault() {
        let (m, msrs) = (mem(), HypervMsrs::new(0x99));
        msrs.write(msr::GUEST_OS_ID, 1, &m);
        let range = (msr::CRASH_FIRST..=msr::CRASH_LAST)
            .chain(msr::REENLIGHTENMENT_CONTROL..=msr::TSC_EMULATION_STATUS)
            .chain([msr::TSC_INVARIANT_CONTROL, msr::SYNTHETIC_LAST]);
        for index in range {
            assert!(HypervMsrs::owns(index), "{index:#x}");
            assert_eq!(msrs.read(index, Some(0)), MsrOutcome::Fault, "{index:#x}");
            assert_eq!(msrs.write(index, 1, &m), MsrOutcome::Fault, "{index:#x}");
        }
    }
}
