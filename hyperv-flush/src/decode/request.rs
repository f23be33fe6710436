//! The typed flush request and the decoder that validates a call into it.

use vm_memory::GuestMemory;

use super::input::Input;
use super::io::HypercallRegisters;
use super::processors::{ProcessorSet, SetBits};
use crate::abi::{
    GvaRange, HV_GENERIC_SET_SPARSE_4K, HvCallCode, HvFlushFlags, HvStatus, HvTlbFlushExHeader,
    HvTlbFlushHeader, HypercallControl,
};

/// A request of more entries than this is served as a full flush (Linux
/// KVM: `KVM_HV_TLB_FLUSH_FIFO_SIZE - 1`).
pub const MAX_QUEUED_RANGES: usize = 15;

/// Which of the four flush calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushCall {
    /// HvCallFlushVirtualAddressSpace.
    Space,
    /// HvCallFlushVirtualAddressList.
    List,
    /// HvCallFlushVirtualAddressSpaceEx.
    SpaceEx,
    /// HvCallFlushVirtualAddressListEx.
    ListEx,
}

impl FlushCall {
    /// All calls, in counter order.
    pub const ALL: [Self; 4] = [Self::Space, Self::List, Self::SpaceEx, Self::ListEx];

    /// Maps a call code to a flush call.
    #[inline]
    pub fn from_code(code: HvCallCode) -> Option<Self> {
        match code {
            HvCallCode::FLUSH_VIRTUAL_ADDRESS_SPACE => Some(Self::Space),
            HvCallCode::FLUSH_VIRTUAL_ADDRESS_LIST => Some(Self::List),
            HvCallCode::FLUSH_VIRTUAL_ADDRESS_SPACE_EX => Some(Self::SpaceEx),
            HvCallCode::FLUSH_VIRTUAL_ADDRESS_LIST_EX => Some(Self::ListEx),
            _ => None,
        }
    }

    /// The call code.
    pub fn code(self) -> HvCallCode {
        match self {
            Self::Space => HvCallCode::FLUSH_VIRTUAL_ADDRESS_SPACE,
            Self::List => HvCallCode::FLUSH_VIRTUAL_ADDRESS_LIST,
            Self::SpaceEx => HvCallCode::FLUSH_VIRTUAL_ADDRESS_SPACE_EX,
            Self::ListEx => HvCallCode::FLUSH_VIRTUAL_ADDRESS_LIST_EX,
        }
    }

    /// Whether this is a rep call (carries a GVA list).
    #[inline]
    pub fn is_list(self) -> bool {
        matches!(self, Self::List | Self::ListEx)
    }

    /// Whether this call takes a sparse VP set.
    #[inline]
    pub fn is_ex(self) -> bool {
        matches!(self, Self::SpaceEx | Self::ListEx)
    }

    /// Stable lowercase name (`space`, `list`, `space_ex`, `list_ex`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Space => "space",
            Self::List => "list",
            Self::SpaceEx => "space_ex",
            Self::ListEx => "list_ex",
        }
    }

    /// Index into [`FlushCall::ALL`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the partition currently offers the guest. A call outside the
/// offer gets `HV_STATUS_ACCESS_DENIED`, like KVM with
/// `KVM_CAP_HYPERV_ENFORCE_CPUID` (`hv_check_hypercall_access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Flush calls served at all (0x40000004 EAX bit 2).
    pub remote_flush: bool,
    /// Ex calls (0x40000004 EAX bit 11).
    pub ex_masks: bool,
    /// XMM fast input (0x40000003 EDX bit 4). Without it a fast call can
    /// only use RDX/R8, so every fast flush call overflows its input.
    pub xmm_input: bool,
}

impl Default for Offer {
    fn default() -> Self {
        Self {
            remote_flush: true,
            ex_masks: true,
            xmm_input: true,
        }
    }
}

/// The GVAs to flush on each target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Inline on purpose: requests live on the stack, the hot path never allocates.
#[allow(clippy::large_enum_variant)]
pub enum GvaList {
    /// Flush the whole address space (Space calls, or too many entries).
    All,
    /// Canonical ranges to flush (`len` valid entries; the others are
    /// zero).
    Ranges {
        /// Normalised ranges.
        ranges: [GvaRange; MAX_QUEUED_RANGES],
        /// Valid entries in `ranges`.
        len: u8,
    },
}

impl GvaList {
    /// No ranges: nothing to flush.
    pub const NONE: Self = Self::Ranges {
        ranges: [GvaRange { start: 0, pages: 0 }; MAX_QUEUED_RANGES],
        len: 0,
    };

