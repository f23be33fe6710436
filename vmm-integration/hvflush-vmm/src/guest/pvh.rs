//! PVH images (`docs/guest-abi.md` §10): building the ELF of a built-in
//! workload (boot code + workload), checking and loading any PVH ELF, and
//! the boot information a VMM hands to it (start_info, memory map, module 0
//! = the parameter block), as Cloud Hypervisor's `--kernel` and `--initramfs` do.
//!
//! The ELF structures and the loader are rust-vmm's `linux-loader` (its
//! vm-memory is 0.18, like ours); its loader does not bound segments to RAM
//! the guest owns, so [`PvhImage::parse`] checks every header first.

use std::io::Cursor;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::elf::{
    EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_EXEC, EV_CURRENT, Elf64_Ehdr,
    Elf64_Nhdr, Elf64_Phdr, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE,
};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use thiserror::Error;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::layout::{CONTROL_PAGE_GPA, GuestLayout, IMAGE_GPA, MMIO_HOLE_GPA, pvh};
use super::workloads::{Workload, boot_code, image};

/// `XEN_HVM_START_MAGIC_VALUE` (Xen public/arch-x86/hvm/start_info.h).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `XEN_ELFNOTE_PHYS32_ENTRY` (Xen public/elfnote.h): 32-bit PVH entry address.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Owner name of Xen ELF notes, NUL included.
const XEN_NOTE_NAME: &[u8; 4] = b"Xen\0";
/// `XEN_HVM_MEMMAP_TYPE_RAM` / `_RESERVED` (start_info.h, e820 numbering).
const MEMMAP_RAM: u32 = 1;
const MEMMAP_RESERVED: u32 = 2;
/// End of conventional memory; 0xA0000-0xFFFFF is legacy VGA/BIOS space.
const LOW_RAM_END: u64 = 0xA_0000;
/// File offset of the PT_LOAD data in the images we write (page aligned).
const SEGMENT_FILE_OFFSET: u64 = 0x1000;
/// ELF notes align their name and descriptor to 4 bytes (ELF spec, "Note Section").
const NOTE_ALIGN: usize = 4;

