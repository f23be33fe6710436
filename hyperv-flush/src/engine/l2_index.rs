//! Index from L2 (vm_id, vp_id) to the vCPUs running that nested context,
//! so L2 routing costs O(targets), not O(vCPUs) like KVM's scan
//! (arch/x86/kvm/hyperv.c `kvm_hv_flush_tlb`, guest-mode branch).
//!
//! The index also keeps every vCPU's loaded context and the slot of its
//! L2 VM, so routing a request needs neither the caller's context mutex
//! nor a hash lookup: one read lock, then bank words. vp_ids of a sparse
//! set are < 4096 (64 banks × 64, TLFS 6.0 §7.6.2 "HV_VP_SET"), so each VM
//! keeps a bitmap of the vp_ids present and, per bank in use, a table of
//! the vCPU running each of its 64 vp_ids; a request's bank ANDed with the
//! VM's present word names the hits directly, each one table load.

use std::collections::HashMap;

use super::vcpu_set::{SetBits, VcpuSet};
use super::vcpu_slot::NestedContext;
use crate::decode::ProcessorSet;

/// VP ids a sparse set can name (64 banks of 64).
const VP_BANKS: usize = 64;

/// The vCPUs running VPs of one L2 VM.
struct L2Vm {
    /// Bit `b`: `present[b]` is non-zero.
    present_banks: u64,
    /// vp_ids (< 4096) run by at least one vCPU.
    present: [u64; VP_BANKS],
    /// Bit `b`: bank `b` has a table (it had a present vp_id since the VM
    /// slot was last reset). A superset of `present_banks`.
    tabled_banks: u64,
    /// For a tabled bank: its index in `tables`.
    table_of: [u8; VP_BANKS],
    /// Per tabled bank, the (first) vCPU running each of its vp_ids
    /// (meaningful where `present` has the bit). At most 64 tables, so a
    /// VM uses at most 8 KiB however sparse its vp_ids are.
    tables: Vec<[u16; 64]>,
    /// Further vCPUs on an already present vp_id, as (vp_id, vCPU). Only
    /// a misbehaving L1 runs one VP on two vCPUs at once: normally empty.
    extra: Vec<(u32, u32)>,
    /// Every vCPU running this VM, including vp_ids ≥ 4096 (which only a
    /// flush of all processors reaches, as in KVM).
    members: VcpuSet,
}

impl Default for L2Vm {
    fn default() -> Self {
        Self {
            present_banks: 0,
            present: [0; VP_BANKS],
            tabled_banks: 0,
            table_of: [0; VP_BANKS],
            tables: Vec::new(),
            extra: Vec::new(),
            members: VcpuSet::default(),
        }
    }
}

impl L2Vm {
    /// The table entry of `vp` (< 4096), creating the bank's table.
    fn entry(&mut self, vp: u32) -> &mut u16 {
        let bank = vp as usize / 64;
        if self.tabled_banks & (1 << bank) == 0 {
            self.tabled_banks |= 1 << bank;
            self.table_of[bank] = self.tables.len() as u8;
            self.tables.push([0; 64]);
        }
        &mut self.tables[usize::from(self.table_of[bank])][vp as usize % 64]
    }

    fn insert(&mut self, vp: u32, vcpu: u32) {
        self.members.insert(vcpu as usize);
        if vp as usize >= VP_BANKS * 64 {
            return;
        }
        let (bank, bit) = (vp as usize / 64, 1u64 << (vp % 64));
        if self.present[bank] & bit != 0 {
            self.extra.push((vp, vcpu));
            return;
        }
        *self.entry(vp) = vcpu as u16;
        self.present[bank] |= bit;
        self.present_banks |= 1 << bank;
    }

    fn remove(&mut self, vp: u32, vcpu: u32) {
        self.members.remove(vcpu as usize);
        if vp as usize >= VP_BANKS * 64 {
            return;
        }
        if let Some(i) = self.extra.iter().position(|&e| e == (vp, vcpu)) {
            self.extra.swap_remove(i);
            return;
        }
        let (bank, bit) = (vp as usize / 64, 1u64 << (vp % 64));
        if self.present[bank] & bit == 0 || u32::from(*self.entry(vp)) != vcpu {
            return;
        }
        // Another vCPU still runs this vp_id: it takes the entry.
        if let Some(i) = self.extra.iter().position(|&(v, _)| v == vp) {
            *self.entry(vp) = self.extra.swap_remove(i).1 as u16;
            return;
        }
        self.present[bank] &= !bit;
        if self.present[bank] == 0 {
            self.present_banks &= !(1 << bank);
        }
    }

    /// Adds the vCPUs running a vp_id in `set` to `out`.
    fn route(&self, set: &ProcessorSet, out: &mut VcpuSet<[u64]>) {
        let Some((valid_bank_mask, banks)) = set.banks() else {
            out.union_with(&self.members);
            return;
        };
        for bank in SetBits(valid_bank_mask & self.present_banks) {
            let Some(table) = self.tables.get(usize::from(self.table_of[bank])) else {
                continue;
            };
            let bits = banks.get(bank).copied().unwrap_or(0);
            for bit in SetBits(bits & self.present[bank]) {
                out.insert(usize::from(table[bit]));
            }
        }
        for &(vp, vcpu) in &self.extra {
            if set.contains(vp) {
                out.insert(vcpu as usize);
            }
        }
    }
}

