//! The edges where the decoder was compared with Linux KVM
//! (arch/x86/kvm/hyperv.c `kvm_hv_flush_tlb`, `kvm_get_sparse_vp_set`,
//! `kvm_hv_get_hc_data`), one test per divergence of issue 9, each with
//! the exact RAX KVM gives for the same input.

#[allow(dead_code)]
mod common;

use common::{Call, HOLE, INPUT_GPA, Mem, PAGE, Regs, VpSet, memory};
use hyperv_flush::abi::{GvaRange, HvStatus, HypercallControl};
use hyperv_flush::decode::{FlushCall, FlushRequest, GvaList, Offer, ProcessorSet, decode};
use hyperv_flush::engine::{Level, Partition, PartitionConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

fn run(mem: &Mem, regs: &mut Regs) -> Result<FlushRequest, HvStatus> {
    decode(regs, mem, Offer::default())
}

/// The RAX the engine returns for `regs` from vCPU 0 of a 4-vCPU
/// partition, and how many flushes were queued.
fn rax(mem: &Mem, regs: &mut Regs) -> (u64, u64) {
    let p = Partition::new(PartitionConfig::new(4)).unwrap();
    let kicker = common::RecordingKicker::default();
    let out = p
        .handle_hypercall(0, Level::L1, regs, mem, &kicker)
        .unwrap();
    (out.result, p.counters().targets)
}

fn control(call: FlushCall, fast: bool, var: u16, reps: u16) -> u64 {
    u64::from(
        HypercallControl::new()
            .with_code(call.code().0)
            .with_fast(fast)
            .with_variable_header_size(var)
            .with_rep_count(reps),
    )
}

/// An Ex fixed header (address space, flags, format, mask) at `gpa`.
fn ex_header(mem: &Mem, gpa: u64, flags: u64, format: u64, mask: u64) {
    for (i, q) in [0x1000u64, flags, format, mask].iter().enumerate() {
        mem.write_obj(*q, GuestAddress(gpa + 8 * i as u64)).unwrap();
    }
}

// conformance: R18 R15
#[test]
fn format_all_skips_the_banks_fast() {
    // SpaceEx, fast, format ALL, variable header 11 (11 banks declared,
    // more than the registers hold): KVM returns 0.
    let mem = memory();
    let mut regs = Regs {
        control: control(FlushCall::SpaceEx, true, 11, 0),
        rdx: 0,
        r8: 0,
        xmm: [1 | u128::from(0x7ffu64) << 64, 0, 0, 0, 0, 0],
        xmm_reads: 0,
    };
    assert_eq!(rax(&mem, &mut regs.clone()), (0, 4));
    assert_eq!(run(&mem, &mut regs).unwrap().processors, ProcessorSet::All);
    // A ListEx's GVAs still start after the skipped banks: with 11 banks
    // the first GVA would be qword 15 of 14 (KVM: `rep_cnt > 12 -
    // consumed_xmm_halves`), so that is 3.
    regs.control = control(FlushCall::ListEx, true, 11, 1);
    assert_eq!(
        status(run(&mem, &mut regs)),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    // With 9 skipped banks the one GVA is the last qword (XMM5 high).
    regs.control = control(FlushCall::ListEx, true, 9, 1);
    regs.xmm[0] = 1 | u128::from(0x1ffu64) << 64;
    regs.xmm[5] = u128::from(0x7000_2000u64) << 64;
    let r = run(&mem, &mut regs).unwrap();
    assert_eq!(r.gvas.ranges(), [GvaRange::from_simple(0x7000_2000)]);
}

// conformance: R18 R11
#[test]
fn format_all_skips_the_banks_memory() {
    // SpaceEx, memory, format ALL, 64 banks, at page offset 0xF00: the
    // banks would run past the page; KVM returns 0 (they are never read).
    let mem = memory();
    let gpa = INPUT_GPA + 0xf00;
    ex_header(&mem, gpa, 0, 1, u64::MAX);
    let mut regs = Regs {
        control: control(FlushCall::SpaceEx, false, 64, 0),
        rdx: gpa,
        ..Regs::default()
    };
    assert_eq!(rax(&mem, &mut regs), (0, 4));
    // The same header just below a hole: the banks would be unreadable.
    let gpa = HOLE - 32;
    ex_header(&mem, gpa, 0, 1, u64::MAX);
    regs.rdx = gpa;
    assert_eq!(rax(&mem, &mut regs), (0, 4));
    // A sparse set with those banks does read them: they span the page.
    ex_header(&mem, INPUT_GPA + 0xf00, 0, 0, u64::MAX);
    regs.rdx = INPUT_GPA + 0xf00;
    assert_eq!(status(run(&mem, &mut regs)), HvStatus::INVALID_ALIGNMENT);
}

// conformance: R19 R15
#[test]
fn empty_sparse_set_succeeds_at_once() {
    let mem = memory();
    // ListEx, fast, empty set, 11 reps: the GVAs cannot fit (they are not
    // there at all), KVM returns 0xB_0000_0000 without reading them.
    let mut regs = Regs {
        control: control(FlushCall::ListEx, true, 0, 11),
        ..Regs::default()
    };
    assert_eq!(rax(&mem, &mut regs.clone()), (0xB_0000_0000, 0));
    let r = run(&mem, &mut regs).unwrap();
    assert!(r.processors.is_empty());
    assert_eq!(r.gvas, GvaList::NONE);
    assert!(!r.too_many_entries);
    // ListEx, memory, empty set, 600 reps: far past the page, still
    // 0x258_0000_0000.
    ex_header(&mem, INPUT_GPA, 0, 0, 0);
    let mut regs = Regs {
        control: control(FlushCall::ListEx, false, 0, 600),
        rdx: INPUT_GPA,
        ..Regs::default()
    };
    assert_eq!(rax(&mem, &mut regs), (0x258_0000_0000, 0));
    // The empty set right before the hole: only the header is read.
    ex_header(&mem, HOLE - 32, 0, 0, 0);
    regs.rdx = HOLE - 32;
    assert_eq!(rax(&mem, &mut regs), (0x258_0000_0000, 0));
    // With HV_FLUSH_ALL_PROCESSORS the set is ignored (TLFS): every VP,
    // so the entries are read and must fit.
    ex_header(&mem, INPUT_GPA, 1, 0, 0);
    regs.rdx = INPUT_GPA;
    assert_eq!(status(run(&mem, &mut regs)), HvStatus::INVALID_ALIGNMENT);
}

// conformance: R12
#[test]
fn input_in_the_last_page_of_the_gpa_space_is_unreadable() {
    let mem = memory();
    for gpa in [0xFFFF_FFFF_FFFF_F000, 0xFFFF_FFFF_FFFF_FFE0, u64::MAX - 7] {
        for call in FlushCall::ALL {
            let mut regs = Call::new(call, false).place(&mem, gpa);
            assert_eq!(
                status(run(&mem, &mut regs)),
                HvStatus::INVALID_HYPERCALL_INPUT,
                "{call:?} at {gpa:#x}"
            );
        }
    }
    // Misalignment is still checked first (TLFS status 4).
    let mut regs = Call::new(FlushCall::Space, false).place(&mem, u64::MAX - 3);
    assert_eq!(status(run(&mem, &mut regs)), HvStatus::INVALID_ALIGNMENT);
}

// conformance: R13 R11
#[test]
fn popcount_is_checked_before_the_page_span() {
    // Variable header 600 with bank mask 1: KVM returns 3 (popcount), not
    // 4 from the span 600 banks would need.
    let mem = memory();
    for call in [FlushCall::SpaceEx, FlushCall::ListEx] {
        for format in [0, 1] {
            ex_header(&mem, INPUT_GPA, 0, format, 1);
            let reps = u16::from(call.is_list());
            let mut regs = Regs {
                control: control(call, false, 600, reps),
                rdx: INPUT_GPA,
                ..Regs::default()
            };
            assert_eq!(
                status(run(&mem, &mut regs)),
                HvStatus::INVALID_HYPERCALL_INPUT,
                "{call:?} format {format}"
            );
        }
    }
    // The fixed header itself crossing the page is still 4: nothing can
    // be checked before it is read.
    let mut regs = Regs {
        control: control(FlushCall::SpaceEx, false, 600, 0),
        rdx: 2 * PAGE - 16,
        ..Regs::default()
    };
    assert_eq!(status(run(&mem, &mut regs)), HvStatus::INVALID_ALIGNMENT);
}

// conformance: R21
#[test]
fn extended_range_past_the_end_of_the_address_space_is_clamped() {
    // 0xFFFF_FFC0_0000_0000 with the 1 GiB large-page bits and 2047
    // additional pages names 2 TiB; 256 GiB remain before 2^64. It is
    // canonical, so it is kept, clamped.
    let mem = memory();
    let entry = 0xFFFF_FFC0_0000_0000u64 | 1 << 12 | 1 << 11 | 0x7ff;
    let c = Call::new(FlushCall::List, false)
        .flags(1 << 3)
        .gvas(vec![entry]);
    let mut regs = c.place(&mem, INPUT_GPA);
    let r = run(&mem, &mut regs).unwrap();
    let [range] = r.gvas.ranges() else {
        panic!("one range: {:?}", r.gvas)
    };
    assert_eq!(range.start, 0xFFFF_FFC0_0000_0000);
    assert_eq!(range.pages, 256 << 18);
    assert_eq!(range.end(), None);
}

// conformance: R12
#[test]
fn one_mapping_reads_a_list_that_ends_where_ram_ends() {
    // RAM that ends inside a page (a 0x1800-byte region): the header is
    // mapped, the entries past the region end are not RAM.
    let mem: Mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1800)]).unwrap();
    let c = Call::new(FlushCall::List, false).gvas(vec![0x1000; 4]);
    let mut regs = c.place(&mem, 0x17e8);
    assert_eq!(
        status(run(&mem, &mut regs)),
        HvStatus::INVALID_HYPERCALL_INPUT
    );
    let mut regs = c.place(&mem, 0x1000);
    assert!(run(&mem, &mut regs).is_ok());
    // Space needs only its header.
    let mut regs = Call::new(FlushCall::Space, false)
        .vps(VpSet::Mask(1))
        .place(&mem, 0x17e8);
    assert!(run(&mem, &mut regs).is_ok());
}

fn status(r: Result<FlushRequest, HvStatus>) -> HvStatus {
    r.map_or_else(|s| s, |_| HvStatus::SUCCESS)
}
