//! The input parameters of one call, in qwords: guest memory (one mapping
//! of the declared input, bounded by the input page) or the fast registers
//! (RDX, R8, then XMM0-5 as 12 halves).

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    GuestAddress, GuestMemory, GuestMemoryBackend, Permissions, VolatileMemory, VolatileSlice,
};

use crate::abi::{HvStatus, PAGE_SIZE};

/// Fast input: 2 general-purpose registers + 6 XMM registers of 2 halves.
pub(crate) const FAST_QWORDS: usize = 2 + 12;

/// A bounded, allocation-free view of a hypercall's input qwords.
///
/// Positions are qword offsets from the start of the input. A caller
/// first asks whether a part it needs lies inside the input area
/// ([`Self::fits`]), then reads it one qword at a time ([`Self::qword`]):
/// each qword goes straight from guest memory (or the registers) to where
/// it is used, with no staging buffer, so a request is built without
/// copying the input twice.
pub(crate) trait Input {
    /// Whether qwords `0..end` lie inside the input area: the input page
    /// for memory (else `INVALID_ALIGNMENT`: the list spans pages), the 14
    /// fast qwords for fast input (else `INVALID_HYPERCALL_INPUT`).
    fn fits(&self, end: usize) -> Result<(), HvStatus>;

    /// The qword at position `at`. Memory the mapping does not cover (not
    /// RAM) gives `INVALID_HYPERCALL_INPUT`.
    fn qword(&self, at: usize) -> Result<u64, HvStatus>;
}

/// Memory input: `slice` maps the declared input up to the page end;
/// `room` is the number of qwords from the GPA to that page end.
pub(crate) struct MemoryInput<'a, B: BitmapSlice> {
    slice: VolatileSlice<'a, B>,
    room: usize,
}

/// Fast input: the qwords in register order.
pub(crate) struct FastInput([u64; FAST_QWORDS]);

/// Qwords from `gpa` (8-byte aligned) to the end of its page: 1..=512,
/// computed without address arithmetic that could wrap.
pub(crate) fn room(gpa: u64) -> usize {
    ((PAGE_SIZE - gpa % PAGE_SIZE) / 8) as usize
}

/// The fast path of [`map_memory`] for guest memory without an IOMMU: one
/// region lookup and one slice of the region, `None` when the range is not
/// within one region (then [`map_memory`] decides).
#[inline]
pub(crate) fn map_physical<M: GuestMemory>(
    mem: &M,
    gpa: u64,
    qwords: usize,
) -> Option<MemoryInput<'_, vm_memory::bitmap::MS<'_, M::PhysicalMemory>>> {
    let room = room(gpa);
    let slice = mem
        .physical_memory()?
        .get_slice(GuestAddress(gpa), qwords.min(room) * 8)
        .ok()?;
    Some(MemoryInput { slice, room })
}

/// Maps `qwords` qwords of memory input at `gpa` with one guest-memory
/// access, clipped to the input page. The GPA must be 8-byte aligned
/// (TLFS: otherwise `HV_STATUS_INVALID_ALIGNMENT`); a GPA that is not RAM,
/// the last page of the 64-bit space included, is
/// `HV_STATUS_INVALID_HYPERCALL_INPUT` (KVM: `kvm_read_guest` fails).
pub(crate) fn map_memory<M: GuestMemory>(
    mem: &M,
    gpa: u64,
    qwords: usize,
) -> Result<MemoryInput<'_, vm_memory::bitmap::BS<'_, M::Bitmap>>, HvStatus> {
    if gpa % 8 != 0 {
        return Err(HvStatus::INVALID_ALIGNMENT);
    }
    let room = room(gpa);
    let len = qwords.min(room) * 8;
    let slice = mem
        .get_slices(GuestAddress(gpa), len, Permissions::Read)
        .ok()
        .and_then(|mut slices| slices.next())
        .and_then(Result::ok)
        .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)?;
    Ok(MemoryInput { slice, room })
}

/// Fast input from RDX, R8 and the XMM registers (low half first).
#[inline]
pub(crate) fn fast(rdx: u64, r8: u64, xmm: [u128; 6]) -> FastInput {
    let mut qwords = [0u64; FAST_QWORDS];
    qwords[0] = rdx;
    qwords[1] = r8;
    for (i, x) in xmm.iter().enumerate() {
        qwords[2 + 2 * i] = *x as u64;
        qwords[3 + 2 * i] = (*x >> 64) as u64;
    }
    FastInput(qwords)
}

impl<B: BitmapSlice> Input for MemoryInput<'_, B> {
    #[inline]
    fn fits(&self, end: usize) -> Result<(), HvStatus> {
        if end > self.room {
            return Err(HvStatus::INVALID_ALIGNMENT);
        }
        Ok(())
    }

    #[inline]
    fn qword(&self, at: usize) -> Result<u64, HvStatus> {
        // The guest's bytes are little-endian like the host's (x86). One
        // volatile 8-byte load.
        at.checked_mul(8)
            .and_then(|offset| self.slice.get_ref::<u64>(offset).ok())
            .map(|qword| qword.load())
            .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)
    }
}

impl Input for FastInput {
    #[inline]
    fn fits(&self, end: usize) -> Result<(), HvStatus> {
        if end > FAST_QWORDS {
            return Err(HvStatus::INVALID_HYPERCALL_INPUT);
        }
        Ok(())
    }

    #[inline]
    fn qword(&self, at: usize) -> Result<u64, HvStatus> {
        self.0
            .get(at)
            .copied()
            .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)
    }
}