/// Why a PVH ELF is refused.
#[derive(Debug, Error)]
pub enum PvhError {
    /// Shorter than an ELF header.
    #[error("ELF image is {0} bytes, shorter than an ELF header")]
    TooShort(usize),
    /// Not `\x7fELF`.
    #[error("Image is not an ELF file")]
    NotElf,
    /// ELFCLASS32 or unknown (Cloud Hypervisor also takes only 64-bit ELFs).
    #[error("ELF class {0} is not ELFCLASS64")]
    Class(u8),
    /// Big-endian or unknown data encoding.
    #[error("ELF data encoding {0} is not little endian")]
    Encoding(u8),
    /// Not EM_X86_64.
    #[error("ELF machine {0} is not x86-64")]
    Machine(u16),
    /// Program headers of another size, or outside the file.
    #[error("ELF program headers are malformed")]
    ProgramHeaders,
    /// A segment's file range is outside the file or larger than its memory size.
    #[error("ELF segment {0} is malformed")]
    Segment(usize),
    /// A PT_LOAD segment outside the guest-owned RAM.
    #[error("ELF segment {index} at {start:#x}..{end:#x} is outside guest RAM {min:#x}..{max:#x}")]
    SegmentOutsideRam {
        /// Program header index.
        index: usize,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Lowest allowed GPA (1 MiB).
        min: u64,
        /// The usable limit.
        max: u64,
    },
    /// No PT_LOAD segment.
    #[error("ELF image has no PT_LOAD segment")]
    NoLoadSegment,
    /// A PT_NOTE whose notes run past it.
    #[error("ELF note segment {0} is malformed")]
    Note(usize),
    /// No Xen PHYS32_ENTRY note.
    #[error("ELF image has no PVH entry note (owner Xen, type 18)")]
    NoPvhNote,
    /// The PVH entry is not inside a loaded segment.
    #[error("PVH entry {0:#x} is not inside a PT_LOAD segment")]
    EntryOutsideSegments(u32),
    /// linux-loader refused or failed to load the image.
    #[error("Cannot load the ELF image")]
    Load(#[source] linux_loader::loader::Error),
    /// linux-loader found another PVH entry than the headers say.
    #[error("ELF loader found PVH entry {found}, the note says {expected:#x}")]
    LoaderEntry {
        /// What our parse found.
        expected: u32,
        /// What linux-loader reported.
        found: String,
    },
    /// Writing start_info, module list or memory map failed.
    #[error("Cannot write the PVH boot information")]
    BootInfo(#[source] linux_loader::configurator::Error),
    /// Writing the parameter block failed.
    #[error("Cannot write the PVH parameter block")]
    WriteParams(#[source] GuestMemoryError),
}

/// The parameter block (module 0): what the boot code cannot find out itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvhParams {
    /// vCPU count (RSI).
    pub vcpu_count: u32,
    /// Usable limit (RDX); stacks above it.
    pub usable_limit: u64,
    /// Control page GPA (RCX).
    pub control_gpa: u64,
}

impl PvhParams {
    /// The values of the flat ABI for `layout`.
    pub fn for_layout(layout: &GuestLayout) -> Self {
        Self {
            vcpu_count: layout.vcpu_count(),
            usable_limit: layout.usable_limit(),
            control_gpa: CONTROL_PAGE_GPA,
        }
    }

    /// The block as the boot code reads it (little endian).
    pub fn to_bytes(&self) -> [u8; pvh::PARAMS_SIZE] {
        let mut b = [0u8; pvh::PARAMS_SIZE];
        b[0..4].copy_from_slice(&pvh::PARAMS_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&pvh::PARAMS_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.vcpu_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.usable_limit.to_le_bytes());
        b[24..32].copy_from_slice(&self.control_gpa.to_le_bytes());
        b
    }
}

/// Whether `bytes` start like an ELF file (then `--guest-image` treats it as PVH).
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(ELFMAG)
}

/// The PT_LOAD contents of the PVH image of `workload`: the boot code at
/// [`pvh::BOOT_GPA`], zeroed boot data and page tables, the workload's flat
/// image at [`pvh::WORKLOAD_GPA`].
fn segment(workload: Workload) -> Vec<u8> {
    let boot = boot_code();
    let mut bytes = boot.to_vec();
    bytes.resize((pvh::WORKLOAD_GPA - pvh::BOOT_GPA) as usize, 0);
    bytes.extend_from_slice(image(workload));
    bytes
}

/// The PVH ELF of a built-in workload: one PT_LOAD at [`pvh::BOOT_GPA`] and a
/// PT_NOTE with the Xen PHYS32_ENTRY note (entry = [`pvh::BOOT_GPA`]).
pub fn build_image(workload: Workload) -> Vec<u8> {
    let data = segment(workload);
    let ehdr_size = std::mem::size_of::<Elf64_Ehdr>();
    let phdr_size = std::mem::size_of::<Elf64_Phdr>();
    let note_offset = ehdr_size + 2 * phdr_size;
    let note_size = std::mem::size_of::<Elf64_Nhdr>() + XEN_NOTE_NAME.len() + 4;

    let mut ident = [0u8; 16];
    ident[..4].copy_from_slice(ELFMAG);
    ident[EI_CLASS] = ELFCLASS64;
    ident[EI_DATA] = ELFDATA2LSB;
    ident[linux_loader::elf::EI_VERSION] = EV_CURRENT;
    let ehdr = Elf64_Ehdr {
        e_ident: ident,
        e_type: ET_EXEC,
        e_machine: EM_X86_64,
        e_version: u32::from(EV_CURRENT),
        e_entry: pvh::BOOT_GPA,
        e_phoff: ehdr_size as u64,
        e_ehsize: ehdr_size as u16,
        e_phentsize: phdr_size as u16,
        e_phnum: 2,
        ..Default::default()
    };
    let load = Elf64_Phdr {
        p_type: PT_LOAD,
        p_flags: PF_R | PF_W | PF_X,
        p_offset: SEGMENT_FILE_OFFSET,
        p_vaddr: pvh::BOOT_GPA,
        p_paddr: pvh::BOOT_GPA,
        p_filesz: data.len() as u64,
        p_memsz: data.len() as u64,
        p_align: 0x1000,
    };
    let note = Elf64_Phdr {
        p_type: PT_NOTE,
        p_flags: PF_R,
        p_offset: note_offset as u64,
        p_filesz: note_size as u64,
        p_memsz: note_size as u64,
        p_align: NOTE_ALIGN as u64,
        ..Default::default()
    };
    let nhdr = Elf64_Nhdr {
        n_namesz: XEN_NOTE_NAME.len() as u32,
        n_descsz: 4,
        n_type: XEN_ELFNOTE_PHYS32_ENTRY,
    };
    let mut elf = Vec::with_capacity(SEGMENT_FILE_OFFSET as usize + data.len());
    elf.extend_from_slice(ehdr.as_slice());
    elf.extend_from_slice(load.as_slice());
    elf.extend_from_slice(note.as_slice());
    elf.extend_from_slice(nhdr.as_slice());
    elf.extend_from_slice(XEN_NOTE_NAME);
    elf.extend_from_slice(&(pvh::BOOT_GPA as u32).to_le_bytes());
    elf.resize(SEGMENT_FILE_OFFSET as usize, 0);
    elf.extend_from_slice(&data);
    elf
}

/// A checked PVH ELF.
#[derive(Debug)]
pub struct PvhImage<'a> {
    bytes: &'a [u8],
    entry: u32,
}