    /// The valid ranges (empty for [`GvaList::All`]).
    #[inline]
    pub fn ranges(&self) -> &[GvaRange] {
        match self {
            Self::All => &[],
            Self::Ranges { ranges, len } => &ranges[..usize::from(*len)],
        }
    }
}

/// A validated flush request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRequest {
    /// Which call.
    pub call: FlushCall,
    /// Fast (register) input.
    pub fast: bool,
    /// Address space (CR3) named by the caller.
    pub address_space: u64,
    /// Flush flags.
    pub flags: HvFlushFlags,
    /// Target VPs.
    pub processors: ProcessorSet,
    /// GVAs to flush.
    pub gvas: GvaList,
    /// Rep count of the call (0 for Space calls): completed reps on success.
    pub rep_count: u16,
    /// Whether `gvas` became `All` because the list had more than
    /// [`MAX_QUEUED_RANGES`] entries.
    pub too_many_entries: bool,
}

impl FlushRequest {
    /// A request to flush everything everywhere, the cheapest value to
    /// build (no bank or range array is written, only enum tags and
    /// scalars): what [`decode_into`] starts from and overwrites.
    #[inline(always)]
    pub(crate) fn blank() -> Self {
        Self {
            call: FlushCall::Space,
            fast: false,
            address_space: 0,
            // Not `new()`: it sets each field (not inlined across crates).
            flags: HvFlushFlags::from_bits(0),
            processors: ProcessorSet::All,
            gvas: GvaList::All,
            rep_count: 0,
            too_many_entries: false,
        }
    }
}

/// Decodes and validates one hypercall.
///
/// `Err` carries the status for RAX. `Ok` requests are ready for routing.
/// Never allocates; memory input is reached with one guest-memory access
/// (a mapping of the declared input, clipped to the input page), from
/// which only the parts the call uses are copied. [`decode_into`] is the
/// same without moving the request.
pub fn decode<R, M>(regs: &mut R, mem: &M, offer: Offer) -> Result<FlushRequest, HvStatus>
where
    R: HypercallRegisters + ?Sized,
    M: GuestMemory,
{
    let mut request = FlushRequest::blank();
    decode_into(regs, mem, offer, &mut request).map(|()| request)
}

/// [`decode`] into `out`, whatever it held: on `Ok` every field is
/// written (on `Err` `out` is unspecified). The request is built in place,
/// and a bank or range array is written only when the call has one: a
/// non-Ex request writes no array at all.
#[inline]
pub(crate) fn decode_into<R, M>(
    regs: &mut R,
    mem: &M,
    offer: Offer,
    out: &mut FlushRequest,
) -> Result<(), HvStatus>
where
    R: HypercallRegisters + ?Sized,
    M: GuestMemory,
{
    let control = HypercallControl::from(regs.control());
    let call = FlushCall::from_code(HvCallCode(control.code()));
    // Access first (KVM checks it before the reserved bits).
    if let Some(call) = call {
        if !offer.remote_flush || (call.is_ex() && !offer.ex_masks) {
            return Err(HvStatus::ACCESS_DENIED);
        }
    }
    if control.has_reserved_bits() {
        return Err(HvStatus::INVALID_HYPERCALL_INPUT);
    }
    let call = call.ok_or(HvStatus::INVALID_HYPERCALL_CODE)?;
    let (rep_count, rep_start) = (control.rep_count(), control.rep_start());
    if call.is_list() {
        // TLFS rep semantics; rep start < rep count is a restarted call
        // (OpenVMM), where KVM rejects any rep start.
        if rep_count == 0 || rep_start >= rep_count {
            return Err(HvStatus::INVALID_HYPERCALL_INPUT);
        }
    } else if rep_count != 0 || rep_start != 0 {
        return Err(HvStatus::INVALID_HYPERCALL_INPUT);
    }
    let var_header = usize::from(control.variable_header_size());
    if !call.is_ex() && var_header != 0 {
        return Err(HvStatus::INVALID_HYPERCALL_INPUT);
    }
    if control.fast() {
        if !offer.xmm_input {
            // Only RDX/R8 exist; every flush call needs more.
            return Err(HvStatus::INVALID_HYPERCALL_INPUT);
        }
        let input = super::input::fast(regs.input(), regs.output(), regs.xmm());
        parse(call, control, &input, out)
    } else {
        // Declared input: fixed header (hv_tlb_flush 3 qwords, hv_tlb_flush_ex
        // 4), variable header, rep list. At most 4 + 1023 + 4095 qwords.
        let fixed = if call.is_ex() { 4 } else { 3 };
        let declared = fixed + var_header + usize::from(rep_count);
        let gpa = regs.input();
        if gpa % 8 == 0 {
            if let Some(input) = super::input::map_physical(mem, gpa, declared) {
                return parse(call, control, &input, out);
            }
        }
        let input = super::input::map_memory(mem, gpa, declared)?;
        parse(call, control, &input, out)
    }
}

