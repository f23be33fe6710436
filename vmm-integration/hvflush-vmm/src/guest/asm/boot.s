# boot: the PVH boot code of the built-in guest images (docs/guest-abi.md §10).
#
# Loaded at BOOT_GPA (the ELF's only PT_LOAD), entered like a Xen PVH kernel:
# 32-bit protected mode, paging off, EBX = GPA of `struct hvm_start_info`
# (Xen public/arch-x86/hvm/start_info.h). It owns the memory from BOOT_GPA to
# PVH_WORKLOAD (code, data, identity page tables) and the trampoline page.
#
# BSP: lgdt, read the parameters (PVH module 0, else fallbacks), build the
# page tables, copy the AP trampoline below 1 MiB, enter long mode, start the
# APs with INIT / SIPI / SIPI (Intel SDM Vol. 3A §9.4.4, §11.6.1), wait for
# them, then enter the workload. AP: trampoline (real mode) -> protected mode
# -> the same long-mode path -> vCPU index = APIC ID (CPUID.1 EBX[31:24]) ->
# wait for the BSP's go -> the workload. Every vCPU enters the workload's flat
# entry with exactly the flat-ABI registers (§3).
#
# 16- and 32-bit code cannot use RIP-relative addressing and the assembler
# does not take label differences in operands, so everything that code
# touches sits at a fixed offset from BOOT_GPA (.org below) and is addressed
# with absolute constants. Paging off / identity paging: GVA = GPA.

# ---- Fixed offsets inside the boot blob ----
.equ BOOT_ENTRY32, BOOT_GPA + 0x00  # PVH entry (the ELF note's address)
.equ BOOT_PROT32, BOOT_GPA + 0x10   # 32-bit code after our GDT is loaded (BSP and APs)
.equ BOOT_LONG64, BOOT_GPA + 0x20   # first 64-bit instruction
.equ BOOT_EXIT, BOOT_GPA + 0x30     # exit hook (control page `exit_hook`)
.equ BOOT_GDT, BOOT_GPA + 0x40      # GDT (6 entries)
.equ BOOT_GDTR, BOOT_GPA + 0x70     # its pseudo-descriptor
.equ BOOT_TRAMPOLINE_SRC, BOOT_GPA + 0x100  # the AP trampoline, copied to TRAMPOLINE_GPA
.equ TRAMPOLINE_SIZE, 0x40

# GDT selectors (the flat-ABI ones, guest-abi.md §3, plus a 32-bit code segment).
.equ SEL_CODE64, 0x08
.equ SEL_DATA, 0x10
.equ SEL_TSS, 0x18
.equ SEL_CODE32, 0x28
.equ GDT_SIZE, 6 * 8
# Access byte of the TSS descriptor (bit 1 = busy, Intel SDM Vol. 3A §8.2.2).
.equ BOOT_TSS_ACCESS, BOOT_GDT + SEL_TSS + 5

# ---- Boot data (BOOT_DATA, zero when loaded; survives INIT, never re-zeroed) ----
.equ BD_BOOTS, BOOT_DATA + 0x00     # u32 PVH entries of the BSP (1 on the first boot)
.equ BD_COUNT, BOOT_DATA + 0x04     # u32 vCPU count (0 while unknown)
.equ BD_LIMIT, BOOT_DATA + 0x08     # u64 usable limit (RDX)
.equ BD_CONTROL, BOOT_DATA + 0x10   # u64 control page GPA (RCX)
.equ BD_ARRIVED, BOOT_DATA + 0x18   # u32 APs that reached long mode this boot
.equ BD_GO, BOOT_DATA + 0x1C        # u32 = BD_BOOTS once the APs may enter the workload
.equ BD_FINISHED, BOOT_DATA + 0x20  # u32 vCPUs that passed through the exit hook
.equ BD_FAILED, BOOT_DATA + 0x24    # u32 1 once a failure was reported
.equ BD_TR_LOCK, BOOT_DATA + 0x28   # u32 lock around ltr (one shared TSS descriptor)
.equ BD_START_INFO, BOOT_DATA + 0x30    # u64 start_info GPA of the last boot
.equ BD_TSS, BOOT_DATA + 0x100      # the 64-bit TSS, 104 bytes: zero but its I/O map base
.equ TSS_IO_MAP_BASE, 0x66          # offset of the I/O map base; 0x68 there is past the limit (0x67): no I/O bitmap, ring 3 gets no port (SDM Vol. 1 §19.5.2)
.equ BD_BOOT_STACK, BOOT_DATA + 0x1000  # stack top before the workload (boot failures call the printers)

