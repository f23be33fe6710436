//! Criterion benchmarks of the engine's hot paths.
//!
//! Run: `cargo bench -p hyperv-flush --bench engine` (results and the
//! machine they came from: docs/performance.md, "Engine (criterion)").
//!
//! * `l1_list_memory/gvas16/N`: `Partition::handle_hypercall` for a
//!   memory-input HvCallFlushVirtualAddressList with 16 GVAs to N targets
//!   that are outside the guest (decode + route + enqueue + complete). 16
//!   entries exceed the 15 a queue takes per request, so every target gets
//!   a full flush (Linux KVM does the same).
//! * `l1_list_memory/gvas15_and_entry/N`: 15 GVAs (queued as ranges), plus
//!   every target taking its queue in `before_entry`/`after_exit`, so each
//!   iteration starts from empty queues.
//! * `parts/*`: pieces of the 1-target call above, to see where its time
//!   goes: decoding alone, L1 routing alone, `Partition::flush` alone, a
//!   clock read (a call reads the clock twice when it is one of the 1 in 16
//!   sampled for the latency histogram) and walking a one-member `VcpuSet`
//!   (done twice per request).
//! * `l2_route/{indexed,kvm_scan}/N`: routing an L2 request for 4 sparse
//!   vp_ids among N vCPUs that all run one VP of the same L2 VM: the
//!   engine's (vm_id, vp_id) index (`Partition::route`) next to a KVM-style
//!   linear scan over every vCPU's nested context with the same set test
//!   (Linux arch/x86/kvm/hyperv.c `kvm_hv_flush_tlb`, guest-mode branch).
//!
//! Routing results are observed through `black_box(&out)`, not moved out
//! of the closure: moving the 520-byte set was half of the measured time
//! of a route and is not part of routing (`Partition::flush` keeps its set
//! on the stack).

#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Call, INPUT_GPA, Regs, VpSet, memory};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hyperv_flush::abi::MAX_SPARSE_BANKS;
use hyperv_flush::decode::{FlushCall, ProcessorSet};
use hyperv_flush::engine::{Level, NestedContext, Partition, PartitionConfig, VcpuKicker, VcpuSet};

/// Targets are outside the guest: the engine never kicks them.
struct NoKick;

impl VcpuKicker for NoKick {
    fn kick(&self, _vcpu: usize) {}
}

const TARGET_COUNTS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

fn gvas(n: u64) -> Vec<u64> {
    (0..n).map(|i| 0x7000_0000 + (i << 12)).collect()
}

/// Mask of the first `n` VPs (targets 0..n; the caller is vCPU 64).
fn mask(n: usize) -> u64 {
    if n == 64 { u64::MAX } else { (1 << n) - 1 }
}

fn l1_list(c: &mut Criterion) {
    let mem = memory();
    let caller = 64;
    let p = Partition::new(PartitionConfig::new(65)).expect("partition");
    let mut group = c.benchmark_group("l1_list_memory");
    for n in TARGET_COUNTS {
        let call = Call::new(FlushCall::List, false)
            .vps(VpSet::Mask(mask(n)))
            .gvas(gvas(16));
        let template: Regs = call.place(&mem, INPUT_GPA);
        group.bench_with_input(BenchmarkId::new("gvas16", n), &n, |b, _| {
            b.iter(|| {
                let mut regs = template.clone();
                let out = p
                    .handle_hypercall(caller, Level::L1, &mut regs, &mem, &NoKick)
                    .expect("caller");
                black_box(out)
            })
        });
        let call = Call::new(FlushCall::List, false)
            .vps(VpSet::Mask(mask(n)))
            .gvas(gvas(15));
        let template: Regs = call.place(&mem, INPUT_GPA);
        group.bench_with_input(BenchmarkId::new("gvas15_and_entry", n), &n, |b, _| {
            b.iter(|| {
                let mut regs = template.clone();
                let out = p
                    .handle_hypercall(caller, Level::L1, &mut regs, &mem, &NoKick)
                    .expect("caller");
                for t in 0..n {
                    black_box(p.before_entry(t).expect("vCPU"));
                    p.after_exit(t).expect("vCPU");
                }
                black_box(out)
            })
        });
    }
    group.finish();
}