impl<'a> PvhImage<'a> {
    /// Checks the headers: ELFCLASS64, little endian, x86-64; every PT_LOAD
    /// inside the file and inside guest RAM from 1 MiB to the usable limit;
    /// a Xen PHYS32_ENTRY note whose entry lies in a PT_LOAD.
    pub fn parse(bytes: &'a [u8], layout: &GuestLayout) -> Result<Self, PvhError> {
        let ehdr_size = std::mem::size_of::<Elf64_Ehdr>();
        let ehdr = bytes
            .get(..ehdr_size)
            .and_then(Elf64_Ehdr::from_slice)
            .ok_or(PvhError::TooShort(bytes.len()))?;
        if !is_elf(bytes) {
            return Err(PvhError::NotElf);
        }
        if ehdr.e_ident[EI_CLASS] != ELFCLASS64 {
            return Err(PvhError::Class(ehdr.e_ident[EI_CLASS]));
        }
        if ehdr.e_ident[EI_DATA] != ELFDATA2LSB {
            return Err(PvhError::Encoding(ehdr.e_ident[EI_DATA]));
        }
        if ehdr.e_machine != EM_X86_64 {
            return Err(PvhError::Machine(ehdr.e_machine));
        }
        let phdrs = program_headers(bytes, ehdr)?;
        let mut loads = Vec::new();
        let mut entry = None;
        for (index, ph) in phdrs.iter().enumerate() {
            let file_end = ph.p_offset.checked_add(ph.p_filesz);
            if file_end.is_none_or(|end| end > bytes.len() as u64) {
                return Err(PvhError::Segment(index));
            }
            match ph.p_type {
                PT_LOAD if ph.p_memsz > 0 => {
                    if ph.p_filesz > ph.p_memsz {
                        return Err(PvhError::Segment(index));
                    }
                    let (min, max) = (IMAGE_GPA, layout.usable_limit());
                    let end = ph.p_paddr.saturating_add(ph.p_memsz);
                    if ph.p_paddr < min || end > max {
                        return Err(PvhError::SegmentOutsideRam {
                            index,
                            start: ph.p_paddr,
                            end,
                            min,
                            max,
                        });
                    }
                    loads.push((ph.p_paddr, ph.p_paddr + ph.p_filesz));
                }
                PT_NOTE if entry.is_none() => {
                    let start = ph.p_offset as usize;
                    let notes = &bytes[start..start + ph.p_filesz as usize];
                    entry = pvh_entry(notes).map_err(|()| PvhError::Note(index))?;
                }
                _ => {}
            }
        }
        if loads.is_empty() {
            return Err(PvhError::NoLoadSegment);
        }
        let entry = entry.ok_or(PvhError::NoPvhNote)?;
        if !loads
            .iter()
            .any(|&(start, end)| (start..end).contains(&u64::from(entry)))
        {
            return Err(PvhError::EntryOutsideSegments(entry));
        }
        Ok(Self { bytes, entry })
    }