# ---- Xen public/arch-x86/hvm/start_info.h ----
.equ XEN_HVM_START_MAGIC, 0x336ec578
.equ SI_MAGIC, 0
.equ SI_VERSION, 4
.equ SI_NR_MODULES, 12
.equ SI_MODLIST, 16
.equ SI_MEMMAP, 40                  # version >= 1
.equ SI_MEMMAP_ENTRIES, 48
.equ MOD_PADDR, 0                   # struct hvm_modlist_entry
.equ MOD_SIZE, 8
.equ MM_ADDR, 0                     # struct hvm_memmap_table_entry (24 bytes)
.equ MM_SIZE, 8
.equ MM_TYPE, 16
.equ MM_ENTRY_SIZE, 24
.equ XEN_HVM_MEMMAP_TYPE_RAM, 1

# ---- The parameter block (PVH module 0, guest-abi.md §10.2) ----
.equ PB_MAGIC, 0
.equ PB_VERSION, 4
.equ PB_COUNT, 8
.equ PB_LIMIT, 16
.equ PB_CONTROL, 24
.equ PB_SIZE, 32

# ---- Architecture (Intel SDM Vol. 3A §2.5, §4.5, §11.4; ICR_* in common.s) ----
.equ MSR_EFER, 0xC0000080
.equ EFER_LME, 1 << 8
.equ MSR_APIC_BASE, 0x1B
.equ APIC_BASE_BSP, 1 << 8
.equ BOOT_CR0, 0x80010033           # PE MP ET NE WP PG
.equ BOOT_CR4, 0x620                # PAE OSFXSR OSXMMEXCPT
.equ PTE_TABLE, 0x3                 # present, writable
.equ PTE_LARGE_RAM, 0x83            # present, writable, 2 MiB
.equ PTE_UNCACHED, 0x18             # PWT, PCD: the MMIO windows (IOAPIC, LAPIC)
.equ LARGE_PAGE, 0x200000
.equ FALLBACK_WAIT, 1 << 20         # pause loops to count APs when the vCPU count is unknown
# PORT_POWER / POWER_S5 (ACPI S5 on Cloud Hypervisor's shutdown device) come from layout.rs.

# ---- Boot failure codes (guest-abi.md §10.5) ----
.equ BOOT_FAIL_START_INFO, 0x801    # EBX does not point at a PVH start_info (magic)
.equ BOOT_FAIL_MEMMAP, 0x802        # no parameter block and no RAM entry covering 1 MiB
.equ BOOT_FAIL_PARAMS, 0x803        # parameter block: vCPU count not in 1..=64 or limit 0

WORKLOAD_BEGIN boot
.code32
    # BOOT_ENTRY32: the PVH entry. Our own GDT, then CS from it.
    cli
    lgdt [BOOT_GDTR]
    .byte 0xEA                      # ljmp SEL_CODE32:BOOT_PROT32
    .long BOOT_PROT32
    .word SEL_CODE32

    .org hvflush_guest_boot_start + 0x10
    jmp boot_prot32

    .org hvflush_guest_boot_start + 0x20
.code64
    jmp boot_long64

    .org hvflush_guest_boot_start + 0x30
    jmp boot_exit

    .org hvflush_guest_boot_start + 0x40
    .quad 0
    .quad 0x00af9b000000ffff        # 0x08 64-bit code
    .quad 0x00cf93000000ffff        # 0x10 flat data
    .quad 0x67 | ((BD_TSS & 0xffffff) << 16) | (0x89 << 40) | (((BD_TSS >> 24) & 0xff) << 56)
    .quad BD_TSS >> 32              # 0x18 64-bit TSS (available; ltr marks it busy)
    .quad 0x00cf9b000000ffff        # 0x28 32-bit code
    .org hvflush_guest_boot_start + 0x70
    .word GDT_SIZE - 1
    .long BOOT_GDT

    # The AP trampoline: runs at TRAMPOLINE_GPA in real mode (CS base = that
    # page, IP 0), loads the GDT and jumps to BOOT_PROT32 in protected mode.
    .org hvflush_guest_boot_start + 0x100
