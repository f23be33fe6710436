//! Table-driven decoding tests: every flush call × memory/fast input × rep
//! variants × every error status, against an in-memory guest and synthetic
//! registers. Each test names the row of `docs/conformance.md` it covers.
//!
//! Precedence under test (hyperv-flush/src/decode/mod.rs): access (6) →
//! reserved control bits (3) → unknown code (2) → rep rules (3) → non-Ex
//! header size (3) → memory alignment/page span (4) → unreadable memory (3)
//! → Ex header size vs popcount (3) → fast XMM overflow (3).

#[allow(dead_code)]
mod common;

use common::{Call, HOLE, INPUT_GPA, Mem, PAGE, VpSet, memory};
use hyperv_flush::abi::{GvaRange, HvStatus};
use hyperv_flush::decode::{FlushCall, FlushRequest, GvaList, Offer, ProcessorSet, decode};

const SUCCESS: HvStatus = HvStatus::SUCCESS;
const CODE: HvStatus = HvStatus::INVALID_HYPERCALL_CODE;
const INPUT: HvStatus = HvStatus::INVALID_HYPERCALL_INPUT;
const ALIGN: HvStatus = HvStatus::INVALID_ALIGNMENT;
const DENIED: HvStatus = HvStatus::ACCESS_DENIED;

fn run(call: &Call, gpa: u64, offer: Offer) -> Result<FlushRequest, HvStatus> {
    let mem = memory();
    run_in(&mem, call, gpa, offer)
}

fn run_in(mem: &Mem, call: &Call, gpa: u64, offer: Offer) -> Result<FlushRequest, HvStatus> {
    let mut regs = call.place(mem, gpa);
    let result = decode(&mut regs, mem, offer);
    // XMM registers are fetched for fast calls only (TLFS §3.7.8).
    if !call.fast {
        assert_eq!(regs.xmm_reads, 0, "memory call fetched XMM: {call:?}");
    }
    result
}

fn status(r: &Result<FlushRequest, HvStatus>) -> HvStatus {
    match r {
        Ok(_) => SUCCESS,
        Err(s) => *s,
    }
}

/// One row of the table: a mutation of a well-formed call and the status
/// the guest must get.
struct Mutation {
    row: &'static str,
    name: &'static str,
    applies: fn(&Call) -> bool,
    mutate: fn(Call) -> (Call, u64, Offer),
    expect: fn(&Call) -> HvStatus,
}

fn any(_: &Call) -> bool {
    true
}
fn memory_only(c: &Call) -> bool {
    !c.fast
}
fn fast_only(c: &Call) -> bool {
    c.fast
}
fn list_only(c: &Call) -> bool {
    c.call.is_list()
}
fn space_only(c: &Call) -> bool {
    !c.call.is_list()
}
fn ex_only(c: &Call) -> bool {
    c.call.is_ex()
}
fn non_ex_only(c: &Call) -> bool {
    !c.call.is_ex()
}

fn plain(c: Call) -> (Call, u64, Offer) {
    (c, INPUT_GPA, Offer::default())
}

fn with_control(mut c: Call, bits: u64) -> (Call, u64, Offer) {
    c.control_or |= bits;
    plain(c)
}

