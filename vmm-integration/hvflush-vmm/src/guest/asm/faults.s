# faults: hypercall input, and the hypercall page, at GPAs that are not RAM
# (docs/guest-abi.md §8.7; docs/conformance.md R11, R12). vCPU 0 makes a
# memory-input call with its input at each GPA below and tries to move the
# hypercall page onto each page below, printing what it got:
#   faults: input <where> <RAX>
#   faults: page <where> gp <#GP count> msr <HYPERCALL MSR read back>
# then restores the page and makes one good call. Which status each case
# gets is the VMM's contract (docs/conformance.md; in-kernel Hyper-V differs
# where that table says), checked by the host-side test, so the guest fails
# only when the interface itself breaks. The other vCPUs exit after init.
# Needs RAM below 3 GiB (the PCI-hole GPA must not be RAM) and fewer than 64
# vCPUs: input at the end of RAM goes into the last stack, which is unused.

.equ FL_PCI_HOLE, 0xC0000000        # 32-bit PCI hole: neither RAM nor a device
.equ FL_STACKS, 0x100000            # the stack region, from usable_limit to the end of RAM
.equ FL_GVA, 0x200000               # List entries: GVA 2 MiB, one page
# Private area (r15).
.equ FL_GP, 0x1090                  # u64 #GP caught
.equ FL_RECOVER_RIP, 0x10A0         # u64 where the #GP handler resumes
.equ FL_RECOVER_RSP, 0x10A8         # u64 the stack it resumes with
.equ FL_RAM_END, 0x10B0             # u64 first GPA past RAM
.equ FL_PAGE_MSR, 0x10B8            # u64 HYPERCALL MSR as hv_init set it
# Shared area (vCPU 0 only).
.equ FL_IDTR, 0x3E0                 # 10 bytes
.equ FL_IDT, 0x400                  # 14 gates of 16 bytes (vectors 0..13)
.equ FL_VECTORS, 14
.equ FL_VEC_GP, 13
.equ FAIL_FAULTS_RAM, 0x901         # RAM reaches the PCI hole (RSI = its GPA, RDX = end of RAM)
.equ FAIL_FAULTS_VCPUS, 0x902       # 64 vCPUs: the last stack is in use
.equ FAIL_FAULTS_RESTORE, 0x903     # the HYPERCALL MSR does not read back the restored page
.equ FAIL_FAULTS_CALL, 0x904        # the restored page does not serve a call (RDX = RAX)

WORKLOAD_BEGIN faults
    WORKLOAD_ENTRY faults
    # RAM is one region at 0 ending where the stacks end (§2).
    lea rax, [rdx + FL_STACKS]
    mov [r15 + FL_RAM_END], rax
    call faults_hv_init
    test r12, r12
    jz 1f
    EXIT 0
1:  mov rdx, [r15 + FL_RAM_END]
    mov esi, FL_PCI_HOLE
    mov edi, FAIL_FAULTS_RAM
    cmp rdx, rsi
    ja faults_fail
    mov rdx, r13
    mov esi, 63
    mov edi, FAIL_FAULTS_VCPUS
    cmp rdx, rsi
    ja faults_fail
    mov ecx, HV_MSR_HYPERCALL
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [r15 + FL_PAGE_MSR], rax
    call faults_install_idt

    # Memory input that is not RAM (R12): the in-kernel LAPIC's MMIO page,
    # the PCI hole, the first byte past RAM.
    mov ecx, HVCALL_SPACE
    mov edi, 3
    mov eax, LAPIC_GPA
    lea rsi, [rip + faults_s_lapic]
    call faults_input_at
    mov ecx, HVCALL_SPACE
    mov edi, 3
    mov eax, FL_PCI_HOLE
    lea rsi, [rip + faults_s_pci_hole]
    call faults_input_at
    mov ecx, HVCALL_SPACE
    mov edi, 3
    mov rax, [r15 + FL_RAM_END]
    lea rsi, [rip + faults_s_ram_end]
    call faults_input_at
    # The last 3 qwords of RAM: the whole header is RAM (the control case).
    mov ecx, HVCALL_SPACE
    mov edi, 3
    mov rax, [r15 + FL_RAM_END]
    sub rax, 24
    lea rsi, [rip + faults_s_last_qwords]
    call faults_input_at
    # Straddling the end of RAM, which is the end of a page (R11): the
    # header's last qword, then a List's second entry, lie past it.
    mov ecx, HVCALL_SPACE
    mov edi, 3
    mov rax, [r15 + FL_RAM_END]
    sub rax, 16
    lea rsi, [rip + faults_s_straddle_header]
    call faults_input_at
    mov rcx, HVCALL_LIST | (2 << HV_REP_COUNT_SHIFT)
    mov edi, 5
    mov rax, [r15 + FL_RAM_END]
    sub rax, 32
    lea rsi, [rip + faults_s_straddle_list]
    call faults_input_at

    # The hypercall page at GPAs that are not RAM: #GP, nothing changed.
    mov eax, LAPIC_GPA
    lea rsi, [rip + faults_s_lapic]
    call faults_page_at
    mov eax, FL_PCI_HOLE
    lea rsi, [rip + faults_s_pci_hole]
    call faults_page_at
    mov rax, [r15 + FL_RAM_END]
    lea rsi, [rip + faults_s_ram_end]
    call faults_page_at

    # Back to the page hv_init set; it serves a call.
    mov ecx, HV_MSR_HYPERCALL
    mov rax, [r15 + FL_PAGE_MSR]
    mov rdx, rax
    shr rdx, 32
    wrmsr
    rdmsr
    shl rdx, 32
    or rdx, rax
    mov rsi, [r15 + FL_PAGE_MSR]
    mov edi, FAIL_FAULTS_RESTORE
    cmp rdx, rsi
    jne faults_fail
    mov rdi, [r15 + PV_SELF]
    xor edx, edx
    call faults_input_nonex
    mov ecx, HVCALL_SPACE
    call faults_call_input_page
    CHECK_STATUS faults, FAIL_FAULTS_CALL, 0
    PRINT faults, faults_s_done
    EXIT 0