.code16
    cli
    jmp 1f
    .org hvflush_guest_boot_start + 0x104
    .long TRAMPOLINE_SIGNATURE      # checked by `restart` and `reboot`
    .word GDT_SIZE - 1              # trampoline + 8: GDT pseudo-descriptor
    .long BOOT_GDT
    .org hvflush_guest_boot_start + 0x110
1:  .byte 0x66                      # o32: 32-bit GDT base
    lgdt cs:[8]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    .byte 0x66, 0xEA                # ljmp SEL_CODE32:BOOT_PROT32 (32-bit offset)
    .long BOOT_PROT32
    .word SEL_CODE32
    .org hvflush_guest_boot_start + 0x100 + TRAMPOLINE_SIZE
.code32

# Protected mode, our GDT, paging off. EBX = start_info on the BSP.
boot_prot32:
    mov eax, SEL_DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    cld
    xor ebp, ebp                    # boot failure code, 0 = none
    mov ecx, MSR_APIC_BASE
    rdmsr
    test eax, APIC_BASE_BSP
    jz boot_enter_long              # APs: straight to long mode

    mov [BD_START_INFO], ebx
    mov dword ptr [BD_START_INFO + 4], 0
    inc dword ptr [BD_BOOTS]
    xor eax, eax
    mov [BD_ARRIVED], eax
    mov [BD_FINISHED], eax
    mov [BD_FAILED], eax
    mov [BD_COUNT], eax
    mov [BD_LIMIT], eax
    mov [BD_LIMIT + 4], eax
    mov dword ptr [BD_CONTROL], FALLBACK_CONTROL
    mov [BD_CONTROL + 4], eax
    mov ebp, BOOT_FAIL_START_INFO
    cmp dword ptr [ebx + SI_MAGIC], XEN_HVM_START_MAGIC
    jne boot_tables
    xor ebp, ebp

    # Module 0 = parameter block, when it is one.
    cmp dword ptr [ebx + SI_NR_MODULES], 0
    je boot_no_params
    mov esi, [ebx + SI_MODLIST]
    cmp dword ptr [esi + MOD_SIZE], PB_SIZE
    jb boot_no_params
    mov esi, [esi + MOD_PADDR]
    cmp dword ptr [esi + PB_MAGIC], PARAMS_MAGIC
    jne boot_no_params
    cmp dword ptr [esi + PB_VERSION], PARAMS_VERSION
    jne boot_no_params
    mov ebp, BOOT_FAIL_PARAMS
    mov eax, [esi + PB_COUNT]
    test eax, eax
    jz boot_tables
    cmp eax, MAX_VCPUS
    ja boot_tables
    mov [BD_COUNT], eax
    mov eax, [esi + PB_LIMIT]
    mov edx, [esi + PB_LIMIT + 4]
    mov ecx, eax
    or ecx, edx
    jz boot_tables
    mov [BD_LIMIT], eax
    mov [BD_LIMIT + 4], edx
    mov eax, [esi + PB_CONTROL]
    mov edx, [esi + PB_CONTROL + 4]
    mov [BD_CONTROL], eax
    mov [BD_CONTROL + 4], edx
    xor ebp, ebp
    jmp boot_tables

boot_no_params:
    # Usable limit from the memory map: the RAM entry that covers 1 MiB, capped
    # at the MMIO hole, minus the stack region.
    mov ebp, BOOT_FAIL_MEMMAP
    cmp dword ptr [ebx + SI_VERSION], 1
    jb boot_tables
    mov esi, [ebx + SI_MEMMAP]
    mov ecx, [ebx + SI_MEMMAP_ENTRIES]