const MUTATIONS: &[Mutation] = &[
    // conformance: R24
    Mutation {
        row: "R24",
        name: "well-formed call succeeds",
        applies: any,
        mutate: plain,
        expect: |_| SUCCESS,
    },
    // conformance: R01
    Mutation {
        row: "R01",
        name: "remote flush not offered",
        applies: any,
        mutate: |c| {
            let offer = Offer {
                remote_flush: false,
                ..Offer::default()
            };
            (c, INPUT_GPA, offer)
        },
        expect: |_| DENIED,
    },
    // conformance: R02
    Mutation {
        row: "R02",
        name: "Ex masks not offered",
        applies: any,
        mutate: |c| {
            let offer = Offer {
                ex_masks: false,
                ..Offer::default()
            };
            (c, INPUT_GPA, offer)
        },
        expect: |c| if c.call.is_ex() { DENIED } else { SUCCESS },
    },
    // conformance: R03
    Mutation {
        row: "R03",
        name: "access is checked before reserved bits",
        applies: any,
        mutate: |mut c| {
            c.control_or |= 1 << 31;
            let offer = Offer {
                remote_flush: false,
                ..Offer::default()
            };
            (c, INPUT_GPA, offer)
        },
        expect: |_| DENIED,
    },
    // conformance: R04
    Mutation {
        row: "R04",
        name: "reserved bit 27",
        applies: any,
        mutate: |c| with_control(c, 1 << 27),
        expect: |_| INPUT,
    },
    Mutation {
        row: "R04",
        name: "reserved bit 31 (nested)",
        applies: any,
        mutate: |c| with_control(c, 1 << 31),
        expect: |_| INPUT,
    },
    Mutation {
        row: "R04",
        name: "reserved bits 47:44",
        applies: any,
        mutate: |c| with_control(c, 0xf << 44),
        expect: |_| INPUT,
    },
    Mutation {
        row: "R04",
        name: "reserved bit 60",
        applies: any,
        mutate: |c| with_control(c, 1 << 60),
        expect: |_| INPUT,
    },
    Mutation {
        row: "R04",
        name: "reserved bit 63",
        applies: any,
        mutate: |c| with_control(c, 1 << 63),
        expect: |_| INPUT,
    },
    // conformance: R06
    Mutation {
        row: "R06",
        name: "Space call with a rep count",
        applies: space_only,
        mutate: |mut c| {
            c.rep_count = Some(1);
            plain(c)
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R06",
        name: "Space call with a rep start",
        applies: space_only,
        mutate: |mut c| {
            c.rep_start = 1;
            plain(c)
        },
        expect: |_| INPUT,
    },
    // conformance: R07
    Mutation {
        row: "R07",
        name: "List call with rep count 0",
        applies: list_only,
        mutate: |mut c| {
            c.rep_count = Some(0);
            plain(c)
        },
        expect: |_| INPUT,
    },
    // conformance: R08
    Mutation {
        row: "R08",
        name: "List call with rep start = rep count",
        applies: list_only,
        mutate: |mut c| {
            c.rep_start = c.gvas.len() as u16;
            plain(c)
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R08",
        name: "List call with rep start > rep count",
        applies: list_only,
        mutate: |mut c| {
            c.rep_start = 0xfff;
            plain(c)
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R08",
        name: "List call restarted at rep start < rep count",
        applies: list_only,
        mutate: |mut c| {
            c.rep_start = 1;
            plain(c)
        },
        expect: |_| SUCCESS,
    },
    // conformance: R09
    Mutation {
        row: "R09",
        name: "non-Ex call with a variable header",
        applies: non_ex_only,
        mutate: |mut c| {
            c.var_header = Some(1);
            plain(c)
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R09",
        name: "rep rules are checked before the header size",
        applies: |c| !c.call.is_ex() && c.call.is_list(),
        mutate: |mut c| {
            c.var_header = Some(1);
            c.rep_count = Some(0);
            plain(c)
        },
        expect: |_| INPUT,
    },
    // conformance: R10
    Mutation {
        row: "R10",
        name: "input GPA not 8-byte aligned",
        applies: memory_only,
        mutate: |c| (c, INPUT_GPA + 4, Offer::default()),
        expect: |_| ALIGN,
    },
    Mutation {
        row: "R10",
        name: "header-size error wins over misalignment",
        applies: |c| !c.fast && !c.call.is_ex(),
        mutate: |mut c| {
            c.var_header = Some(2);
            (c, INPUT_GPA + 4, Offer::default())
        },
        expect: |_| INPUT,
    },
    // conformance: R11
    Mutation {
        row: "R11",
        name: "input spans a page boundary",
        applies: memory_only,
        mutate: |c| (c, 2 * PAGE - 8, Offer::default()),
        expect: |_| ALIGN,
    },
    Mutation {
        row: "R11",
        name: "input ending exactly at the page end",
        applies: memory_only,
        mutate: |c| {
            let len = 8 * c.qwords().len() as u64;
            (c, 2 * PAGE - len, Offer::default())
        },
        expect: |_| SUCCESS,
    },
    Mutation {
        row: "R11",
        name: "page span wins over unreadable memory",
        applies: memory_only,
        mutate: |c| (c, HOLE - 8, Offer::default()),
        expect: |_| ALIGN,
    },
    // conformance: R12
    Mutation {
        row: "R12",
        name: "input GPA is not RAM",
        applies: memory_only,
        mutate: |c| (c, HOLE + 0x100, Offer::default()),
        expect: |_| INPUT,
    },
    Mutation {
        row: "R12",
        name: "misalignment wins over unreadable memory",
        applies: memory_only,
        mutate: |c| (c, HOLE + 0x104, Offer::default()),
        expect: |_| ALIGN,
    },
    // conformance: R13
    Mutation {
        row: "R13",
        name: "Ex header size above popcount",
        applies: ex_only,
        mutate: |mut c| {
            c.var_header = Some(c.var_header() + 1);
            plain(c)
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R13",
        name: "Ex header size below popcount",
        applies: ex_only,
        mutate: |mut c| {
            c.vps = VpSet::sparse(&[1, 64, 130]);
            c.var_header = Some(2);
            plain(c)
        },
        expect: |_| INPUT,
    },
    // conformance: R14
    Mutation {
        row: "R14",
        name: "fast call without XMM input offered",
        applies: fast_only,
        mutate: |c| {
            let offer = Offer {
                xmm_input: false,
                ..Offer::default()
            };
            (c, INPUT_GPA, offer)
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R14",
        name: "memory call without XMM input offered",
        applies: memory_only,
        mutate: |c| {
            let offer = Offer {
                xmm_input: false,
                ..Offer::default()
            };
            (c, INPUT_GPA, offer)
        },
        expect: |_| SUCCESS,
    },
    // conformance: R15
    Mutation {
        row: "R15",
        name: "fast GVA list past XMM5",
        applies: |c| c.fast && c.call.is_list(),
        mutate: |c| {
            // 14 qwords exist; the header takes 3 (non-Ex) or 4 + banks (Ex).
            let header = c.qwords().len() - c.gvas.len();
            let gvas = (0..(14 - header + 1) as u64).map(|i| i << 12).collect();
            plain(c.gvas(gvas))
        },
        expect: |_| INPUT,
    },
    Mutation {
        row: "R15",
        name: "fast GVA list filling XMM5 exactly",
        applies: |c| c.fast && c.call.is_list(),
        mutate: |c| {
            let header = c.qwords().len() - c.gvas.len();
            let gvas = (0..(14 - header) as u64).map(|i| i << 12).collect();
            plain(c.gvas(gvas))
        },
        expect: |_| SUCCESS,
    },
    Mutation {
        row: "R15",
        name: "fast Ex banks past XMM5",
        applies: |c| c.fast && c.call.is_ex(),
        mutate: |c| {
            let vps: Vec<u32> = (0..11).map(|b| b * 64).collect();
            plain(c.vps(VpSet::sparse(&vps)))
        },
        expect: |_| INPUT,
    },
];

/// Every code × memory/fast × every mutation, for the calls in `calls`.
fn check_table(calls: &[FlushCall], inputs: &[bool]) {
    let mut checked = 0;
    for &call in calls {
        for &fast in inputs {
            let base = Call::new(call, fast);
            for m in MUTATIONS {
                if !(m.applies)(&base) {
                    continue;
                }
                let (c, gpa, offer) = (m.mutate)(base.clone());
                let got = run(&c, gpa, offer);
                let want = (m.expect)(&c);
                assert_eq!(
                    status(&got),
                    want,
                    "{} {}: {:?} fast={fast}: {got:?}",
                    m.row,
                    m.name,
                    call
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

// conformance: R01 R02 R03 R04 R06 R07 R08 R09 R10 R11 R12 R14 R15 R24
#[test]
fn status_table_non_ex_calls_memory_and_fast() {
    check_table(&[FlushCall::Space, FlushCall::List], &[false, true]);
}

// conformance: R01 R02 R03 R04 R06 R07 R08 R10 R11 R12 R13 R14 R15 R24
#[test]
fn status_table_ex_calls_memory_and_fast() {
    check_table(&[FlushCall::SpaceEx, FlushCall::ListEx], &[false, true]);
}

// conformance: R13 R19 R24
#[test]
fn memory_input_ex_calls_succeed() {
    for call in [FlushCall::SpaceEx, FlushCall::ListEx] {
        let r = ok(&Call::new(call, false));
        assert_eq!(r.processors, sparse_of(&[0]));
        // Sparse banks across the whole VP range, up to all 64 banks.
        let vps = [0u32, 63, 64, 1000, 2048, 4094, 4095];
        let r = ok(&Call::new(call, false).vps(VpSet::sparse(&vps)));
        assert_eq!(r.processors.vp_indices().collect::<Vec<_>>(), vps);
        let every_bank: Vec<u32> = (0..64).map(|b| b * 64 + (b % 64)).collect();
        let c = Call::new(call, false).vps(VpSet::sparse(&every_bank));
        assert_eq!(c.var_header(), 64);
        assert_eq!(
            ok(&c).processors.vp_indices().collect::<Vec<_>>(),
            every_bank
        );
    }
    // Restarted ListEx from memory.
    let mut c = Call::new(FlushCall::ListEx, false).gvas(entries(6));
    c.rep_start = 4;
    let want: Vec<_> = entries(6)[4..]
        .iter()
        .map(|e| GvaRange::from_simple(*e))
        .collect();
    assert_eq!(ok(&c).gvas.ranges(), want);
}

// conformance: R05
#[test]
fn unknown_codes_get_invalid_code_even_when_flushes_are_not_offered() {
    let offers = [
        Offer::default(),
        Offer {
            remote_flush: false,
            ex_masks: false,
            xmm_input: false,
        },
    ];
    for code in [
        0x0000u16, 0x0001, 0x0004, 0x0008, 0x0012, 0x0015, 0x0099, 0xffff,
    ] {
        for offer in offers {
            for fast in [false, true] {
                let mut regs = common::Regs {
                    control: u64::from(code) | u64::from(fast) << 16,
                    rdx: INPUT_GPA,
                    ..Default::default()
                };
                assert_eq!(
                    decode(&mut regs, &memory(), offer),
                    Err(CODE),
                    "code {code:#x}"
                );
                // Reserved bits are checked before the code.
                regs.control |= 1 << 44;
                assert_eq!(decode(&mut regs, &memory(), offer), Err(INPUT));
                // The code is checked before rep rules.
                regs.control = u64::from(code) | 5 << 48;
                assert_eq!(decode(&mut regs, &memory(), offer), Err(CODE));
            }
        }
    }
}

fn ok(call: &Call) -> FlushRequest {
    run(call, INPUT_GPA, Offer::default()).unwrap_or_else(|s| panic!("{call:?}: {s:?}"))
}

fn sparse_of(vps: &[u32]) -> ProcessorSet {
    ProcessorSet::from_vps(vps)
}

// conformance: R16
#[test]
fn non_ex_mask_zero_means_all_processors() {
    for call in [FlushCall::Space, FlushCall::List] {
        for fast in [false, true] {
            let r = ok(&Call::new(call, fast).vps(VpSet::Mask(0)));
            assert_eq!(r.processors, ProcessorSet::All);
            let r = ok(&Call::new(call, fast).vps(VpSet::Mask(0b1010)));
            assert_eq!(r.processors, sparse_of(&[1, 3]));
            assert_eq!(r.processors.vp_indices().collect::<Vec<_>>(), [1, 3]);
        }
    }
}

// conformance: R17
#[test]
fn all_processors_flag_overrides_the_set() {
    for call in [FlushCall::Space, FlushCall::List] {
        for fast in [false, true] {
            let r = ok(&Call::new(call, fast).flags(1).vps(VpSet::Mask(0b100)));
            assert_eq!(r.processors, ProcessorSet::All, "{call:?}");
        }
    }
    // Ex: the flag also means all (KVM only looks at the format).
    for call in [FlushCall::SpaceEx, FlushCall::ListEx] {
        let r = ok(&Call::new(call, true).flags(1).vps(VpSet::sparse(&[5])));
        assert_eq!(r.processors, ProcessorSet::All, "{call:?}");
    }
}

// conformance: R18
#[test]
fn ex_format_all_means_all_and_its_banks_are_skipped() {
    for call in [FlushCall::SpaceEx, FlushCall::ListEx] {
        let c = Call::new(call, true).vps(VpSet::ExAll {
            valid_bank_mask: 0,
            banks: vec![],
        });
        assert_eq!(ok(&c).processors, ProcessorSet::All);
        // Banks sent along with "all" are skipped, and the GVAs after
        // them are read from the right place.
        let c = Call::new(call, true).vps(VpSet::ExAll {
            valid_bank_mask: 0b101,
            banks: vec![0xdead, 0xbeef],
        });
        let r = ok(&c);
        assert_eq!(r.processors, ProcessorSet::All);
        if call.is_list() {
            assert_eq!(
                r.gvas.ranges(),
                [
                    GvaRange::from_simple(0x7000_1000),
                    GvaRange::from_simple(0x7000_5003)
                ]
            );
        }
        // Any format other than SPARSE_4K is "all" (KVM: `format !=
        // HV_GENERIC_SET_SPARSE_4K`).
        let mut regs = Call::new(call, true)
            .vps(VpSet::ExAll {
                valid_bank_mask: 0,
                banks: vec![],
            })
            .place(&memory(), 0);
        regs.xmm[0] = 7;
        let r = decode(&mut regs, &memory(), Offer::default()).unwrap();
        assert_eq!(r.processors, ProcessorSet::All);
    }
}

// conformance: R19
#[test]
fn ex_sparse_sets_span_banks_up_to_vp_4095() {
    // Fast input holds at most 14 - 4 = 10 banks. Memory input across all
    // 64 banks: `memory_input_ex_calls_succeed`.
    let vps = [3u32, 64, 1000, 4095];
    for call in [FlushCall::SpaceEx, FlushCall::ListEx] {
        let r = ok(&Call::new(call, true).vps(VpSet::sparse(&vps)));
        assert_eq!(r.processors, sparse_of(&vps));
        assert_eq!(r.processors.vp_indices().collect::<Vec<_>>(), vps);
        assert_eq!(r.processors.len(), Some(vps.len() as u32));
        assert!(r.processors.contains(4095));
        assert!(!r.processors.contains(4094));
    }
    // Ten banks fill the registers exactly (Space has no GVAs).
    let ten: Vec<u32> = (0..10).map(|b| b * 64 + 7).collect();
    let r = ok(&Call::new(FlushCall::SpaceEx, true).vps(VpSet::sparse(&ten)));
    assert_eq!(r.processors.vp_indices().collect::<Vec<_>>(), ten);
    // An empty sparse set is valid and targets nobody.
    let c = Call::new(FlushCall::SpaceEx, true).vps(VpSet::Sparse {
        valid_bank_mask: 0,
        banks: vec![],
    });
    let r = ok(&c);
    assert!(r.processors.is_empty());
}

fn entries(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| 0x10_0000 + (i << 12)).collect()
}

// conformance: R20 R23
#[test]
fn list_lengths_1_15_16_and_page_maximum() {
    for n in [1usize, 15] {
        let r = ok(&Call::new(FlushCall::List, false).gvas(entries(n)));
        assert!(!r.too_many_entries);
        assert_eq!(r.rep_count, n as u16);
        let want: Vec<_> = entries(n).into_iter().map(GvaRange::from_simple).collect();
        assert_eq!(r.gvas.ranges(), want);
    }
    // 16 entries and the most that fit in one input page: flush all.
    let page_max = (PAGE as usize - 24) / 8;
    for n in [16usize, 100, page_max] {
        let r = ok(&Call::new(FlushCall::List, false).gvas(entries(n)));
        assert!(r.too_many_entries, "{n}");
        assert_eq!(r.gvas, GvaList::All);
        assert_eq!(r.rep_count, n as u16);
    }
    // 4095 entries cannot fit the one page of memory input.
    let c = Call::new(FlushCall::List, false).gvas(entries(4095));
    assert_eq!(status(&run(&c, 0, Offer::default())), ALIGN);
    // Fast: even 16 entries overflow the registers.
    let c = Call::new(FlushCall::List, true).gvas(entries(16));
    assert_eq!(status(&run(&c, 0, Offer::default())), INPUT);
}

// conformance: R08
#[test]
fn restarted_list_call_takes_entries_from_rep_start() {
    for call in [FlushCall::List, FlushCall::ListEx] {
        for fast in [true, false] {
            let mut c = Call::new(call, fast).gvas(entries(6));
            c.rep_start = 4;
            let r = ok(&c);
            let want: Vec<_> = entries(6)[4..]
                .iter()
                .map(|e| GvaRange::from_simple(*e))
                .collect();
            assert_eq!(r.gvas.ranges(), want);
            // Completion reports the whole rep count.
            assert_eq!(r.rep_count, 6);
        }
    }
    // 20 reps restarted at 10: 10 remain, they fit the queue.
    let mut c = Call::new(FlushCall::List, false).gvas(entries(20));
    c.rep_start = 10;
    let r = ok(&c);
    assert!(!r.too_many_entries);
    assert_eq!(r.gvas.ranges().len(), 10);
    assert_eq!(r.gvas.ranges()[0], GvaRange::from_simple(entries(20)[10]));
}

// conformance: R22
#[test]
fn non_canonical_gvas_are_dropped_with_the_57_bit_rule() {
    let kept = [
        0x0000_7fff_ffff_f000u64,
        0xffff_8000_0000_0000,
        // Non-canonical for 48 bits, canonical for 57 bits: kept
        // (over-flushing is harmless).
        0x0000_8000_0000_0000,
        0xff00_0000_0000_0000,
    ];
    let dropped = [
        0x8000_0000_0000_0000u64,
        0x0100_0000_0000_0000,
        0x7f00_0000_0000_0000,
    ];
    let mut gvas = kept.to_vec();
    gvas.extend(dropped);
    for call in [FlushCall::List, FlushCall::ListEx] {
        let c = Call::new(call, call.is_ex()).gvas(gvas.clone());
        let r = ok(&c);
        let want: Vec<_> = kept.iter().map(|e| GvaRange::from_simple(*e)).collect();
        assert_eq!(r.gvas.ranges(), want, "{call:?}");
        assert_eq!(r.rep_count, 7);
    }
    // A list of only non-canonical entries still succeeds, with nothing
    // to flush.
    let r = ok(&Call::new(FlushCall::List, false).gvas(dropped.to_vec()));
    assert_eq!(
        r.gvas,
        GvaList::Ranges {
            ranges: Default::default(),
            len: 0
        }
    );
}

// conformance: R20 R21
#[test]
fn simple_and_extended_range_formats() {
    let raw = vec![
        0x7000_0000u64 | 0x1ff,          // 512 pages (simple) / 512 (extended)
        0x4020_0000 | 1 << 11 | 1,       // extended: 2 × 2 MiB
        0x4000_0000 | 1 << 11 | 1 << 12, // extended: 1 × 1 GiB
    ];
    let simple = ok(&Call::new(FlushCall::List, false).gvas(raw.clone()));
    assert_eq!(
        simple.gvas.ranges(),
        raw.iter()
            .map(|e| GvaRange::from_simple(*e))
            .collect::<Vec<_>>()
    );
    assert_eq!(simple.gvas.ranges()[1].pages, 0x802);
    // HV_FLUSH_USE_EXTENDED_RANGE_FORMAT (bit 3) is honoured.
    let ext = ok(&Call::new(FlushCall::List, true).gvas(raw).flags(1 << 3));
    assert!(ext.flags.use_extended_range_format());
    assert_eq!(
        ext.gvas.ranges(),
        [
            GvaRange {
                start: 0x7000_0000,
                pages: 0x200
            },
            GvaRange {
                start: 0x4020_0000,
                pages: 1024
            },
            GvaRange {
                start: 0x4000_0000,
                pages: 262_144
            },
        ]
    );
}

// conformance: R24
#[test]
fn decoded_fields_match_the_encoded_call() {
    for call in FlushCall::ALL {
        let c = Call::new(call, true).flags(0b110);
        let r = ok(&c);
        assert_eq!(r.call, call);
        assert!(r.fast);
        assert_eq!(r.address_space, 0x1234_5000);
        assert!(r.flags.all_virtual_address_spaces());
        assert!(r.flags.non_global_mappings_only());
        assert_eq!(r.rep_count, c.gvas.len() as u16);
        assert_eq!(r.gvas == GvaList::All, !call.is_list());
    }
}

// conformance: R12
#[test]
fn list_entries_in_a_hole_are_unreadable() {
    // The header is RAM, the entries run into the hole. It stays within
    // one page only if the page itself straddles RAM and hole, which a
    // page-aligned hole cannot; so start the input in the last RAM page
    // and check that the page-span rule (4) wins, as documented.
    let c = Call::new(FlushCall::List, false).gvas(entries(3));
    assert_eq!(status(&run(&c, HOLE - 16, Offer::default())), ALIGN);
    // Entirely in the hole: unreadable.
    assert_eq!(status(&run(&c, HOLE, Offer::default())), INPUT);
}
