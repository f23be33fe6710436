//! Property tests of the decoder: encoding any valid request and decoding
//! it is the identity (up to the documented normalisation), and arbitrary
//! registers and memory never panic and always give a documented status.

#[allow(dead_code)]
mod common;

use common::{Call, INPUT_GPA, Regs, VpSet, memory};
use hyperv_flush::abi::{GvaRange, HvStatus, MAX_SPARSE_BANKS};
use hyperv_flush::decode::{
    FlushCall, FlushRequest, GvaList, MAX_QUEUED_RANGES, Offer, ProcessorSet, decode,
};
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

fn flush_call() -> impl Strategy<Value = FlushCall> {
    prop::sample::select(FlushCall::ALL.to_vec())
}

/// Entries: mostly canonical user/kernel addresses, some non-canonical,
/// with random low bits (page counts / extended-format bits).
fn gva_entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..1 << 47, any::<u16>()).prop_map(|(a, low)| (a & !0xfff) | u64::from(low & 0xfff)),
        2 => (0u64..1 << 47, any::<u16>())
            .prop_map(|(a, low)| (0xffff_8000_0000_0000 | a) & !0xfff | u64::from(low & 0xfff)),
        1 => any::<u64>(),
    ]
}

/// A sparse set of `banks` distinct banks with arbitrary contents.
fn sparse_set(max_banks: usize) -> impl Strategy<Value = VpSet> {
    prop::collection::btree_map(0u32..64, any::<u64>(), 0..=max_banks).prop_map(|m| {
        let valid_bank_mask = m.keys().fold(0u64, |acc, b| acc | 1 << b);
        VpSet::Sparse {
            valid_bank_mask,
            banks: m.into_values().collect(),
        }
    })
}

/// A valid call. Fast calls fit the 14 register qwords.
fn valid_call(call: FlushCall, fast: bool) -> BoxedStrategy<Call> {
    let max_banks = if fast { 9 } else { 64 };
    let vps: BoxedStrategy<VpSet> = if call.is_ex() {
        prop_oneof![
            4 => sparse_set(max_banks),
            1 => sparse_set(max_banks.min(4)).prop_map(|s| match s {
                VpSet::Sparse { valid_bank_mask, banks } => VpSet::ExAll { valid_bank_mask, banks },
                other => other,
            }),
        ]
        .boxed()
    } else {
        prop_oneof![1 => Just(0u64), 4 => any::<u64>()]
            .prop_map(VpSet::Mask)
            .boxed()
    };
    (
        vps,
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(gva_entry(), 1..=40),
        any::<u16>(),
    )
        .prop_map(move |(vps, address_space, flags, mut gvas, start)| {
            let mut c = Call::new(call, fast).vps(vps).flags(flags);
            c.address_space = address_space;
            if call.is_list() {
                let header = c.qwords().len() - c.gvas.len();
                if fast {
                    gvas.truncate(14 - header);
                }
                c.rep_start = start % gvas.len() as u16;
                c.gvas = gvas;
            }
            c
        })
        .boxed()
}

/// What decoding `c` must give: the model of the documented normalisation.
fn expected(c: &Call) -> FlushRequest {
    let flags = hyperv_flush::abi::HvFlushFlags::from(c.flags);
    let mut banks = [0u64; MAX_SPARSE_BANKS];
    let processors = match &c.vps {
        _ if flags.all_processors() => ProcessorSet::All,
        VpSet::Mask(0) | VpSet::ExAll { .. } => ProcessorSet::All,
        VpSet::Mask(m) => {
            banks[0] = *m;
            ProcessorSet::Sparse {
                valid_bank_mask: 1,
                banks,
            }
        }
        VpSet::Sparse {
            valid_bank_mask,
            banks: present,
        } => {
            let mut bits = *valid_bank_mask;
            for b in present {
                banks[bits.trailing_zeros() as usize] = *b;
                bits &= bits - 1;
            }
            ProcessorSet::Sparse {
                valid_bank_mask: *valid_bank_mask,
                banks,
            }
        }
    };
    let rep_count = if c.call.is_list() {
        c.gvas.len() as u16
    } else {
        0
    };
    // An Ex sparse set without banks succeeds at once: no entry is read.
    if c.call.is_ex() && processors.is_empty() {
        return FlushRequest {
            call: c.call,
            fast: c.fast,
            address_space: c.address_space,
            flags,
            processors,
            gvas: if c.call.is_list() {
                GvaList::NONE
            } else {
                GvaList::All
            },
            rep_count,
            too_many_entries: false,
        };
    }
    let remaining = &c.gvas[usize::from(c.rep_start).min(c.gvas.len())..];
    let too_many_entries = c.call.is_list() && remaining.len() > MAX_QUEUED_RANGES;
    let gvas = if !c.call.is_list() || too_many_entries {
        GvaList::All
    } else {
        let mut ranges = [GvaRange::default(); MAX_QUEUED_RANGES];
        let mut len = 0;
        for e in remaining {
            let r = if flags.use_extended_range_format() {
                GvaRange::from_extended(*e)
            } else {
                GvaRange::from_simple(*e)
            };
            // 57-bit canonical: bits 63:56 equal bit 56.
            let top = (r.start as i64) >> 56;
            if top == 0 || top == -1 {
                ranges[len] = r;
                len += 1;
            }
        }
        GvaList::Ranges {
            ranges,
            len: len as u8,
        }
    };
    FlushRequest {
        call: c.call,
        fast: c.fast,
        address_space: c.address_space,
        flags,
        processors,
        gvas,
        rep_count,
        too_many_entries,
    }
}