1:  test ecx, ecx
    jz boot_tables
    cmp dword ptr [esi + MM_TYPE], XEN_HVM_MEMMAP_TYPE_RAM
    jne 3f
    cmp dword ptr [esi + MM_ADDR + 4], 0
    jne 3f
    mov eax, [esi + MM_ADDR]
    cmp eax, BOOT_GPA
    ja 3f
    mov edx, [esi + MM_SIZE + 4]
    add eax, [esi + MM_SIZE]
    adc edx, 0
    jnz 2f                          # ends at or above 4 GiB
    cmp eax, MMIO_HOLE
    jbe 4f
2:  mov eax, MMIO_HOLE
4:  cmp eax, BOOT_GPA + STACK_REGION
    jbe 3f
    and eax, -0x1000
    sub eax, STACK_REGION
    mov [BD_LIMIT], eax
    # The fallback control page: zeroed, owned by the boot code.
    mov edi, FALLBACK_CONTROL
    mov ecx, 1024
    xor eax, eax
    rep stosd
    xor ebp, ebp
    jmp boot_tables
3:  add esi, MM_ENTRY_SIZE
    dec ecx
    jmp 1b

boot_tables:
    # Identity map of the low 4 GiB with 2 MiB pages; the MMIO windows from
    # MMIO_HOLE up (IOAPIC, LAPIC) uncached.
    mov dword ptr [BOOT_PML4], BOOT_PDPT | PTE_TABLE
    mov dword ptr [BOOT_PDPT], BOOT_PD | PTE_TABLE
    mov dword ptr [BOOT_PDPT + 8], (BOOT_PD + 0x1000) | PTE_TABLE
    mov dword ptr [BOOT_PDPT + 16], (BOOT_PD + 0x2000) | PTE_TABLE
    mov dword ptr [BOOT_PDPT + 24], (BOOT_PD + 0x3000) | PTE_TABLE
    mov edi, BOOT_PD
    xor eax, eax
1:  mov edx, eax
    or edx, PTE_LARGE_RAM
    cmp eax, MMIO_HOLE
    jb 2f
    or edx, PTE_UNCACHED
2:  mov [edi], edx
    add edi, 8
    add eax, LARGE_PAGE
    jnz 1b                          # wraps to 0 after the 4 GiB page
    mov esi, BOOT_TRAMPOLINE_SRC
    mov edi, TRAMPOLINE_GPA
    mov ecx, TRAMPOLINE_SIZE / 4
    rep movsd

# BSP and APs: paging with our tables, long mode, CS = SEL_CODE64.
boot_enter_long:
    mov eax, BOOT_CR4
    mov cr4, eax
    mov eax, BOOT_PML4
    mov cr3, eax
    mov ecx, MSR_EFER
    rdmsr
    or eax, EFER_LME
    wrmsr
    mov eax, BOOT_CR0
    mov cr0, eax
    .byte 0xEA                      # ljmp SEL_CODE64:BOOT_LONG64
    .long BOOT_LONG64
    .word SEL_CODE64

.code64
boot_long64:
    lidt [rip + boot_null_idtr]
    mov esp, BD_BOOT_STACK          # for the boot-failure path (the APs never push here)
    test ebp, ebp
    jz 1f
    mov eax, ebp
    out PORT_EXIT, eax              # hvflush-vmm ends the BSP here
    mov edi, ebp
    xor esi, esi
    jmp boot_exit

    # TR = SEL_TSS: one descriptor for every vCPU, so clear its busy bit
    # under a lock before each ltr (the CPU keeps its own copy afterwards).
1:  mov eax, 1
    xchg [BD_TR_LOCK], eax
    test eax, eax
    jz 2f
    pause
    jmp 1b
2:  and byte ptr [BOOT_TSS_ACCESS], 0xfd
    mov word ptr [BD_TSS + TSS_IO_MAP_BASE], 0x68
    mov eax, SEL_TSS
    ltr ax
    mov dword ptr [BD_TR_LOCK], 0

    mov eax, 1
    cpuid
    shr ebx, 24
    mov r12d, ebx                   # vCPU index = initial APIC ID
    mov ecx, MSR_APIC_BASE
    rdmsr
    test eax, APIC_BASE_BSP
    jz boot_ap

    # BSP: start the APs unless alone.
    cmp dword ptr [BD_COUNT], 1
    je boot_release
    SEND_IPI 0, ICR_INIT_OTHERS, INIT_DELAY
    SEND_IPI 0, ICR_SIPI_OTHERS | (TRAMPOLINE_GPA >> 12), SIPI_DELAY
    SEND_IPI 0, ICR_SIPI_OTHERS | (TRAMPOLINE_GPA >> 12), SIPI_DELAY    # twice (SDM §9.4.4.1)

    mov ecx, [BD_COUNT]
    test ecx, ecx
    jz 5f
    dec ecx
