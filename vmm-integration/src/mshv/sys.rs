//! The one raw MSHV call mshv-ioctls 0.7 keeps private: reading an extended
//! host partition property (`HVCALL_GET_PARTITION_PROPERTY_EX`) through
//! `MSHV_ROOT_HVCALL`.

use mshv_bindings::{
    HVCALL_GET_PARTITION_PROPERTY_EX, hv_input_get_partition_property_ex, hv_partition_property_ex,
    mshv_root_hvcall,
};
use std::fs::File;

use mshv_ioctls::MSHV_ROOT_HVCALL;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

/// Reads bank 0 of an extended host partition property with the banked
/// shape of TLFS partition properties: u16 bank count, three reserved u16,
/// then the u64 banks.
pub(super) fn host_property_ex_bank0(mshv: &File, code: u32) -> Result<u64, errno::Error> {
    let input = hv_input_get_partition_property_ex {
        property_code: code,
        ..Default::default()
    };
    let mut output = Box::new(hv_partition_property_ex::default());
    let mut args = mshv_root_hvcall {
        code: HVCALL_GET_PARTITION_PROPERTY_EX as u16,
        in_sz: std::mem::size_of_val(&input) as u16,
        out_sz: std::mem::size_of::<hv_partition_property_ex>() as u16,
        in_ptr: std::ptr::addr_of!(input) as u64,
        out_ptr: std::ptr::addr_of_mut!(*output) as u64,
        ..Default::default()
    };
    // SAFETY: `mshv` is an open /dev/mshv; `args` points at `input` and at
    // `output` (boxed, 4072 bytes), both live across the call, with their
    // exact sizes, so the kernel reads and writes only inside them.
    let ret = unsafe { ioctl_with_mut_ref(mshv, MSHV_ROOT_HVCALL(), &mut args) };
    if ret != 0 {
        return Err(errno::Error::last());
    }
    // SAFETY: `buffer` spans the whole union and every byte pattern is a
    // valid byte array.
    let bytes = unsafe { &output.buffer };
    let mut bank0 = [0u8; 8];
    bank0.copy_from_slice(&bytes[8..16]);
    Ok(u64::from_le_bytes(bank0))
}