fn parts(c: &mut Criterion) {
    let mem = memory();
    let p = Partition::new(PartitionConfig::new(65)).expect("partition");
    let call = Call::new(FlushCall::List, false)
        .vps(VpSet::Mask(1))
        .gvas(gvas(16));
    let template: Regs = call.place(&mem, INPUT_GPA);
    let mut group = c.benchmark_group("parts");
    group.bench_function("decode_gvas16", |b| {
        b.iter(|| {
            let mut regs = template.clone();
            black_box(hyperv_flush::decode::decode(&mut regs, &mem, p.offer()))
        })
    });
    let mut regs = template.clone();
    let request = hyperv_flush::decode::decode(&mut regs, &mem, p.offer()).expect("valid");
    group.bench_function("route_l1_1_target", |b| {
        b.iter(|| {
            let mut out = VcpuSet::default();
            p.route(64, Level::L1, black_box(&request.processors), &mut out)
                .expect("route");
            black_box(&out);
        })
    });
    group.bench_function("flush_1_target", |b| {
        b.iter(|| p.flush(64, Level::L1, black_box(&request), &NoKick))
    });
    group.bench_function("clock_read", |b| b.iter(std::time::Instant::now));
    let one: VcpuSet = [0usize].into_iter().collect();
    group.bench_function("vcpu_set_iter_1_member", |b| {
        b.iter(|| black_box(&one).iter().sum::<usize>())
    });
    group.finish();
}

const L2_SIZES: [usize; 4] = [8, 64, 256, 1024];
const L2_VM: u64 = 0x51;

/// 4 vp_ids spread over the VM.
fn four_vps(vcpus: usize) -> ProcessorSet {
    let mut banks = [0u64; MAX_SPARSE_BANKS];
    let mut valid_bank_mask = 0;
    for vp in [1, vcpus / 3, vcpus / 2 + 1, vcpus - 1] {
        banks[vp / 64] |= 1 << (vp % 64);
        valid_bank_mask |= 1 << (vp / 64);
    }
    ProcessorSet::Sparse {
        valid_bank_mask,
        banks,
    }
}

/// KVM's way: look at every vCPU's current nested context.
fn kvm_scan(contexts: &[(u64, u32)], vm_id: u64, set: &ProcessorSet, out: &mut VcpuSet) {
    for (vcpu, (vm, vp)) in contexts.iter().enumerate() {
        if *vm == vm_id && set.contains(*vp) {
            out.insert(vcpu);
        }
    }
}

fn l2_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("l2_route");
    for n in L2_SIZES {
        let p = Partition::new(PartitionConfig::new(n)).expect("partition");
        let mut contexts = Vec::with_capacity(n);
        for v in 0..n {
            let ctx = NestedContext {
                vm_id: L2_VM,
                vp_id: v as u32,
                partition_assist_gpa: 0x3000,
            };
            p.load_nested_context(v, ctx).expect("context");
            contexts.push((ctx.vm_id, ctx.vp_id));
        }
        let set = four_vps(n);
        // Both sides must agree before they are compared.
        let mut a = VcpuSet::default();
        let mut b = VcpuSet::default();
        p.route(0, Level::L2, &set, &mut a).expect("route");
        kvm_scan(&contexts, L2_VM, &set, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);

        group.bench_with_input(BenchmarkId::new("indexed", n), &n, |bench, _| {
            bench.iter(|| {
                let mut out = VcpuSet::default();
                p.route(0, Level::L2, black_box(&set), &mut out)
                    .expect("route");
                black_box(&out);
            })
        });
        group.bench_with_input(BenchmarkId::new("kvm_scan", n), &n, |bench, _| {
            bench.iter(|| {
                let mut out = VcpuSet::default();
                kvm_scan(black_box(&contexts), L2_VM, black_box(&set), &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = l1_list, parts, l2_route
}
criterion_main!(benches);