4:  cmp [BD_ARRIVED], ecx           # known count: wait for every AP
    jae boot_release
    pause
    jmp 4b
5:  mov ecx, FALLBACK_WAIT          # unknown count: whoever checks in meanwhile
6:  pause
    dec ecx
    jnz 6b
    mov eax, [BD_ARRIVED]
    inc eax
    mov [BD_COUNT], eax

boot_release:
    mov rax, [BD_CONTROL]
    mov qword ptr [rax + CTL_EXIT_HOOK], BOOT_EXIT
    mov eax, [BD_BOOTS]
    mov [BD_GO], eax
    jmp boot_enter_workload

boot_ap:
    lock inc dword ptr [BD_ARRIVED]
1:  mov eax, [BD_GO]
    cmp eax, [BD_BOOTS]
    je 2f
    pause
    jmp 1b
2:  cmp r12d, [BD_COUNT]
    jae boot_park                   # not counted (came too late or beyond the count)

# The flat-ABI start state (guest-abi.md §3) at the workload's entry.
boot_enter_workload:
    mov rdx, [BD_LIMIT]
    lea rsp, [r12 + 1]
    shl rsp, STACK_SHIFT
    add rsp, rdx
    mov rcx, [BD_CONTROL]
    mov esi, [BD_COUNT]
    mov edi, r12d
    xor eax, eax
    xor ebx, ebx
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    push PVH_WORKLOAD
    push 2
    popfq
    ret

boot_park:
    cli
    hlt
    jmp boot_park

# Exit hook: a vCPU whose exit-port write was ignored (another VMM) comes here
# with EDI = its exit code and ESI = its index. A failure is reported at once
# (others may wait for the failed vCPU forever); the last passing vCPU reports
# PASS. Then ACPI S5 power-off.
boot_exit:
    cli
    test edi, edi
    jnz 1f
    mov eax, 1
    lock xadd [BD_FINISHED], eax
    inc eax
    cmp eax, [BD_COUNT]
    jne boot_park
    lea rsi, [rip + boot_s_pass]
    call boot_print
    jmp 2f
1:  mov eax, 1
    xchg [BD_FAILED], eax
    test eax, eax
    jnz boot_park
    mov r8d, edi
    mov r9d, esi
    lea rsi, [rip + boot_s_fail]
    call boot_print
    mov edx, r8d
    call boot_print_hex
    lea rsi, [rip + boot_s_vcpu]
    call boot_print
    mov eax, r9d
    xor edx, edx
    mov ecx, 10
    div ecx
    test eax, eax
    jz 3f
    add al, '0'
    out PORT_CONSOLE, al
3:  mov eax, edx
    add al, '0'
    out PORT_CONSOLE, al
    mov al, 10
    out PORT_CONSOLE, al
2:  mov dx, PORT_POWER
    mov al, POWER_S5
    out dx, al
    jmp boot_park

PRINT_ROUTINE boot

# Prints EDX as 0x and its hex digits without leading zeros.
boot_print_hex:
    mov al, '0'
    out PORT_CONSOLE, al
    mov al, 'x'
    out PORT_CONSOLE, al
    mov ecx, 28
1:  mov eax, edx
    shr eax, cl
    jnz 2f
    sub ecx, 4
    jnz 1b
2:  mov eax, edx
    shr eax, cl
    and eax, 0xf
    cmp eax, 10
    jb 3f
    add eax, 'a' - '0' - 10
3:  add eax, '0'
    out PORT_CONSOLE, al
    sub ecx, 4
    jns 2b
    ret

    .balign 8
boot_null_idtr:
    .word 0
    .quad 0
boot_s_pass:
    .asciz "hvflush: PASS\n"
boot_s_fail:
    .asciz "hvflush: FAIL "
boot_s_vcpu:
    .asciz " vcpu "
WORKLOAD_END boot
