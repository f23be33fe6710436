//! Hypercall result codes (TLFS Appendix B; Linux `HV_STATUS_*`).

/// A hypercall status: the low 16 bits of RAX after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HvStatus(pub u16);

impl HvStatus {
    /// The operation succeeded.
    pub const SUCCESS: Self = Self(0x0000);
    /// The call code is not supported.
    pub const INVALID_HYPERCALL_CODE: Self = Self(0x0002);
    /// Reserved bits set, bad rep/header sizes, unreadable input.
    pub const INVALID_HYPERCALL_INPUT: Self = Self(0x0003);
    /// Input GPA not 8-byte aligned, or the input list spans pages.
    pub const INVALID_ALIGNMENT: Self = Self(0x0004);
    /// A parameter is invalid.
    pub const INVALID_PARAMETER: Self = Self(0x0005);
    /// The caller may not use this call (not offered, or switched off).
    pub const ACCESS_DENIED: Self = Self(0x0006);

    /// Every status this crate can return, for tables and counters.
    pub const ALL: [Self; 6] = [
        Self::SUCCESS,
        Self::INVALID_HYPERCALL_CODE,
        Self::INVALID_HYPERCALL_INPUT,
        Self::INVALID_ALIGNMENT,
        Self::INVALID_PARAMETER,
        Self::ACCESS_DENIED,
    ];

    /// The TLFS name, for humans and stable JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::SUCCESS => "success",
            Self::INVALID_HYPERCALL_CODE => "invalid_hypercall_code",
            Self::INVALID_HYPERCALL_INPUT => "invalid_hypercall_input",
            Self::INVALID_ALIGNMENT => "invalid_alignment",
            Self::INVALID_PARAMETER => "invalid_parameter",
            Self::ACCESS_DENIED => "access_denied",
            _ => "other",
        }
    }

    /// Index into [`HvStatus::ALL`], for counter arrays.
    #[inline]
    pub fn index(self) -> Option<usize> {
        Self::ALL.iter().position(|s| *s == self)
    }

    /// The RAX value for this status with `reps_completed` (bits 43:32).
    #[inline]
    pub fn to_result(self, reps_completed: u16) -> u64 {
        u64::from(self.0) | (u64::from(reps_completed & 0xfff) << 32)
    }
}