fn decode_call(c: &Call) -> Result<FlushRequest, HvStatus> {
    let mem = memory();
    let mut regs = c.place(&mem, INPUT_GPA);
    decode(&mut regs, &mem, Offer::default())
}

/// Calls with a valid encoding (all fit one page of memory input).
fn roundtrip_calls() -> impl Strategy<Value = Call> {
    (flush_call(), any::<bool>()).prop_flat_map(|(call, fast)| valid_call(call, fast))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // conformance: R16 R17 R18 R19 R20 R21 R22 R23 R24
    #[test]
    fn encode_then_decode_is_the_identity(c in roundtrip_calls()) {
        prop_assert_eq!(decode_call(&c), Ok(expected(&c)));
    }
}

/// Control words biased towards the flush codes and small rep fields, so
/// the deep paths are reached; anything else is fully random.
fn control() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (
            prop::sample::select(vec![2u16, 3, 0x13, 0x14]),
            any::<bool>(),
            0u16..70,
            0u16..40,
            prop_oneof![4 => Just(0u16), 1 => 0u16..40],
            prop_oneof![6 => Just(0u64), 1 => any::<u64>()],
        )
            .prop_map(|(code, fast, var, reps, start, noise)| {
                let c = hyperv_flush::abi::HypercallControl::new()
                    .with_code(code)
                    .with_fast(fast)
                    .with_variable_header_size(var)
                    .with_rep_count(reps)
                    .with_rep_start(start);
                u64::from(c) | (noise & hyperv_flush::abi::HypercallControl::RESERVED_MASK)
            }),
        1 => any::<u64>(),
    ]
}

/// Input GPAs: RAM, near page ends, misaligned, in the hole, wild.
fn input_gpa() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(INPUT_GPA),
        1 => 0u64..0x1_0000,
        1 => (1u64..64).prop_map(|k| 2 * 4096 - 8 * k),
        1 => any::<u64>(),
    ]
}

fn offer() -> impl Strategy<Value = Offer> {
    prop_oneof![
        4 => Just(Offer::default()),
        1 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, e, x)| Offer {
            remote_flush: r,
            ex_masks: e,
            xmm_input: x,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    // conformance: R01 R04 R05 R06 R07 R09 R10 R11 R12 R13 R14 R15
    #[test]
    fn arbitrary_input_never_panics_and_gives_a_documented_status(
        control in control(),
        rdx in input_gpa(),
        r8 in any::<u64>(),
        xmm in any::<[u128; 6]>(),
        page in prop::collection::vec(any::<u64>(), 512),
        offer in offer(),
    ) {
        let mem = memory();
        for (i, q) in page.iter().enumerate() {
            mem.write_obj(*q, GuestAddress(INPUT_GPA + 8 * i as u64)).expect("RAM");
        }
        let mut regs = Regs { control, rdx, r8, xmm, xmm_reads: 0 };
        match decode(&mut regs, &mem, offer) {
            Ok(r) => {
                prop_assert!(r.gvas.ranges().len() <= MAX_QUEUED_RANGES);
                prop_assert!(r.gvas.ranges().iter().all(|g| g.pages >= 1));
                // No range runs past 2^64 (the arithmetic never wraps).
                prop_assert!(r.gvas.ranges().iter().all(|g| g.pages - 1 <= (u64::MAX - g.start) >> 12));
                prop_assert_eq!(r.too_many_entries, r.gvas == GvaList::All && r.call.is_list());
                prop_assert_eq!(u64::from(r.rep_count), (control >> 32) & 0xfff);
                prop_assert_eq!(r.fast, control & 1 << 16 != 0);
                prop_assert!(offer.remote_flush);
                if let Some(n) = r.processors.len() {
                    prop_assert!(n <= 4096);
                }
            }
            Err(s) => prop_assert!(
                [
                    HvStatus::INVALID_HYPERCALL_CODE,
                    HvStatus::INVALID_HYPERCALL_INPUT,
                    HvStatus::INVALID_ALIGNMENT,
                    HvStatus::ACCESS_DENIED,
                ]
                .contains(&s),
                "undocumented status {:?}",
                s
            ),
        }
        prop_assert!(regs.xmm_reads <= 1);
        if control & 1 << 16 == 0 {
            prop_assert_eq!(regs.xmm_reads, 0);
        }
    }
}