/// The index (guarded by the partition's RwLock).
pub(crate) struct L2Index {
    /// VM slots; a slot without members is on `free`. At most one slot
    /// per vCPU is ever in use, so this stays bounded by the vCPU count.
    vms: Vec<L2Vm>,
    free: Vec<u32>,
    /// vm_id → slot. Only context changes look here (SipHash: vm_ids
    /// come from L1), never routing.
    slot_of: HashMap<u64, u32>,
    /// Per vCPU: its context and the slot of its VM.
    current: Box<[Option<(NestedContext, u32)>]>,
}

impl L2Index {
    pub(crate) fn new(vcpus: usize) -> Self {
        Self {
            vms: Vec::new(),
            free: Vec::new(),
            slot_of: HashMap::new(),
            current: vec![None; vcpus].into_boxed_slice(),
        }
    }

    /// Records the context loaded on `vcpu` (`None`: released).
    pub(crate) fn set(&mut self, vcpu: usize, context: Option<NestedContext>) {
        let Some(current) = self.current.get_mut(vcpu) else {
            return;
        };
        let old = current.take();
        let vcpu_id = vcpu as u32;
        if let Some((ctx, slot)) = old {
            let vm = &mut self.vms[slot as usize];
            vm.remove(ctx.vp_id, vcpu_id);
            if vm.members.is_empty() {
                *vm = L2Vm::default();
                self.slot_of.remove(&ctx.vm_id);
                self.free.push(slot);
            }
        }
        let Some(ctx) = context else {
            return;
        };
        let slot = match self.slot_of.get(&ctx.vm_id) {
            Some(&slot) => slot,
            None => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.vms.push(L2Vm::default());
                    (self.vms.len() - 1) as u32
                });
                self.slot_of.insert(ctx.vm_id, slot);
                slot
            }
        };
        self.vms[slot as usize].insert(ctx.vp_id, vcpu_id);
        self.current[vcpu] = Some((ctx, slot));
    }

    /// Adds to `out` the vCPUs running a VP of the caller's L2 VM whose
    /// vp_id is in `set`; returns the caller's context (`None`: the caller
    /// runs no L2 context, nothing is routed).
    pub(crate) fn route(
        &self,
        caller: usize,
        set: &ProcessorSet,
        out: &mut VcpuSet<[u64]>,
    ) -> Option<NestedContext> {
        let (ctx, slot) = (*self.current.get(caller)?)?;
        if let Some(vm) = self.vms.get(slot as usize) {
            vm.route(set, out);
        }
        Some(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(vm_id: u64, vp_id: u32) -> Option<NestedContext> {
        Some(NestedContext {
            vm_id,
            vp_id,
            partition_assist_gpa: 0,
        })
    }

    fn sparse(vps: &[u32]) -> ProcessorSet {
        ProcessorSet::from_vps(vps)
    }

    /// The reference: KVM's scan over every vCPU's context.
    fn scan(contexts: &[Option<NestedContext>], caller: usize, set: &ProcessorSet) -> VcpuSet {
        let Some(me) = contexts[caller] else {
            return VcpuSet::default();
        };
        contexts
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some_and(|c| c.vm_id == me.vm_id && set.contains(c.vp_id)))
            .map(|(v, _)| v)
            .collect()
    }

    fn routed(index: &L2Index, caller: usize, set: &ProcessorSet) -> VcpuSet {
        let mut out = VcpuSet::default();
        index.route(caller, set, &mut out);
        out
    }

    #[test]
    fn index_matches_the_scan_through_context_changes() {
        const VCPUS: usize = 200;
        let mut index = L2Index::new(VCPUS);
        let mut contexts = vec![None; VCPUS];
        // A deterministic walk through inserts, moves, duplicates (two
        // vCPUs on one VP), vp_ids ≥ 4096 and removals.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let vcpu = (x % VCPUS as u64) as usize;
            let new = match (x >> 20) % 5 {
                0 => None,
                1 => ctx(7, 4096 + (x >> 40) as u32 % 3),
                2 => ctx(7, (x >> 40) as u32 % 8),
                _ => ctx((x >> 30) % 3, (x >> 40) as u32 % 4096),
            };
            index.set(vcpu, new);
            contexts[vcpu] = new;
            if step % 50 == 0 {
                let vps: Vec<u32> = (0..40)
                    .map(|i| ((x >> i) as u32).wrapping_mul(97) % 4096)
                    .collect();
                for caller in [vcpu, (vcpu + 1) % VCPUS] {
                    for set in [sparse(&vps), sparse(&[0, 1, 2, 3, 4, 5, 6, 7])] {
                        assert_eq!(routed(&index, caller, &set), scan(&contexts, caller, &set));
                    }
                    let all = routed(&index, caller, &ProcessorSet::All);
                    assert_eq!(all, scan(&contexts, caller, &ProcessorSet::All));
                }
            }
        }
        for v in 0..VCPUS {
            index.set(v, None);
        }
        assert!(index.slot_of.is_empty());
        assert_eq!(index.free.len(), index.vms.len());
    }

    #[test]
    fn vm_slots_are_reused() {
        let mut index = L2Index::new(4);
        for vm_id in 0..100 {
            index.set(0, ctx(vm_id, 1));
            index.set(1, ctx(vm_id + 1000, 2));
        }
        assert!(index.vms.len() <= 4, "{}", index.vms.len());
        assert_eq!(
            index.route(3, &ProcessorSet::All, &mut <VcpuSet>::default()),
            None
        );
    }
}
