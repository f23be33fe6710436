//! The typed flush request and the decoder that validates a call into it.

use vm_memory::GuestMemory;
use vm_memory::bitmap::{BS, BitmapSlice};

use super::input::Input;
use super::io::HypercallRegisters;
use crate::abi::{
    GvaRange, HV_GENERIC_SET_SPARSE_4K, HvCallCode, HvFlushFlags, HvStatus, HvTlbFlushExHeader,
    HvTlbFlushHeader, HypercallControl, MAX_SPARSE_BANKS,
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

/// Target processors, as VP indices of the caller's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Inline on purpose: requests live on the stack, the hot path never allocates.
#[allow(clippy::large_enum_variant)]
// `Sparse` comes first: its all-zero value is the empty set, which the
// decoder starts from (`FlushRequest::UNSET`) and fills in place.
pub enum ProcessorSet {
    /// A sparse set: bank `i` present when bit `i` of `valid_bank_mask`
    /// is set; `banks[i]` holds VPs `64*i ..= 64*i+63`. Absent banks are 0.
    Sparse {
        /// Which banks are present.
        valid_bank_mask: u64,
        /// Bank contents indexed by bank number.
        banks: [u64; MAX_SPARSE_BANKS],
    },
    /// Every VP (flag, non-Ex mask 0, or Ex format ≠ SPARSE_4K).
    All,
}

impl ProcessorSet {
    /// The empty sparse set.
    pub const EMPTY: Self = Self::Sparse {
        valid_bank_mask: 0,
        banks: [0; MAX_SPARSE_BANKS],
    };

    /// The sparse set of `vps` (each below 4096; larger ones are ignored).
    pub fn from_vps(vps: &[u32]) -> Self {
        let mut banks = [0u64; MAX_SPARSE_BANKS];
        let mut valid_bank_mask = 0u64;
        for &vp in vps
            .iter()
            .filter(|vp| (**vp as usize) < MAX_SPARSE_BANKS * 64)
        {
            banks[vp as usize / 64] |= 1 << (vp % 64);
            valid_bank_mask |= 1 << (vp / 64);
        }
        Self::Sparse {
            valid_bank_mask,
            banks,
        }
    }

    /// Iterates the VP indices in the set (not for [`ProcessorSet::All`]).
    pub fn vp_indices(&self) -> impl Iterator<Item = u32> + '_ {
        let (mask, banks) = match self {
            Self::All => (0, None),
            Self::Sparse {
                valid_bank_mask,
                banks,
            } => (*valid_bank_mask, Some(banks)),
        };
        SetBits(mask).flat_map(move |bank| {
            let bits = banks.map_or(0, |b| b[bank as usize]);
            SetBits(bits).map(move |bit| bank * 64 + bit)
        })
    }

    /// Whether `vp` is in the set.
    pub fn contains(&self, vp: u32) -> bool {
        match self {
            Self::All => true,
            Self::Sparse { banks, .. } => banks
                .get(vp as usize / 64)
                .is_some_and(|b| b & (1 << (vp % 64)) != 0),
        }
    }

    /// Number of VPs in a sparse set (`None` for all).
    pub fn len(&self) -> Option<u32> {
        match self {
            Self::All => None,
            Self::Sparse { banks, .. } => Some(banks.iter().map(|b| b.count_ones()).sum()),
        }
    }

    /// Whether a sparse set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// Iterator over the set bits of a u64, lowest first.
struct SetBits(u64);

impl Iterator for SetBits {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// The GVAs to flush on each target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Inline on purpose: requests live on the stack, the hot path never allocates.
#[allow(clippy::large_enum_variant)]
// `Ranges` comes first, like `ProcessorSet::Sparse`.
pub enum GvaList {
    /// Canonical ranges to flush (`len` valid entries).
    Ranges {
        /// Normalised ranges.
        ranges: [GvaRange; MAX_QUEUED_RANGES],
        /// Valid entries in `ranges`.
        len: u8,
    },
    /// Flush the whole address space (Space calls, or too many entries).
    All,
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
    /// What [`decode_into`] starts from: all zero, with an empty sparse
    /// set and no ranges, which the decoder fills in place.
    pub(crate) const UNSET: Self = Self {
        call: FlushCall::Space,
        fast: false,
        address_space: 0,
        flags: HvFlushFlags::new(),
        processors: ProcessorSet::EMPTY,
        gvas: GvaList::NONE,
        rep_count: 0,
        too_many_entries: false,
    };
}

/// Decodes and validates one hypercall.
///
/// `Err` carries the status for RAX. `Ok` requests are ready for routing.
/// Never allocates; memory input is reached with one guest-memory access
/// (a mapping of the declared input, clipped to the input page), from
/// which only the parts the call uses are copied. [`decode_into`] is the
/// same without moving the ~800-byte request.
pub fn decode<R, M>(regs: &mut R, mem: &M, offer: Offer) -> Result<FlushRequest, HvStatus>
where
    R: HypercallRegisters + ?Sized,
    M: GuestMemory,
{
    let mut request = FlushRequest::UNSET;
    decode_into(regs, mem, offer, &mut request).map(|()| request)
}

/// [`decode`] into `out`, which must be [`FlushRequest::UNSET`]: the
/// request is built in place, writing only what the call sets (on `Err`
/// `out` is unspecified). Building it on the stack and moving it cost
/// several 512-byte copies per call.
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
        let input =
            super::input::fast::<BS<'_, M::Bitmap>>(regs.input(), regs.output(), regs.xmm());
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
/// the request in `out` (Linux arch/x86/kvm/hyperv.c `kvm_hv_flush_tlb`
/// order: header, popcount, empty set, banks, entries). The banks and
/// ranges are written in place: building them on the stack and moving
/// them in cost several 512-byte copies per call.
// Inlined so the request is built in the caller's frame.
#[inline(always)]
fn parse<B: BitmapSlice>(
    call: FlushCall,
    control: HypercallControl,
    input: &Input<'_, B>,
    out: &mut FlushRequest,
) -> Result<(), HvStatus> {
    let var_header = usize::from(control.variable_header_size());
    let (rep_count, rep_start) = (control.rep_count(), control.rep_start());
    // `out` is UNSET: an empty sparse set, no ranges.
    out.call = call;
    out.fast = control.fast();
    out.rep_count = rep_count;
    let gva_at;
    if call.is_ex() {
        let mut ex = HvTlbFlushExHeader::default();
        input.fits(4)?;
        input.read(0, &mut ex)?;
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
                if !call.is_list() {
                    out.gvas = GvaList::All;
                }
                return Ok(());
            }
            input.fits(gva_at)?;
            if let ProcessorSet::Sparse {
                valid_bank_mask,
                banks,
            } = &mut out.processors
            {
                *valid_bank_mask = ex.valid_bank_mask;
                // Present banks come in ascending bank order; each is read
                // straight into its slot (no staging copy).
                for (i, bank) in SetBits(ex.valid_bank_mask).enumerate() {
                    let bank = bank as usize;
                    input.read(4 + i, &mut banks[bank..bank + 1])?;
                }
            }
        } else {
            out.processors = ProcessorSet::All;
        }
    } else {
        let mut header = HvTlbFlushHeader::default();
        input.fits(3)?;
        input.read(0, &mut header)?;
        out.flags = HvFlushFlags::from(header.flags);
        out.address_space = header.address_space;
        gva_at = 3;
        if out.flags.all_processors() || header.processor_mask == 0 {
            out.processors = ProcessorSet::All;
        } else if let ProcessorSet::Sparse {
            valid_bank_mask,
            banks,
        } = &mut out.processors
        {
            *valid_bank_mask = 1;
            banks[0] = header.processor_mask;
        }
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
    let mut raw = [0u64; MAX_QUEUED_RANGES];
    input.read(gva_at + usize::from(rep_start), &mut raw[..entries])?;
    let extended = out.flags.use_extended_range_format();
    if let GvaList::Ranges { ranges, len } = &mut out.gvas {
        for entry in &raw[..entries] {
            let range = if extended {
                GvaRange::from_extended(*entry)
            } else {
                GvaRange::from_simple(*entry)
            };
            if range.is_canonical() {
                ranges[usize::from(*len)] = range;
                *len += 1;
            }
        }
    }
    Ok(())
}
