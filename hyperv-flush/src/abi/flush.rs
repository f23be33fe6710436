//! Flush hypercall inputs: TLFS §"HvCallFlushVirtualAddressSpace" and
//! friends; Linux `struct hv_tlb_flush` / `struct hv_tlb_flush_ex`.

use bitfield_struct::bitfield;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Flags of the flush calls (`HV_FLUSH_*`).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct HvFlushFlags {
    /// `HV_FLUSH_ALL_PROCESSORS`: ignore the processor set.
    pub all_processors: bool,
    /// `HV_FLUSH_ALL_VIRTUAL_ADDRESS_SPACES`: ignore `address_space`.
    pub all_virtual_address_spaces: bool,
    /// `HV_FLUSH_NON_GLOBAL_MAPPINGS_ONLY`.
    pub non_global_mappings_only: bool,
    /// `HV_FLUSH_USE_EXTENDED_RANGE_FORMAT`: GVA list entries are
    /// `HV_GVA_RANGE_EXTENDED`.
    pub use_extended_range_format: bool,
    #[bits(60)]
    reserved: u64,
}

/// `hv_tlb_flush`: the fixed header of the non-Ex calls (24 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvTlbFlushHeader {
    /// Address space (CR3) to flush.
    pub address_space: u64,
    /// [`HvFlushFlags`].
    pub flags: u64,
    /// VP indices 0..63; 0 means all processors (Windows Server 2012
    /// relies on it; Linux arch/x86/kvm/hyperv.c `kvm_hv_flush_tlb`).
    pub processor_mask: u64,
}

/// `hv_tlb_flush_ex` without its variable part (32 bytes): the sparse
/// banks follow as the variable header.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvTlbFlushExHeader {
    /// Address space (CR3) to flush.
    pub address_space: u64,
    /// [`HvFlushFlags`].
    pub flags: u64,
    /// `hv_vpset.format`: [`HV_GENERIC_SET_SPARSE_4K`] or [`HV_GENERIC_SET_ALL`].
    pub format: u64,
    /// Which 64-VP banks are present in `bank_contents`.
    pub valid_bank_mask: u64,
}

/// `HV_GENERIC_SET_SPARSE_4K`: banks of 64 VPs selected by `valid_bank_mask`.
pub const HV_GENERIC_SET_SPARSE_4K: u64 = 0;
/// `HV_GENERIC_SET_ALL`: every VP.
pub const HV_GENERIC_SET_ALL: u64 = 1;
/// VPs per bank of a sparse set.
pub const VPS_PER_BANK: usize = 64;
/// Banks in a sparse set (`valid_bank_mask` is 64 bits).
pub const MAX_SPARSE_BANKS: usize = 64;
