//! The hypercall input value (RCX): TLFS §3.7 "Hypercall Inputs".

use bitfield_struct::bitfield;

/// The 64-bit hypercall control word.
///
/// Layout (TLFS §3.7, Linux `HV_HYPERCALL_*` masks in hvgdk_mini.h): call
/// code 15:0, fast 16, variable header size (8-byte units) 26:17, reserved
/// 31:27, rep count 43:32, reserved 47:44, rep start index 59:48, reserved
/// 63:60. Bit 31 ("nested") is reserved for a guest of this VMM.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct HypercallControl {
    /// Call code.
    pub code: u16,
    /// Register-based ("fast") input.
    pub fast: bool,
    /// Size of the variable header in 8-byte units.
    #[bits(10)]
    pub variable_header_size: u16,
    #[bits(5)]
    reserved0: u8,
    /// Number of rep elements.
    #[bits(12)]
    pub rep_count: u16,
    #[bits(4)]
    reserved1: u8,
    /// First rep element to process (restartable rep calls).
    #[bits(12)]
    pub rep_start: u16,
    #[bits(4)]
    reserved2: u8,
}

impl HypercallControl {
    /// Bits that must be zero: 31:27, 47:44 and 63:60.
    pub const RESERVED_MASK: u64 = (0x1f << 27) | (0xf << 44) | (0xf << 60);

    /// Whether any reserved bit is set.
    pub fn has_reserved_bits(self) -> bool {
        u64::from(self) & Self::RESERVED_MASK != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_positions_match_the_tlfs() {
        let c = HypercallControl::new()
            .with_code(0x0014)
            .with_fast(true)
            .with_variable_header_size(3)
            .with_rep_count(0xabc)
            .with_rep_start(0x123);
        assert_eq!(
            u64::from(c),
            0x0014 | 1 << 16 | 3 << 17 | 0xabc << 32 | 0x123 << 48
        );
        assert!(!c.has_reserved_bits());
        for bit in [27, 31, 44, 47, 60, 63] {
            assert!(HypercallControl::from(1u64 << bit).has_reserved_bits());
        }
    }
}
