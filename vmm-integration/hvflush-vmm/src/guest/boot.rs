//! Puts a VM into the start state of the guest ABI (`docs/guest-abi.md`): guest
//! RAM with page tables, GDT and control page, the flat image at
//! [`IMAGE_GPA`], and every vCPU in 64-bit long mode at the image's first byte.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kvm_bindings::{
    KVM_MP_STATE_RUNNABLE, kvm_fpu, kvm_mp_state, kvm_regs, kvm_segment, kvm_sregs,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::mmap::FromRangesError;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
};

use super::layout::{
    CODE_SELECTOR, CONTROL_PAGE_GPA, DATA_SELECTOR, GDT_GPA, GuestLayout, IMAGE_GPA,
    LARGE_PAGE_SIZE, LayoutError, MAX_VCPUS, PAGE_SIZE, PD_GPA, PDPT_GPA, PML4_GPA, STEAL_TIME_GPA,
    TSS_GPA, TSS_SELECTOR, TSS_SIZE, control,
};

// Architectural bits (Intel SDM Vol. 3A §2.5, §4.5; AMD APM Vol. 2 §3.1).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_LARGE: u64 = 1 << 7;
/// RFLAGS with only the always-one bit 1: interrupts disabled.
const RFLAGS_RESERVED: u64 = 0x2;
/// Power-on x87 control word and SSE control/status (Intel SDM Vol. 1 §8.1.5, §10.2.3.1).
const FPU_CONTROL_WORD: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;

// Segment descriptor type fields (Intel SDM Vol. 3A §3.4.5.1, §7.2.2).
const SEG_TYPE_CODE_EXEC_READ_ACCESSED: u8 = 0xb;
const SEG_TYPE_DATA_READ_WRITE_ACCESSED: u8 = 0x3;
const SEG_TYPE_TSS64_BUSY: u8 = 0xb;
const SEG_TYPE_TSS32_BUSY: u8 = 0xb;

