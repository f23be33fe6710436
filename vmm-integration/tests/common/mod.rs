//! Host facts shared by the tests that need no KVM.
#![allow(dead_code)]

use vmm_integration::facts::{
    CpuVendor, HostFacts, KvmFacts, KvmHypervCaps, KvmUserspaceCaps, NestedFacts,
};

/// A KVM host without in-kernel Hyper-V: only userspace mode works.
pub fn userspace_host() -> HostFacts {
    HostFacts::kvm(KvmFacts {
        vendor: CpuVendor::Intel,
        hyperv: KvmHypervCaps::default(),
        supported_hv_cpuid: None,
        nested: NestedFacts::default(),
        userspace: all_userspace_caps(),
    })
}

/// Every prerequisite of the userspace path.
pub fn all_userspace_caps() -> KvmUserspaceCaps {
    KvmUserspaceCaps {
        user_space_msr: true,
        msr_filter: true,
        sync_regs: true,
        immediate_exit: true,
        pv_tlb_flush: true,
        steal_time: true,
    }
}
