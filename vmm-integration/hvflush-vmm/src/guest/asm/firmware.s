# firmware: the last 4 KiB page of the reference VMM's 64 KiB reset ROM at
# ROM_GPA (docs/guest-abi.md §10.4). After RESET or an INIT of the BSP the
# vCPU runs in real mode at CS base 0xFFFF0000, IP 0xFFF0 (physical
# 0xFFFFFFF0, Intel SDM Vol. 3A §10.1.4). Like firmware doing a PVH direct
# boot, it enters 32-bit protected mode (flat segments, paging off) and jumps
# to the PVH entry with EBX = the start_info GPA; both values are patched in
# by the VMM at FW_START_INFO / FW_ENTRY. 16/32-bit code: absolute constants only.

.equ FW_PAGE, ROM_GPA + ROM_SIZE - 0x1000   # physical address of this page
.equ FW_CS_OFFSET, ROM_SIZE - 0x1000        # its offset from CS base 0xFFFF0000
.equ FW_GDT, 0x20
.equ FW_GDTR, 0x40
.equ FW_PROT32, 0x80
.equ FW_SEL_CODE32, 0x08
.equ FW_SEL_DATA, 0x10

WORKLOAD_BEGIN firmware
.code16
firmware_real:
    cli
    .byte 0x66                      # o32: the GDT base is above 16 MiB
    lgdt cs:[FW_CS_OFFSET + FW_GDTR]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    .byte 0x66, 0xEA                # ljmp FW_SEL_CODE32:FW_PAGE + FW_PROT32
    .long FW_PAGE + FW_PROT32
    .word FW_SEL_CODE32

    .org hvflush_guest_firmware_start + FW_GDT
    .quad 0
    .quad 0x00cf9b000000ffff        # 0x08 flat 32-bit code
    .quad 0x00cf93000000ffff        # 0x10 flat data
    .org hvflush_guest_firmware_start + FW_GDTR
    .word 3 * 8 - 1
    .long FW_PAGE + FW_GDT

    .org hvflush_guest_firmware_start + FW_START_INFO
    .long 0                         # patched: start_info GPA
    .org hvflush_guest_firmware_start + FW_ENTRY
    .long 0                         # patched: PVH entry

    .org hvflush_guest_firmware_start + FW_PROT32
.code32
    mov eax, FW_SEL_DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov ebx, [FW_PAGE + FW_START_INFO]
    mov eax, [FW_PAGE + FW_ENTRY]
    jmp eax

    # The reset vector, 16 bytes below the end of the ROM.
    .org hvflush_guest_firmware_start + 0xFF0
.code16
    jmp firmware_real
    .org hvflush_guest_firmware_start + 0x1000
.code64
WORKLOAD_END firmware
