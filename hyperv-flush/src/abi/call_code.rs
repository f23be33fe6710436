//! Hypercall call codes (TLFS Appendix A, "Hypercall Code Reference").

/// A hypercall call code. Open: any `u16` is representable, the named
/// constants are the ones this crate serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HvCallCode(pub u16);

impl HvCallCode {
    /// HvCallFlushVirtualAddressSpace (simple call).
    pub const FLUSH_VIRTUAL_ADDRESS_SPACE: Self = Self(0x0002);
    /// HvCallFlushVirtualAddressList (rep call).
    pub const FLUSH_VIRTUAL_ADDRESS_LIST: Self = Self(0x0003);
    /// HvCallFlushVirtualAddressSpaceEx (simple call, variable header).
    pub const FLUSH_VIRTUAL_ADDRESS_SPACE_EX: Self = Self(0x0013);
    /// HvCallFlushVirtualAddressListEx (rep call, variable header).
    pub const FLUSH_VIRTUAL_ADDRESS_LIST_EX: Self = Self(0x0014);
}
