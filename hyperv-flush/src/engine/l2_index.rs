//! Index from L2 (vm_id, vp_id) to the vCPUs running that nested context,
//! so L2 routing costs O(targets), not O(vCPUs) like KVM's scan
//! (arch/x86/kvm/hyperv.c `kvm_hv_flush_tlb`, guest-mode branch).

use std::collections::HashMap;

use super::vcpu_set::VcpuSet;
use crate::decode::ProcessorSet;

#[derive(Default)]
struct L2Vm {
    /// vCPUs currently running any VP of this L2 VM.
    members: Vec<usize>,
    /// vp_id → vCPUs running it (usually one).
    by_vp: HashMap<u32, Vec<usize>>,
}

/// The index (guarded by the partition's RwLock).
#[derive(Default)]
pub(crate) struct L2Index {
    vms: HashMap<u64, L2Vm>,
}

impl L2Index {
    pub(crate) fn insert(&mut self, vm_id: u64, vp_id: u32, vcpu: usize) {
        let vm = self.vms.entry(vm_id).or_default();
        vm.members.push(vcpu);
        vm.by_vp.entry(vp_id).or_default().push(vcpu);
    }

    pub(crate) fn remove(&mut self, vm_id: u64, vp_id: u32, vcpu: usize) {
        let Some(vm) = self.vms.get_mut(&vm_id) else {
            return;
        };
        vm.members.retain(|v| *v != vcpu);
        if let Some(list) = vm.by_vp.get_mut(&vp_id) {
            list.retain(|v| *v != vcpu);
            if list.is_empty() {
                vm.by_vp.remove(&vp_id);
            }
        }
        if vm.members.is_empty() {
            self.vms.remove(&vm_id);
        }
    }

    /// vCPUs running a VP of `vm_id` that is in `set`; walks whichever is
    /// smaller, the set or the VM's members.
    pub(crate) fn route(&self, vm_id: u64, set: &ProcessorSet, out: &mut VcpuSet) {
        let Some(vm) = self.vms.get(&vm_id) else {
            return;
        };
        match set.len() {
            Some(n) if (n as usize) < vm.members.len() => {
                for vp in set.vp_indices() {
                    for &v in vm.by_vp.get(&vp).into_iter().flatten() {
                        out.insert(v);
                    }
                }
            }
            Some(_) => {
                for (vp, vcpus) in &vm.by_vp {
                    if set.contains(*vp) {
                        vcpus.iter().for_each(|&v| out.insert(v));
                    }
                }
            }
            None => vm.members.iter().for_each(|&v| out.insert(v)),
        }
    }
}