    /// The 32-bit PVH entry address.
    pub fn entry(&self) -> u64 {
        u64::from(self.entry)
    }

    /// Loads the segments into `mem` with linux-loader, which must find the same entry.
    pub fn load(&self, mem: &GuestMemoryMmap) -> Result<(), PvhError> {
        let result = Elf::load(
            mem,
            None,
            &mut Cursor::new(self.bytes),
            Some(GuestAddress(IMAGE_GPA)),
        )
        .map_err(PvhError::Load)?;
        match result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(GuestAddress(found))
                if found == u64::from(self.entry) =>
            {
                Ok(())
            }
            other => Err(PvhError::LoaderEntry {
                expected: self.entry,
                found: other.to_string(),
            }),
        }
    }
}

fn program_headers(bytes: &[u8], ehdr: &Elf64_Ehdr) -> Result<Vec<Elf64_Phdr>, PvhError> {
    let size = std::mem::size_of::<Elf64_Phdr>();
    if usize::from(ehdr.e_phentsize) != size {
        return Err(PvhError::ProgramHeaders);
    }
    let start = usize::try_from(ehdr.e_phoff).map_err(|_| PvhError::ProgramHeaders)?;
    let len = usize::from(ehdr.e_phnum) * size;
    let table = start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or(PvhError::ProgramHeaders)?;
    Ok(table
        .chunks_exact(size)
        .filter_map(|c| Elf64_Phdr::from_slice(c).copied())
        .collect())
}

/// The PHYS32_ENTRY of the notes in `notes` (`Ok(None)` if none, `Err` if a
/// note runs past the segment).
fn pvh_entry(mut notes: &[u8]) -> Result<Option<u32>, ()> {
    let header = std::mem::size_of::<Elf64_Nhdr>();
    let align = |n: u32| (n as usize).div_ceil(NOTE_ALIGN) * NOTE_ALIGN;
    while notes.len() >= header {
        let nhdr = Elf64_Nhdr::from_slice(&notes[..header]).ok_or(())?;
        let name_end = header + align(nhdr.n_namesz);
        let desc_end = name_end + align(nhdr.n_descsz);
        if desc_end > notes.len() {
            return Err(());
        }
        let name = &notes[header..header + nhdr.n_namesz as usize];
        if nhdr.n_type == XEN_ELFNOTE_PHYS32_ENTRY && name == XEN_NOTE_NAME {
            let desc = &notes[name_end..name_end + nhdr.n_descsz as usize];
            let bytes: [u8; 4] = desc.get(..4).ok_or(())?.try_into().map_err(|_| ())?;
            return Ok(Some(u32::from_le_bytes(bytes)));
        }
        notes = &notes[desc_end..];
    }
    Ok(None)
}

/// Writes what a PVH loader hands the guest: start_info at
/// [`pvh::START_INFO_GPA`] (version 1), one module (the parameter block) and
/// the memory map (low RAM, RAM from 1 MiB to the MMIO hole, the reset ROM
/// reserved). Returns the start_info GPA for EBX.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    layout: &GuestLayout,
    params: &PvhParams,
) -> Result<u64, PvhError> {
    let high_end = layout.memory_size().min(MMIO_HOLE_GPA);
    // The flush records are reserved, as a VMM must reserve them: KVM
    // writes them on every entry (docs/cloud-hypervisor.md §2).
    let records = crate::guest::layout::record_range();
    let memmap = [
        memmap_entry(0, records.start, MEMMAP_RAM),
        memmap_entry(records.start, records.end - records.start, MEMMAP_RESERVED),
        memmap_entry(records.end, LOW_RAM_END - records.end, MEMMAP_RAM),
        memmap_entry(IMAGE_GPA, high_end - IMAGE_GPA, MEMMAP_RAM),
        memmap_entry(pvh::ROM_GPA, pvh::ROM_SIZE, MEMMAP_RESERVED),
    ];
    let module = hvm_modlist_entry {
        paddr: pvh::PARAMS_GPA,
        size: pvh::PARAMS_SIZE as u64,
        ..Default::default()
    };
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: 1,
        modlist_paddr: pvh::MODLIST_GPA,
        memmap_paddr: pvh::MEMMAP_GPA,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut boot = BootParams::new(&start_info, GuestAddress(pvh::START_INFO_GPA));
    boot.set_sections(&memmap, GuestAddress(pvh::MEMMAP_GPA));
    boot.set_modules(&[module], GuestAddress(pvh::MODLIST_GPA));
    PvhBootConfigurator::write_bootparams(&boot, mem).map_err(PvhError::BootInfo)?;
    mem.write_slice(&params.to_bytes(), GuestAddress(pvh::PARAMS_GPA))
        .map_err(PvhError::WriteParams)?;
    Ok(pvh::START_INFO_GPA)
}