/// Validates the input of a call whose control word passed, and builds
/// the request in `out`, every field (Linux arch/x86/kvm/hyperv.c
/// `kvm_hv_flush_tlb` order: header, popcount, empty set, banks,
/// entries). Sets and lists are written in place, as enum variants of
/// `out`'s fields: building them on the stack and moving them in cost
/// several 512-byte copies per call.
// Inlined so the request is built in the caller's frame.
#[inline(always)]
fn parse<I: Input>(
    call: FlushCall,
    control: HypercallControl,
    input: &I,
    out: &mut FlushRequest,
) -> Result<(), HvStatus> {
    let var_header = usize::from(control.variable_header_size());
    let (rep_count, rep_start) = (control.rep_count(), control.rep_start());
    out.call = call;
    out.fast = control.fast();
    out.rep_count = rep_count;
    out.too_many_entries = false;
    let gva_at;
    if call.is_ex() {
        input.fits(4)?;
        let ex = HvTlbFlushExHeader {
            address_space: input.qword(0)?,
            flags: input.qword(1)?,
            format: input.qword(2)?,
            valid_bank_mask: input.qword(3)?,
        };
        out.flags = HvFlushFlags::from(ex.flags);
        out.address_space = ex.address_space;
        // For every format, before anything else is looked at (KVM).
        if var_header != ex.valid_bank_mask.count_ones() as usize {
            return Err(HvStatus::INVALID_HYPERCALL_INPUT);
        }
        // The GVA list starts after the variable header whatever the
        // format; banks of a set that is not used are skipped, never read.
        gva_at = 4 + var_header;
        if ex.format == HV_GENERIC_SET_SPARSE_4K && !out.flags.all_processors() {
            if var_header == 0 {
                // An empty sparse set: success at once, nothing read and
                // nobody flushed (KVM `kvm_hv_flush_tlb`).
                out.processors = ProcessorSet::EMPTY;
                out.gvas = if call.is_list() {
                    GvaList::NONE
                } else {
                    GvaList::All
                };
                return Ok(());
            }
            input.fits(gva_at)?;
            out.processors = ProcessorSet::EMPTY;
            if let ProcessorSet::Sparse {
                valid_bank_mask,
                banks,
            } = &mut out.processors
            {
                *valid_bank_mask = ex.valid_bank_mask;
                // Present banks come in ascending bank order; each is read
                // straight into its slot (no staging copy).
                for (i, bank) in SetBits(ex.valid_bank_mask).enumerate() {
                    banks[bank as usize] = input.qword(4 + i)?;
                }
            }
        } else {
            out.processors = ProcessorSet::All;
        }
    } else {
        input.fits(3)?;
        let header = HvTlbFlushHeader {
            address_space: input.qword(0)?,
            flags: input.qword(1)?,
            processor_mask: input.qword(2)?,
        };
        out.flags = HvFlushFlags::from(header.flags);
        out.address_space = header.address_space;
        gva_at = 3;
        out.processors = if out.flags.all_processors() || header.processor_mask == 0 {
            ProcessorSet::All
        } else {
            ProcessorSet::Mask(header.processor_mask)
        };
    }

    if !call.is_list() {
        out.gvas = GvaList::All;
        return Ok(());
    }
    // The whole declared list must fit: in the page for memory input
    // (TLFS), in the registers for fast input.
    input.fits(gva_at + usize::from(rep_count))?;
    let entries = usize::from(rep_count - rep_start);
    if entries > MAX_QUEUED_RANGES {
        out.too_many_entries = true;
        out.gvas = GvaList::All;
        return Ok(());
    }
    let first = gva_at + usize::from(rep_start);
    let extended = out.flags.use_extended_range_format();
    out.gvas = GvaList::NONE;
    if let GvaList::Ranges { ranges, len } = &mut out.gvas {
        for at in first..first + entries {
            let entry = input.qword(at)?;
            let range = if extended {
                GvaRange::from_extended(entry)
            } else {
                GvaRange::from_simple(entry)
            };
            if range.is_canonical() {
                ranges[usize::from(*len)] = range;
                *len += 1;
            }
        }
    }
    Ok(())
}
