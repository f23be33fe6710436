//! Who may make a Hyper-V hypercall through the port stub, with KVM's
//! rules for the real VMCALL/VMMCALL (Linux arch/x86/kvm/x86.c
//! `kvm_emulate_hypercall`, arch/x86/kvm/hyperv.c `kvm_hv_hypercall`):
//!
//! * While GUEST_OS_ID is 0 the Hyper-V handler does not run: the
//!   instruction takes KVM's own hypercall path, which answers
//!   `-KVM_EPERM` from CPL > 0 and otherwise `-KVM_ENOSYS` (RAX then holds
//!   a KVM hypercall number; none is served here), truncated to 32 bits
//!   outside 64-bit mode. Nothing is flushed.
//! * Otherwise a call from CPL > 0 gets #UD, as in KVM and the TLFS. So
//!   does a call from outside 64-bit mode: KVM serves 32-bit protected
//!   mode with the 32-bit register convention, this path decodes only the
//!   64-bit one (issue 9; documented in docs/conformance.md, R35).

use kvm_bindings::kvm_sregs;
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// `KVM_ENOSYS` (include/uapi/linux/kvm_para.h).
pub const KVM_ENOSYS: u64 = 1000;
/// `KVM_EPERM` (include/uapi/linux/kvm_para.h).
pub const KVM_EPERM: u64 = 1;
/// `-KVM_ENOSYS` in RAX: 0xFFFFFFFFFFFFFC18.
pub const RAX_KVM_ENOSYS: u64 = KVM_ENOSYS.wrapping_neg();

const CR0_PE: u64 = 1 << 0;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;

/// What a hypercall exit may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallGate {
    /// A Hyper-V hypercall from CPL 0 in 64-bit mode: decode and serve it.
    Serve,
    /// Inject #UD; RAX unchanged, RIP at the calling instruction.
    InvalidOpcode,
    /// Not a Hyper-V hypercall (GUEST_OS_ID is 0): complete it with this
    /// RAX and flush nothing.
    NotHyperV {
        /// The value KVM's own hypercall path leaves in RAX.
        rax: u64,
    },
}

/// The calling vCPU's privilege and mode, from the registers the exit
/// synced (`KVM_CAP_SYNC_REGS`: sregs and RFLAGS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerMode {
    /// Current privilege level: SS.DPL in protected mode (what KVM's
    /// `get_cpl` reads on VMX), 3 in virtual-8086 mode, 0 in real mode.
    pub cpl: u8,
    /// 64-bit mode: CR0.PE, EFER.LMA and CS.L (KVM `is_64_bit_mode`).
    pub long_mode: bool,
}

impl CallerMode {
    /// Reads the mode from synced system registers and RFLAGS.
    pub fn from_sregs(sregs: &kvm_sregs, rflags: u64) -> Self {
        let protected = sregs.cr0 & CR0_PE != 0;
        let cpl = match (protected, rflags & RFLAGS_VM != 0) {
            (false, _) => 0,
            (true, true) => 3,
            (true, false) => sregs.ss.dpl & 3,
        };
        Self {
            cpl,
            long_mode: protected && sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0,
        }
    }
}

/// The gate for a call from `mode` while GUEST_OS_ID is `guest_os_id`.
pub fn hypercall_gate(mode: CallerMode, guest_os_id: u64) -> HypercallGate {
    if guest_os_id == 0 {
        let ret = if mode.cpl != 0 { KVM_EPERM } else { KVM_ENOSYS }.wrapping_neg();
        let rax = if mode.long_mode {
            ret
        } else {
            u64::from(ret as u32)
        };
        return HypercallGate::NotHyperV { rax };
    }
    if mode.cpl != 0 || !mode.long_mode {
        HypercallGate::InvalidOpcode
    } else {
        HypercallGate::Serve
    }
}