/// Errors while preparing guest memory or a vCPU.
#[derive(Debug, Error)]
pub enum BootError {
    /// The RAM size or vCPU index breaks the layout rules.
    #[error("Invalid guest layout")]
    Layout(#[from] LayoutError),
    /// Anonymous guest RAM could not be mapped.
    #[error("Cannot allocate guest memory")]
    CreateMemory(#[source] FromRangesError),
    /// The guest memory object does not cover the layout's RAM size.
    #[error("Guest memory ends at {end:#x}, the layout needs {needed:#x}")]
    MemoryTooSmall {
        /// One past the last byte of the memory object.
        end: u64,
        /// The layout's RAM size.
        needed: u64,
    },
    /// Writing a VMM structure into guest memory failed.
    #[error("Cannot write the {what} into guest memory")]
    WriteMemory {
        /// Which structure.
        what: &'static str,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// The guest image has no bytes.
    #[error("Guest image is empty")]
    EmptyImage,
    /// The guest image does not fit between 1 MiB and the usable limit.
    #[error("Guest image of {size} bytes exceeds the {max} bytes available at 0x100000")]
    ImageTooLarge {
        /// Image size in bytes.
        size: u64,
        /// Largest size the layout allows.
        max: u64,
    },
    /// The guest image file could not be read.
    #[error("Cannot read guest image {}", path.display())]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("Cannot register guest memory with KVM")]
    RegisterMemory(#[source] kvm_ioctls::Error),
    /// A vCPU state ioctl failed.
    #[error("Cannot {what} of the vCPU")]
    Vcpu {
        /// Which operation, e.g. "set the special registers".
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Values the VMM puts into the control page (the `stop` word starts at 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlBlock {
    /// Calls per bench phase ([`control::ITERATIONS`]).
    pub iterations: u64,
    /// Workload parameter ([`control::PARAM`]; bench: running targets).
    pub param: u64,
    /// GPA of the trap-only stub ([`control::TRAP_STUB_GPA`]), 0 if none.
    pub trap_stub_gpa: u64,
}

/// Allocates anonymous (zeroed) guest RAM of the layout's size at GPA 0.
pub fn create_guest_memory(layout: &GuestLayout) -> Result<GuestMemoryMmap, BootError> {
    // A usize is 64 bits on x86_64, the only target with KVM x86 guests.
    let size = layout.memory_size() as usize;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).map_err(BootError::CreateMemory)
}

/// Registers every region of `mem` with KVM, slot numbers from 0, at their GPAs.
///
/// # Safety
///
/// `mem` must stay mapped for as long as `vm` exists (or until the slots are
/// removed): KVM keeps the host addresses and writes guest data through them.
pub unsafe fn register_guest_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), BootError> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let entry = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the entry describes a live mapping owned by `mem`, and the
        // caller guarantees `mem` outlives the VM's use of it.
        unsafe { vm.set_user_memory_region(entry) }.map_err(BootError::RegisterMemory)?;
    }
    Ok(())
}

/// Writes the page tables, GDT, TSS, a zeroed control page and zeroed
/// steal-time records. Call once before any vCPU runs.
pub fn setup_memory(mem: &GuestMemoryMmap, layout: &GuestLayout) -> Result<(), BootError> {
    let end = mem.last_addr().0.saturating_add(1);
    if end < layout.memory_size() {
        return Err(BootError::MemoryTooSmall {
            end,
            needed: layout.memory_size(),
        });
    }
    write_page_tables(mem, layout)?;
    write(mem, GDT_GPA, &gdt_bytes(), "GDT")?;
    let tss = tss_bytes();
    write(mem, TSS_GPA, &tss, "TSS")?;
    write(
        mem,
        CONTROL_PAGE_GPA,
        &[0u8; PAGE_SIZE as usize],
        "control page",
    )?;
    let records = [0u8; vmm_integration::kvm::userspace::region_size(MAX_VCPUS) as usize];
    write(mem, STEAL_TIME_GPA, &records, "steal-time records")
}

/// Writes `block` into the control page and clears `stop`.
pub fn write_control_page(mem: &GuestMemoryMmap, block: &ControlBlock) -> Result<(), BootError> {
    let words = [
        (control::STOP, 0),
        (control::ITERATIONS, block.iterations),
        (control::PARAM, block.param),
        (control::TRAP_STUB_GPA, block.trap_stub_gpa),
    ];
    for (offset, value) in words {
        mem.write_obj(value, GuestAddress(CONTROL_PAGE_GPA + offset))
            .map_err(|source| BootError::WriteMemory {
                what: "control page",
                source,
            })?;
    }
    Ok(())
}

/// Sets the control page's `stop` word to 1 (release store; the guest polls it).
pub fn request_stop(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    mem.store(
        1u64,
        GuestAddress(CONTROL_PAGE_GPA + control::STOP),
        Ordering::Release,
    )
    .map_err(|source| BootError::WriteMemory {
        what: "control page",
        source,
    })
}

/// Copies a flat image to [`IMAGE_GPA`] after checking it fits below the usable limit.
pub fn load_image(
    mem: &GuestMemoryMmap,
    layout: &GuestLayout,
    image: &[u8],
) -> Result<(), BootError> {
    check_image_size(layout, image.len() as u64)?;
    write(mem, IMAGE_GPA, image, "guest image")
}

/// Reads a flat image file, refusing files larger than the layout allows
/// without reading more than that limit.
pub fn read_image_file(path: &Path, layout: &GuestLayout) -> Result<Vec<u8>, BootError> {
    let read_error = |source| BootError::ReadImage {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    check_image_size(layout, size)?;
    let mut image = Vec::new();
    // Bounded even if the file grows after the size check.
    file.take(layout.max_image_size() + 1)
        .read_to_end(&mut image)
        .map_err(read_error)?;
    check_image_size(layout, image.len() as u64)?;
    Ok(image)
}

/// Puts vCPU `index` into the ABI start state: long mode at [`IMAGE_GPA`],
/// RSP at its stack top, RDI/RSI/RDX/RCX set, SSE usable, and the MP state
/// RUNNABLE so application processors start without INIT/SIPI when an
/// in-kernel irqchip exists.
pub fn configure_vcpu(vcpu: &VcpuFd, layout: &GuestLayout, index: u32) -> Result<(), BootError> {
    let stack_top = layout.stack_top(index)?;
    let vcpu_error = |what| move |source| BootError::Vcpu { what, source };

    let mut sregs = vcpu
        .get_sregs()
        .map_err(vcpu_error("get the special registers"))?;
    sregs.cs = code_segment();
    set_data_segments(&mut sregs);
    sregs.tr = task_segment();
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    // No IDT: any exception escalates to a triple fault (KVM_EXIT_SHUTDOWN).
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4_GPA;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(vcpu_error("set the special registers"))?;

    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(vcpu_error("set the FPU state"))?;

    let regs = kvm_regs {
        rip: IMAGE_GPA,
        rsp: stack_top,
        rflags: RFLAGS_RESERVED,
        rdi: u64::from(index),
        rsi: u64::from(layout.vcpu_count()),
        rdx: layout.usable_limit(),
        rcx: CONTROL_PAGE_GPA,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(vcpu_error("set the general registers"))?;

    vcpu.set_mp_state(kvm_mp_state {
        mp_state: KVM_MP_STATE_RUNNABLE,
    })
    .map_err(vcpu_error("set the MP state"))
}

/// Puts the BSP into the PVH start state (Xen docs/misc/pvh.pandoc): 32-bit
/// protected mode, paging off, flat CS/DS/ES/SS, TR a 32-bit busy TSS,
/// EBX = `start_info`, RIP = `entry`. The application processors get no
/// register state: they stay in KVM's power-on state (with the in-kernel
/// irqchip: waiting for INIT/SIPI), as on hardware.
pub fn configure_pvh_bsp(vcpu: &VcpuFd, entry: u64, start_info: u64) -> Result<(), BootError> {
    let vcpu_error = |what| move |source| BootError::Vcpu { what, source };
    let mut sregs = vcpu
        .get_sregs()
        .map_err(vcpu_error("get the special registers"))?;
    sregs.cs = kvm_segment {
        l: 0,
        db: 1,
        ..code_segment()
    };
    set_data_segments(&mut sregs);
    sregs.tr = kvm_segment {
        base: 0,
        limit: (TSS_SIZE - 1) as u32,
        type_: SEG_TYPE_TSS32_BUSY,
        ..task_segment()
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    // Unspecified by PVH: the guest loads its own before reloading segments.
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs)
        .map_err(vcpu_error("set the special registers"))?;
    let regs = kvm_regs {
        rip: entry,
        rbx: start_info,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(vcpu_error("set the general registers"))
}

fn check_image_size(layout: &GuestLayout, size: u64) -> Result<(), BootError> {
    if size == 0 {
        return Err(BootError::EmptyImage);
    }
    let max = layout.max_image_size();
    if size > max {
        return Err(BootError::ImageTooLarge { size, max });
    }
    Ok(())
}

fn write(
    mem: &GuestMemoryMmap,
    gpa: u64,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(gpa))
        .map_err(|source| BootError::WriteMemory { what, source })
}

/// PML4[0] → PDPT; PDPT[i] → PD i; PD entries map 2 MiB pages 1:1 up to the RAM size.
fn write_page_tables(mem: &GuestMemoryMmap, layout: &GuestLayout) -> Result<(), BootError> {
    let table_entry = |next: u64| next | PTE_PRESENT | PTE_WRITABLE;
    let mut pml4 = [0u64; 512];
    pml4[0] = table_entry(PDPT_GPA);
    write(mem, PML4_GPA, &entries_bytes(&pml4), "PML4")?;

    let mut pdpt = [0u64; 512];
    let directories = layout.page_directories();
    for (i, entry) in (0..directories).zip(pdpt.iter_mut()) {
        *entry = table_entry(PD_GPA + i * PAGE_SIZE);
    }
    write(mem, PDPT_GPA, &entries_bytes(&pdpt), "PDPT")?;

    let large_pages = layout.memory_size() / LARGE_PAGE_SIZE;
    for directory in 0..directories {
        let mut pd = [0u64; 512];
        for (slot, entry) in (0u64..).zip(pd.iter_mut()) {
            let page = directory * 512 + slot;
            if page < large_pages {
                *entry = (page * LARGE_PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE;
            }
        }
        let gpa = PD_GPA + directory * PAGE_SIZE;
        write(mem, gpa, &entries_bytes(&pd), "page directory")?;
    }
    Ok(())
}

fn entries_bytes(entries: &[u64; 512]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Offset of the I/O map base in a 64-bit (and a 32-bit) TSS (Intel SDM
/// Vol. 3A §8.7, Figure 8-11).
const TSS_IO_MAP_BASE: usize = 0x66;

/// The TSS: zero, but for an I/O map base past the segment limit, so the
/// TSS has no I/O permission bitmap and ring 3 may use no port while IOPL
/// is 0 (SDM Vol. 1 §19.5.2). An I/O map base of 0 (an all-zero TSS) would
/// read the TSS's own zero bytes as the bitmap and grant ring 3 every port
/// below 0x340, the hypercall port included.
fn tss_bytes() -> [u8; TSS_SIZE as usize] {
    let mut tss = [0u8; TSS_SIZE as usize];
    tss[TSS_IO_MAP_BASE..TSS_IO_MAP_BASE + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    tss
}

/// Null, code, data, and the two slots of the 64-bit TSS descriptor.
const GDT_ENTRIES: usize = 5;

/// The GDT as bytes (Intel SDM Vol. 3A §3.4.5, §7.2.3).
fn gdt_bytes() -> Vec<u8> {
    let code = descriptor(
        0,
        0xfffff,
        SEG_TYPE_CODE_EXEC_READ_ACCESSED,
        true,
        true,
        false,
    );
    let data = descriptor(
        0,
        0xfffff,
        SEG_TYPE_DATA_READ_WRITE_ACCESSED,
        true,
        false,
        true,
    );
    let tss_low = descriptor(
        TSS_GPA,
        TSS_SIZE - 1,
        SEG_TYPE_TSS64_BUSY,
        false,
        false,
        false,
    );
    let tss_high = TSS_GPA >> 32;
    let entries: [u64; GDT_ENTRIES] = [0, code, data, tss_low, tss_high];
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// One 8-byte descriptor: present, DPL 0; code/data descriptors use 4 KiB granularity.
fn descriptor(base: u64, limit: u64, kind: u8, code_or_data: bool, long: bool, big: bool) -> u64 {
    let granular = code_or_data;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | u64::from(kind) << 40
        | u64::from(code_or_data) << 44
        | 1 << 47
        | (limit >> 16 & 0xf) << 48
        | u64::from(long) << 53
        | u64::from(big) << 54
        | u64::from(granular) << 55
        | (base >> 24 & 0xff) << 56
}

fn code_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: CODE_SELECTOR,
        type_: SEG_TYPE_CODE_EXEC_READ_ACCESSED,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    }
}

/// DS, ES, FS, GS and SS: the flat data segment.
fn set_data_segments(sregs: &mut kvm_sregs) {
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = data_segment();
    }
}

fn data_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: DATA_SELECTOR,
        type_: SEG_TYPE_DATA_READ_WRITE_ACCESSED,
        present: 1,
        s: 1,
        db: 1,
        g: 1,
        ..Default::default()
    }
}

fn task_segment() -> kvm_segment {
    kvm_segment {
        base: TSS_GPA,
        limit: (TSS_SIZE - 1) as u32,
        selector: TSS_SELECTOR,
        type_: SEG_TYPE_TSS64_BUSY,
        present: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::layout::MIN_MEMORY_SIZE;

    fn small() -> (GuestLayout, GuestMemoryMmap) {
        let layout = GuestLayout::new(MIN_MEMORY_SIZE, 2).unwrap();
        let mem = create_guest_memory(&layout).unwrap();
        (layout, mem)
    }

    // conformance: R35
    #[test]
    fn the_tss_grants_ring_3_no_port() {
        let (layout, mem) = small();
        setup_memory(&mem, &layout).unwrap();
        let base: u16 = mem
            .read_obj(GuestAddress(TSS_GPA + TSS_IO_MAP_BASE as u64))
            .unwrap();
        assert!(u64::from(base) > TSS_SIZE - 1, "I/O map base {base:#x}");
        assert_eq!(RFLAGS_RESERVED & (3 << 12), 0, "IOPL 0");
    }

    #[test]
    fn gdt_matches_the_flat_descriptors() {
        let gdt = gdt_bytes();
        let entry = |i: usize| u64::from_le_bytes(gdt[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(entry(0), 0);
        assert_eq!(entry(1), 0x00af_9b00_0000_ffff);
        assert_eq!(entry(2), 0x00cf_9300_0000_ffff);
        assert_eq!(entry(3), 0x0000_8b00_7100_0067);
        assert_eq!(entry(4), 0);
    }

    #[test]
    fn page_tables_identity_map_all_ram() {
        let (layout, mem) = small();
        setup_memory(&mem, &layout).unwrap();
        let read = |gpa: u64| mem.read_obj::<u64>(GuestAddress(gpa)).unwrap();
        assert_eq!(read(PML4_GPA), PDPT_GPA | 3);
        assert_eq!(read(PDPT_GPA), PD_GPA | 3);
        assert_eq!(read(PDPT_GPA + 8), 0);
        for page in 0..32 {
            assert_eq!(read(PD_GPA + page * 8), page << 21 | 0x83);
        }
        assert_eq!(read(PD_GPA + 32 * 8), 0, "nothing mapped past the RAM size");
    }

    #[test]
    fn memory_smaller_than_the_layout_is_refused() {
        let layout = GuestLayout::new(MIN_MEMORY_SIZE * 2, 1).unwrap();
        let mem = create_guest_memory(&GuestLayout::new(MIN_MEMORY_SIZE, 1).unwrap()).unwrap();
        assert!(matches!(
            setup_memory(&mem, &layout),
            Err(BootError::MemoryTooSmall { .. })
        ));
    }

    #[test]
    fn control_page_round_trip() {
        let (layout, mem) = small();
        setup_memory(&mem, &layout).unwrap();
        let block = ControlBlock {
            iterations: 7,
            param: 3,
            trap_stub_gpa: 0x20_0000,
        };
        write_control_page(&mem, &block).unwrap();
        let read = |off: u64| {
            mem.read_obj::<u64>(GuestAddress(CONTROL_PAGE_GPA + off))
                .unwrap()
        };
        assert_eq!(read(control::STOP), 0);
        assert_eq!(read(control::ITERATIONS), 7);
        assert_eq!(read(control::PARAM), 3);
        assert_eq!(read(control::TRAP_STUB_GPA), 0x20_0000);
        assert_eq!(read(control::USED_SIZE), 0);
        request_stop(&mem).unwrap();
        assert_eq!(read(control::STOP), 1);
    }

    #[test]
    fn image_loading_checks_sizes() {
        let (layout, mem) = small();
        assert!(matches!(
            load_image(&mem, &layout, &[]),
            Err(BootError::EmptyImage)
        ));
        let max = layout.max_image_size();
        let too_big = vec![0u8; max as usize + 1];
        match load_image(&mem, &layout, &too_big) {
            Err(BootError::ImageTooLarge { size, max: m }) => {
                assert_eq!((size, m), (max + 1, max));
            }
            other => panic!("unexpected {other:?}"),
        }
        load_image(&mem, &layout, &[0xf4, 0x90]).unwrap();
        assert_eq!(
            mem.read_obj::<u16>(GuestAddress(IMAGE_GPA)).unwrap(),
            0x90f4
        );
    }

    #[test]
    fn image_files_are_checked_before_reading() {
        let (layout, _) = small();
        let dir = std::env::temp_dir().join(format!("hvflush-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.bin");
        assert!(matches!(
            read_image_file(&missing, &layout),
            Err(BootError::ReadImage { .. })
        ));
        let empty = dir.join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            read_image_file(&empty, &layout),
            Err(BootError::EmptyImage)
        ));
        let big = dir.join("big.bin");
        let file = File::create(&big).unwrap();
        // Sparse file: no disk space used.
        file.set_len(layout.max_image_size() + 1).unwrap();
        assert!(matches!(
            read_image_file(&big, &layout),
            Err(BootError::ImageTooLarge { .. })
        ));
        let good = dir.join("good.bin");
        std::fs::write(&good, [1, 2, 3]).unwrap();
        assert_eq!(read_image_file(&good, &layout).unwrap(), vec![1, 2, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