# RAX = input GPA, RCX = control, EDI = input qwords (of faults_input),
# RSI = what to print: writes the qwords that lie in RAM (the others, past
# the end of RAM or in MMIO, are never touched), makes the call, prints RAX.
faults_input_at:
    push rsi
    mov rdx, rax
    mov r9, [r15 + FL_RAM_END]
    lea r10, [rip + faults_input]
    xor r11d, r11d
1:  cmp r11, rdi
    jae 3f
    lea rax, [rdx + r11 * 8]
    cmp rax, r9
    jae 2f
    mov r8, [r10 + r11 * 8]
    mov [rax], r8
2:  inc r11
    jmp 1b
3:  xor r8d, r8d
    HV_CALL
    mov rbx, rax
    PRINT faults, faults_s_input
    pop rsi
    call faults_print
    PRINT faults, faults_s_space
    mov rax, rbx
    call faults_print_hex
    PRINT faults, faults_s_newline
    ret

# RAX = page GPA, RSI = what to print: enables the hypercall page there and
# prints how many #GP that raised and what the MSR reads afterwards.
faults_page_at:
    push rsi
    mov rbx, [r15 + FL_GP]
    lea rdx, [rip + 1f]
    mov [r15 + FL_RECOVER_RIP], rdx
    mov [r15 + FL_RECOVER_RSP], rsp
    or rax, 1
    mov rdx, rax
    shr rdx, 32
    mov ecx, HV_MSR_HYPERCALL
    wrmsr
1:  mov rax, [r15 + FL_GP]
    sub rax, rbx
    mov rbx, rax
    PRINT faults, faults_s_page
    pop rsi
    call faults_print
    PRINT faults, faults_s_gp
    mov rax, rbx
    call faults_print_hex
    PRINT faults, faults_s_msr
    mov ecx, HV_MSR_HYPERCALL
    rdmsr
    shl rdx, 32
    or rax, rdx
    call faults_print_hex
    PRINT faults, faults_s_newline
    ret

# An IDT with a #GP gate (vectors 0..13, the others not present).
faults_install_idt:
    lea rbx, [r14 + FL_IDT]
    mov edi, FL_VEC_GP
    lea rsi, [rip + faults_gp_handler]
    call faults_set_gate
    mov word ptr [r14 + FL_IDTR], FL_VECTORS * 16 - 1
    mov [r14 + FL_IDTR + 2], rbx
    lidt [r14 + FL_IDTR]
    ret

# Counts the #GP and resumes at the recovery point (an emulated guest
# cannot rely on iretq: reset RSP and jump).
faults_gp_handler:
    inc qword ptr [r15 + FL_GP]
    mov rsp, [r15 + FL_RECOVER_RSP]
    jmp qword ptr [r15 + FL_RECOVER_RIP]

    ROUTINES faults

    .balign 8
# Input qwords: hv_tlb_flush (address space 0, HV_FLUSH_ALL_PROCESSORS,
# mask 0), then two GVA entries.
faults_input:
    .quad 0, HV_FLUSH_ALL_PROCESSORS, 0, FL_GVA, FL_GVA + 0x1000

faults_s_input:
    .asciz "faults: input "
faults_s_page:
    .asciz "faults: page "
faults_s_space:
    .asciz " "
faults_s_gp:
    .asciz " gp "
faults_s_msr:
    .asciz " msr "
faults_s_lapic:
    .asciz "lapic"
faults_s_pci_hole:
    .asciz "pci-hole"
faults_s_ram_end:
    .asciz "ram-end"
faults_s_last_qwords:
    .asciz "last-qwords"
faults_s_straddle_header:
    .asciz "straddle-header"
faults_s_straddle_list:
    .asciz "straddle-list"
faults_s_done:
    .asciz "faults: done\n"
WORKLOAD_END faults