/// Injects #UD for a refused hypercall made with `out <port>, al`, RAX
/// unchanged, on the vCPU's thread during the exit.
///
/// Where the exit reports RIP past the 2-byte `out imm8` (KVM's
/// instruction emulator, which this project's CI hosts run guest code in,
/// docs/host-facts.md §1), RIP is moved back onto it, so the fault points at the
/// calling instruction as KVM's #UD for VMCALL does (`kvm_hv_hypercall`
/// queues the exception without skipping the instruction). The two bytes
/// before RIP tell: `E6 <port>` there (read through `KVM_TRANSLATE`) means
/// RIP was advanced. Otherwise RIP is left as it is: hardware VMX/SVM exits
/// report RIP at the `out` and advance it at re-entry unless userspace
/// changed it (`complete_fast_pio_out`), so there the fault points just
/// past the `out`. Registers are written with `KVM_SET_REGS` before
/// `KVM_SET_VCPU_EVENTS` because setting registers drops a queued
/// exception; the caller must not mark the synced registers dirty.
pub fn inject_invalid_opcode<M: GuestMemory + ?Sized>(
    vcpu: &VcpuFd,
    mem: &M,
    port: u16,
) -> Result<(), kvm_ioctls::Error> {
    const OUT_IMM8_AL: u8 = 0xe6;
    const UD_VECTOR: u8 = 6;
    let mut regs = vcpu.get_regs()?;
    let before = regs.rip.wrapping_sub(2);
    let advanced = vcpu.translate_gva(before).is_ok_and(|t| {
        let mut code = [0u8; 2];
        t.valid != 0
            && t.physical_address & 0xfff <= 0xffe
            && mem
                .read_slice(&mut code, GuestAddress(t.physical_address))
                .is_ok()
            && code == [OUT_IMM8_AL, port as u8]
    });
    if advanced {
        regs.rip = before;
        vcpu.set_regs(&regs)?;
    }
    let mut events = vcpu.get_vcpu_events()?;
    events.exception.injected = 1;
    events.exception.nr = UD_VECTOR;
    events.exception.has_error_code = 0;
    events.exception.error_code = 0;
    events.exception.pending = 0;
    vcpu.set_vcpu_events(&events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sregs(cr0: u64, efer: u64, cs_l: u8, ss_dpl: u8) -> kvm_sregs {
        let mut s = kvm_sregs {
            cr0,
            efer,
            ..Default::default()
        };
        s.cs.l = cs_l;
        s.ss.dpl = ss_dpl;
        s
    }

    const LONG: u64 = EFER_LMA | 1 << 8;

    // conformance: R35
    #[test]
    fn only_cpl0_64_bit_callers_are_served() {
        let os_id = 0x8100_0000_0000_0001;
        let ring0 = CallerMode::from_sregs(&sregs(0x8001_0033, LONG, 1, 0), 2);
        assert_eq!(
            ring0,
            CallerMode {
                cpl: 0,
                long_mode: true
            }
        );
        assert_eq!(hypercall_gate(ring0, os_id), HypercallGate::Serve);
        let ring3 = CallerMode::from_sregs(&sregs(0x8001_0033, LONG, 1, 3), 2);
        assert_eq!(hypercall_gate(ring3, os_id), HypercallGate::InvalidOpcode);
        // Compatibility mode (CS.L = 0), 32-bit protected mode, real mode
        // and virtual-8086 mode.
        let compat = CallerMode::from_sregs(&sregs(0x8001_0033, LONG, 0, 0), 2);
        let prot32 = CallerMode::from_sregs(&sregs(0x11, 0, 0, 0), 2);
        let real = CallerMode::from_sregs(&sregs(0x10, 0, 0, 0), 2);
        let vm86 = CallerMode::from_sregs(&sregs(0x11, 0, 0, 0), 2 | RFLAGS_VM);
        assert_eq!(vm86.cpl, 3);
        assert_eq!(real.cpl, 0);
        for mode in [compat, prot32, real, vm86] {
            assert!(!mode.long_mode);
            assert_eq!(hypercall_gate(mode, os_id), HypercallGate::InvalidOpcode);
        }
    }

    // conformance: R36
    #[test]
    fn without_guest_os_id_it_is_kvms_own_hypercall_path() {
        let ring0 = CallerMode {
            cpl: 0,
            long_mode: true,
        };
        assert_eq!(
            hypercall_gate(ring0, 0),
            HypercallGate::NotHyperV {
                rax: 0xFFFF_FFFF_FFFF_FC18
            }
        );
        assert_eq!(RAX_KVM_ENOSYS, 0xFFFF_FFFF_FFFF_FC18);
        let ring3 = CallerMode {
            cpl: 3,
            long_mode: true,
        };
        assert_eq!(
            hypercall_gate(ring3, 0),
            HypercallGate::NotHyperV { rax: u64::MAX }
        );
        let real = CallerMode {
            cpl: 0,
            long_mode: false,
        };
        assert_eq!(
            hypercall_gate(real, 0),
            HypercallGate::NotHyperV { rax: 0xFFFF_FC18 }
        );
    }
}
