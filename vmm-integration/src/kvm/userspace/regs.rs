//! Hypercall registers of a KVM vCPU, read through `KVM_CAP_SYNC_REGS`
//! (the registers come with the exit: no ioctl) and XMM through one
//! `KVM_GET_FPU`, only for fast calls.

use hyperv_flush::abi::HypercallControl;
use hyperv_flush::decode::HypercallRegisters;
use kvm_ioctls::VcpuFd;

/// Register values of one hypercall exit.
pub struct KvmHypercallRegs {
    rcx: u64,
    rdx: u64,
    r8: u64,
    xmm: [u128; 6],
}

impl KvmHypercallRegs {
    /// Reads RCX/RDX/R8 from the synced registers of the current exit and,
    /// for a fast call only, XMM0-5 with one `KVM_GET_FPU`.
    pub fn read(vcpu: &VcpuFd) -> Result<Self, kvm_ioctls::Error> {
        let regs = vcpu.sync_regs().regs;
        let xmm = if HypercallControl::from(regs.rcx).fast() {
            let fpu = vcpu.get_fpu()?;
            std::array::from_fn(|i| u128::from_le_bytes(fpu.xmm[i]))
        } else {
            [0; 6]
        };
        Ok(Self {
            rcx: regs.rcx,
            rdx: regs.rdx,
            r8: regs.r8,
            xmm,
        })
    }
}

impl HypercallRegisters for KvmHypercallRegs {
    fn control(&self) -> u64 {
        self.rcx
    }
    fn input(&self) -> u64 {
        self.rdx
    }
    fn output(&self) -> u64 {
        self.r8
    }
    fn xmm(&mut self) -> [u128; 6] {
        self.xmm
    }
}