fn memmap_entry(addr: u64, size: u64, type_: u32) -> hvm_memmap_table_entry {
    hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    }
}

const _: () = assert!(3 <= pvh::MAX_MEMMAP_ENTRIES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::boot::create_guest_memory;
    use crate::guest::layout::MIN_MEMORY_SIZE;

    fn layout() -> GuestLayout {
        GuestLayout::new(MIN_MEMORY_SIZE, 4).unwrap()
    }

    fn put_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    // Offsets of the fields the tests corrupt (ELF-64 spec).
    const E_MACHINE: usize = 18;
    const E_PHOFF: usize = 32;
    const E_PHENTSIZE: usize = 54;
    const PH_LOAD: usize = 64;
    const PH_NOTE: usize = 64 + 56;
    const P_OFFSET: usize = 8;
    const P_PADDR: usize = 24;
    const P_FILESZ: usize = 32;
    const P_MEMSZ: usize = 40;
    const NOTE: usize = 64 + 2 * 56;

    #[test]
    fn built_images_parse_and_load_with_the_boot_code_entry() {
        let layout = layout();
        for w in Workload::ALL {
            let elf = build_image(w);
            assert!(is_elf(&elf));
            let image = PvhImage::parse(&elf, &layout).unwrap();
            assert_eq!(image.entry(), pvh::BOOT_GPA);
            let mem = create_guest_memory(&layout).unwrap();
            image.load(&mem).unwrap();
            let mut first = [0u8; 16];
            mem.read_slice(&mut first, GuestAddress(pvh::WORKLOAD_GPA))
                .unwrap();
            assert_eq!(&first, &image_prefix(w), "{w} sits at WORKLOAD_GPA");
            let mut boot = [0u8; 8];
            mem.read_slice(&mut boot, GuestAddress(pvh::BOOT_GPA))
                .unwrap();
            assert_eq!(&boot, &boot_code()[..8]);
        }
    }

    fn image_prefix(w: Workload) -> [u8; 16] {
        image(w)[..16].try_into().unwrap()
    }

    fn refused(elf: &[u8]) -> PvhError {
        PvhImage::parse(elf, &layout()).expect_err("malformed image accepted")
    }

    #[test]
    fn malformed_images_are_refused_with_their_reason() {
        let good = build_image(Workload::Smoke);
        assert!(matches!(refused(&good[..40]), PvhError::TooShort(40)));
        let mut e = good.clone();
        e[0] = b'X';
        assert!(matches!(refused(&e), PvhError::NotElf));
        let mut e = good.clone();
        e[EI_CLASS] = 1;
        assert!(matches!(refused(&e), PvhError::Class(1)));
        let mut e = good.clone();
        e[EI_DATA] = 2;
        assert!(matches!(refused(&e), PvhError::Encoding(2)));
        let mut e = good.clone();
        put_u16(&mut e, E_MACHINE, 3);
        assert!(matches!(refused(&e), PvhError::Machine(3)));
        let mut e = good.clone();
        put_u16(&mut e, E_PHENTSIZE, 32);
        assert!(matches!(refused(&e), PvhError::ProgramHeaders));
        let mut e = good.clone();
        put_u64(&mut e, E_PHOFF, u64::MAX - 8);
        assert!(matches!(refused(&e), PvhError::ProgramHeaders));
        let mut e = good.clone();
        put_u64(&mut e, PH_LOAD + P_FILESZ, good.len() as u64);
        assert!(matches!(refused(&e), PvhError::Segment(0)));
        let mut e = good.clone();
        put_u64(&mut e, PH_LOAD + P_OFFSET, u64::MAX);
        assert!(matches!(refused(&e), PvhError::Segment(0)));
        let mut e = good.clone();
        put_u64(&mut e, PH_LOAD + P_MEMSZ, 1);
        assert!(matches!(refused(&e), PvhError::Segment(0)));
        let mut e = good.clone();
        put_u64(&mut e, PH_LOAD + P_PADDR, 0x8000);
        assert!(matches!(
            refused(&e),
            PvhError::SegmentOutsideRam { index: 0, .. }
        ));
        let mut e = good.clone();
        put_u64(&mut e, PH_LOAD + P_MEMSZ, 1 << 40);
        assert!(matches!(refused(&e), PvhError::SegmentOutsideRam { .. }));
        let mut e = good.clone();
        put_u32(&mut e, PH_LOAD, PT_NOTE + 1);
        assert!(matches!(refused(&e), PvhError::NoLoadSegment));
        let mut e = good.clone();
        put_u32(&mut e, NOTE + 8, 17); // another Xen note type
        assert!(matches!(refused(&e), PvhError::NoPvhNote));
        let mut e = good.clone();
        e[NOTE + 12] = b'K';
        assert!(matches!(refused(&e), PvhError::NoPvhNote));
        let mut e = good.clone();
        put_u32(&mut e, NOTE + 4, 0x1000); // descriptor runs past the segment
        assert!(matches!(refused(&e), PvhError::Note(1)));
        let mut e = good.clone();
        put_u32(&mut e, NOTE + 4, 2); // descriptor too short for an address
        put_u64(&mut e, PH_NOTE + P_FILESZ, 20);
        assert!(matches!(refused(&e), PvhError::Note(1)));
        let mut e = good.clone();
        put_u32(&mut e, NOTE + 16, 0x40_0000);
        assert!(matches!(
            refused(&e),
            PvhError::EntryOutsideSegments(0x40_0000)
        ));
        // Every prefix is refused without a panic.
        for len in 0..SEGMENT_FILE_OFFSET as usize + 64 {
            let _ = PvhImage::parse(&good[..len], &layout());
        }
    }

    #[test]
    fn boot_info_describes_the_machine() {
        let layout = layout();
        let mem = create_guest_memory(&layout).unwrap();
        let params = PvhParams::for_layout(&layout);
        assert_eq!(
            write_boot_info(&mem, &layout, &params).unwrap(),
            pvh::START_INFO_GPA
        );
        let info: hvm_start_info = mem.read_obj(GuestAddress(pvh::START_INFO_GPA)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!((info.version, info.nr_modules), (1, 1));
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(module.size, pvh::PARAMS_SIZE as u64);
        let mut block = [0u8; pvh::PARAMS_SIZE];
        mem.read_slice(&mut block, GuestAddress(module.paddr))
            .unwrap();
        assert_eq!(block, params.to_bytes());
        assert_eq!(&block[..4], b"HVFP");
        assert_eq!(u32::from_le_bytes(block[8..12].try_into().unwrap()), 4);
        assert_eq!(
            u64::from_le_bytes(block[16..24].try_into().unwrap()),
            layout.usable_limit()
        );
        let entry = |i: u64| -> hvm_memmap_table_entry {
            mem.read_obj(GuestAddress(info.memmap_paddr + 24 * i))
                .unwrap()
        };
        let records = entry(1);
        assert_eq!(
            (records.addr, records.size, records.type_),
            (crate::guest::layout::STEAL_TIME_GPA, 4096, MEMMAP_RESERVED)
        );
        let high = entry(3);
        assert_eq!(
            (high.addr, high.size),
            (IMAGE_GPA, MIN_MEMORY_SIZE - IMAGE_GPA)
        );
        assert_eq!(high.type_, MEMMAP_RAM);
        assert_eq!(info.memmap_entries, 5);
    }
}
