//! The input parameter stream of one call: guest memory (bounded to one
//! page) or the fast registers (RDX, R8, then XMM0-5 as 12 halves).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::abi::{HvStatus, PAGE_SIZE};

/// Fast input: 2 general-purpose registers + 6 XMM registers of 2 halves.
pub(crate) const FAST_QWORDS: usize = 2 + 12;

/// A bounded, allocation-free reader over a hypercall's input qwords.
pub(crate) enum InputStream<'a, M: GuestMemory> {
    /// Memory input: reads from `gpa`, never past `end` (the page end).
    Memory { mem: &'a M, gpa: u64, end: u64 },
    /// Fast input: the qwords in register order.
    Fast {
        qwords: [u64; FAST_QWORDS],
        next: usize,
    },
}

impl<'a, M: GuestMemory> InputStream<'a, M> {
    /// Memory input at `gpa`: must be 8-byte aligned (TLFS: otherwise
    /// `HV_STATUS_INVALID_ALIGNMENT`); `len` bytes must not span pages.
    pub(crate) fn memory(mem: &'a M, gpa: u64, len: u64) -> Result<Self, HvStatus> {
        if gpa % 8 != 0 {
            return Err(HvStatus::INVALID_ALIGNMENT);
        }
        let page_end = (gpa & !(PAGE_SIZE - 1)).wrapping_add(PAGE_SIZE);
        if page_end == 0 || gpa.checked_add(len).is_none_or(|end| end > page_end) {
            return Err(HvStatus::INVALID_ALIGNMENT);
        }
        Ok(Self::Memory {
            mem,
            gpa,
            end: gpa + len,
        })
    }

    /// Fast input from RDX, R8 and the XMM registers (low half first).
    pub(crate) fn fast(rdx: u64, r8: u64, xmm: [u128; 6]) -> Self {
        let mut qwords = [0u64; FAST_QWORDS];
        qwords[0] = rdx;
        qwords[1] = r8;
        for (i, x) in xmm.iter().enumerate() {
            qwords[2 + 2 * i] = *x as u64;
            qwords[3 + 2 * i] = (*x >> 64) as u64;
        }
        Self::Fast { qwords, next: 0 }
    }

    /// Fills `out` with the next qwords. Memory that is not guest RAM and
    /// fast input past XMM5 both give `INVALID_HYPERCALL_INPUT`.
    pub(crate) fn read_into(&mut self, out: &mut [u64]) -> Result<(), HvStatus> {
        match self {
            Self::Memory { mem, gpa, end } => {
                let len = (out.len() * 8) as u64;
                if *gpa + len > *end {
                    return Err(HvStatus::INVALID_HYPERCALL_INPUT);
                }
                let bytes = zerocopy::IntoBytes::as_mut_bytes(out);
                mem.read_slice(bytes, GuestAddress(*gpa))
                    .map_err(|_| HvStatus::INVALID_HYPERCALL_INPUT)?;
                // The guest's bytes are little-endian like the host's (x86).
                *gpa += len;
                Ok(())
            }
            Self::Fast { qwords, next } => {
                let src = qwords
                    .get(*next..*next + out.len())
                    .ok_or(HvStatus::INVALID_HYPERCALL_INPUT)?;
                out.copy_from_slice(src);
                *next += out.len();
                Ok(())
            }
        }
    }

    /// Skips `n` qwords (rep elements already completed).
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), HvStatus> {
        match self {
            Self::Memory { gpa, end, .. } => {
                let len = (n * 8) as u64;
                if *gpa + len > *end {
                    return Err(HvStatus::INVALID_HYPERCALL_INPUT);
                }
                *gpa += len;
                Ok(())
            }
            Self::Fast { next, .. } => {
                if *next + n > FAST_QWORDS {
                    return Err(HvStatus::INVALID_HYPERCALL_INPUT);
                }
                *next += n;
                Ok(())
            }
        }
    }
}
