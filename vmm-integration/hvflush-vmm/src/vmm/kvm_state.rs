//! The state KVM holds for a VM and its vCPUs, saved and loaded for
//! snapshots: registers, MSRs, the local APIC, the in-kernel PIC and
//! IOAPIC, and the kvmclock (this VMM creates no PIT).

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, Msrs, kvm_clock_data,
    kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

/// A KVM call of the snapshot code failed.
#[derive(Debug, thiserror::Error)]
#[error("KVM: cannot {what}")]
pub struct KvmStateError {
    what: &'static str,
    #[source]
    source: kvm_ioctls::Error,
}

fn kvm<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, KvmStateError> {
    r.map_err(|source| KvmStateError { what, source })
}

/// One vCPU, as KVM holds it while the vCPU is outside `KVM_RUN`.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    /// x87, SSE and AVX state (a superset of `KVM_GET_FPU`'s).
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    lapic: kvm_lapic_state,
    mp_state: kvm_mp_state,
    events: kvm_vcpu_events,
    debugregs: kvm_debugregs,
    /// Every MSR of KVM's save list that this vCPU could read.
    msrs: Vec<(u32, u64)>,
}

/// The MSRs KVM saves and restores (`KVM_GET_MSR_INDEX_LIST`).
pub fn msr_list(host: &Kvm) -> Result<Vec<u32>, KvmStateError> {
    Ok(kvm("list the MSRs", host.get_msr_index_list())?
        .as_slice()
        .to_vec())
}

impl VcpuState {
    /// Reads the state of `vcpu`, on its own thread, after a `KVM_RUN` with
    /// `immediate_exit` completed any pending I/O and register sync.
    pub fn save(vcpu: &VcpuFd, msr_list: &[u32]) -> Result<Self, KvmStateError> {
        let mut msrs = Vec::with_capacity(msr_list.len());
        // One at a time: KVM_GET_MSRS stops at the first MSR it cannot read
        // (some of the list depend on CPUID or host features).
        for &index in msr_list {
            let mut one = kvm(
                "build an MSR list",
                Msrs::from_entries(&[kvm_msr_entry {
                    index,
                    ..Default::default()
                }])
                .map_err(|_| kvm_ioctls::Error::new(libc::ENOMEM)),
            )?;
            if let Ok(1) = vcpu.get_msrs(&mut one) {
                msrs.push((index, one.as_slice()[0].data));
            }
        }
        Ok(Self {
            regs: kvm("read the registers", vcpu.get_regs())?,
            sregs: kvm("read the system registers", vcpu.get_sregs())?,
            xsave: kvm("read the XSAVE area", vcpu.get_xsave())?,
            xcrs: kvm("read the XCRs", vcpu.get_xcrs())?,
            lapic: kvm("read the local APIC", vcpu.get_lapic())?,
            mp_state: kvm("read the MP state", vcpu.get_mp_state())?,
            events: kvm("read the vCPU events", vcpu.get_vcpu_events())?,
            debugregs: kvm("read the debug registers", vcpu.get_debug_regs())?,
            msrs,
        })
    }

    /// Loads the state into a new vCPU (CPUID already set), before its
    /// first `KVM_RUN`. The order follows what each call depends on: MP
    /// state and registers, then segments and paging, the FPU, the local
    /// APIC, the MSRs (the TSC among them), and pending events last.
    pub fn restore(&self, vcpu: &VcpuFd) -> Result<(), KvmStateError> {
        kvm("set the MP state", vcpu.set_mp_state(self.mp_state))?;
        kvm("set the registers", vcpu.set_regs(&self.regs))?;
        kvm("set the system registers", vcpu.set_sregs(&self.sregs))?;
        // SAFETY: this VMM never enables dynamically sized XSTATE features
        // (no arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM)), so KVM's XSAVE area for
        // its vCPUs is the legacy 4096 bytes of `kvm_xsave`, all of which
        // `self.xsave` holds; KVM reads no further.
        kvm("set the XSAVE area", unsafe { vcpu.set_xsave(&self.xsave) })?;
        kvm("set the XCRs", vcpu.set_xcrs(&self.xcrs))?;
        kvm("set the local APIC", vcpu.set_lapic(&self.lapic))?;
        let entries: Vec<kvm_msr_entry> = self
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = kvm(
            "build the MSR list",
            Msrs::from_entries(&entries).map_err(|_| kvm_ioctls::Error::new(libc::E2BIG)),
        )?;
        let set = kvm("set the MSRs", vcpu.set_msrs(&msrs))?;
        if set != entries.len() {
            return Err(KvmStateError {
                what: "set every saved MSR",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        kvm("set the vCPU events", vcpu.set_vcpu_events(&self.events))?;
        kvm(
            "set the debug registers",
            vcpu.set_debug_regs(&self.debugregs),
        )?;
        Ok(())
    }
}

/// The VM-wide in-kernel devices and clock.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    clock: kvm_clock_data,
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, KvmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    kvm("read the irqchip", vm.get_irqchip(&mut chip))?;
    Ok(chip)
}

impl VmState {
    /// Reads the VM's devices and clock, with every vCPU outside `KVM_RUN`.
    pub fn save(vm: &VmFd) -> Result<Self, KvmStateError> {
        Ok(Self {
            pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
            clock: kvm("read the clock", vm.get_clock())?,
        })
    }

    /// Loads them into a new VM (irqchip created) before its vCPUs run.
    pub fn restore(&self, vm: &VmFd) -> Result<(), KvmStateError> {
        for chip in [&self.pic_master, &self.pic_slave, &self.ioapic] {
            kvm("set the irqchip", vm.set_irqchip(chip))?;
        }
        // KVM_SET_CLOCK takes no flags but KVM_CLOCK_REALTIME.
        let clock = kvm_clock_data {
            flags: 0,
            ..self.clock
        };
        kvm("set the clock", vm.set_clock(&clock))?;
        Ok(())
    }
}
