//! The reference VMM's reset ROM (`docs/guest-abi.md` §10.4): 64 KiB of
//! read-only memory ending at 4 GiB whose reset vector re-enters the PVH
//! entry, so an INIT of the BSP (or a RESET) boots the image again the way
//! firmware would.

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::mmap::FromRangesError;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
};

use super::layout::pvh;
use super::workloads::firmware_page;

/// Errors building or mapping the ROM.
#[derive(Debug, Error)]
pub enum RomError {
    /// The ROM's memory could not be allocated.
    #[error("Cannot allocate the reset ROM")]
    Allocate(#[source] FromRangesError),
    /// Writing its contents failed.
    #[error("Cannot write the reset ROM")]
    Write(#[source] GuestMemoryError),
    /// The entry or start_info address does not fit the 32-bit firmware.
    #[error("PVH entry {entry:#x} or start_info {start_info:#x} is above 4 GiB")]
    Address {
        /// The PVH entry.
        entry: u64,
        /// The start_info GPA.
        start_info: u64,
    },
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("Cannot register the reset ROM with KVM")]
    Register(#[source] kvm_ioctls::Error),
}

/// The ROM image: 0xFF (like erased flash) except its last page, the
/// firmware of `asm/firmware.s` with the PVH entry and start_info patched in.
pub fn rom_image(entry: u64, start_info: u64) -> Result<Vec<u8>, RomError> {
    let (Ok(entry32), Ok(start_info32)) = (u32::try_from(entry), u32::try_from(start_info)) else {
        return Err(RomError::Address { entry, start_info });
    };
    let mut rom = vec![0xffu8; pvh::ROM_SIZE as usize];
    let page = rom.len() - firmware_page().len();
    rom[page..].copy_from_slice(firmware_page());
    let at = |offset: u64| page + offset as usize;
    rom[at(pvh::FW_START_INFO)..at(pvh::FW_START_INFO) + 4]
        .copy_from_slice(&start_info32.to_le_bytes());
    rom[at(pvh::FW_ENTRY)..at(pvh::FW_ENTRY) + 4].copy_from_slice(&entry32.to_le_bytes());
    Ok(rom)
}

/// Allocates the ROM's memory at [`pvh::ROM_GPA`] holding `image`.
pub fn create_rom(image: &[u8]) -> Result<GuestMemoryMmap, RomError> {
    let rom = GuestMemoryMmap::from_ranges(&[(GuestAddress(pvh::ROM_GPA), pvh::ROM_SIZE as usize)])
        .map_err(RomError::Allocate)?;
    rom.write_slice(image, GuestAddress(pvh::ROM_GPA))
        .map_err(RomError::Write)?;
    Ok(rom)
}

/// Registers `rom` as memory slot `slot`, read-only when `readonly` (the
/// host has `KVM_CAP_READONLY_MEM`; guest writes then exit as MMIO).
///
/// # Safety
///
/// `rom` must stay mapped for as long as `vm` exists.
pub unsafe fn register_rom(
    vm: &VmFd,
    rom: &GuestMemoryMmap,
    slot: u32,
    readonly: bool,
) -> Result<(), RomError> {
    for region in rom.iter() {
        let entry = kvm_userspace_memory_region {
            slot,
            flags: if readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the entry describes a live mapping owned by `rom`, which the
        // caller keeps alive as long as the VM.
        unsafe { vm.set_user_memory_region(entry) }.map_err(RomError::Register)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_ends_with_the_reset_vector_and_the_patched_addresses() {
        let rom = rom_image(0x10_0000, 0xB000).unwrap();
        assert_eq!(rom.len() as u64, pvh::ROM_SIZE);
        let page = rom.len() - 0x1000;
        let word = |o: u64| {
            let at = page + o as usize;
            u32::from_le_bytes(rom[at..at + 4].try_into().unwrap())
        };
        assert_eq!(word(pvh::FW_START_INFO), 0xB000);
        assert_eq!(word(pvh::FW_ENTRY), 0x10_0000);
        // 0xFFFFFFF0: a near jmp back into the page.
        assert_eq!(rom[rom.len() - 16], 0xe9);
        assert_eq!(rom[0], 0xff);
        assert!(matches!(
            rom_image(1 << 32, 0xB000),
            Err(RomError::Address { .. })
        ));
        let mem = create_rom(&rom).unwrap();
        let mut vector = [0u8; 1];
        mem.read_slice(&mut vector, GuestAddress(0xFFFF_FFF0))
            .unwrap();
        assert_eq!(vector[0], 0xe9);
    }
}
