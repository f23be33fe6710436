# conformance: vCPU 0 runs the table of cases below while the other vCPUs spin
# (running targets) until it sets the shared done flag; then every vCPU flushes
# the others concurrently for a few rounds. Every case compares RAX exactly; a
# mismatch prints the case number, expected and actual status and exits with
# failure code = case number (concurrent phase: 0x30N).
#
# Statuses and the order the engine checks them in (docs/conformance.md):
#   access (6) -> reserved control bits (3) -> unknown code (2) -> rep rules (3)
#   -> non-Ex header size (3) -> memory GPA alignment / page span (4)
#   -> unreadable memory (3) -> Ex header size vs popcount (3)
#   -> fast input overflow (3) -> success (rep calls: RAX = rep count << 32).
# Expectations follow what the partition offers: without Ex masks every Ex
# row expects 6; without XMM fast input every fast row that would succeed
# expects 3. The concurrent phase skips calls that are not offered.

# Target forms (field `target`).
.equ T_SINGLE, 0    # the next vCPU (itself when alone)
.equ T_OTHERS, 1    # every other vCPU (non-Ex: those with VP < 64)
.equ T_ALLFLAG, 2   # HV_FLUSH_ALL_PROCESSORS set (Ex: plus a set of the others)
.equ T_ZERO, 3      # non-Ex processor_mask 0 (= all); Ex: empty sparse set
.equ T_BANKS, 4     # Ex sparse set spanning banks (vCPUs with VP >= 64 plus vCPU 0)
.equ T_EXALL, 5     # Ex VP set format HV_GENERIC_SET_ALL (1)
# GVA entry forms (field `gva`).
.equ G_NORMAL, 0    # page-aligned GVAs from 2 MiB, 3 additional pages each
.equ G_NONCANON, 1  # non-canonical GVAs (bit 47 set, 63:48 clear): ignored
.equ G_LARGE, 2     # extended range format: 2 MiB large-page entries (bit 11)
# Where memory input lives (field `input`).
.equ I_PAGE, 0      # start of the input page
.equ I_MISALIGN, 1  # input page + 4: not 8-byte aligned
.equ I_SPAN, 2      # input page + 0xff8: crosses into the next page
.equ I_OUTSIDE, 3   # GPA 1 << 40: not guest RAM

.equ RSVD_27, 1 << 27
.equ RSVD_31, 1 << 31
.equ RSVD_44, 1 << 44
.equ RSVD_60, 1 << 60
.equ UNKNOWN_CODE, 0x7fff
.equ OK, HV_STATUS_SUCCESS
.equ BAD_CODE, HV_STATUS_INVALID_HYPERCALL_CODE
.equ BAD_INPUT, HV_STATUS_INVALID_HYPERCALL_INPUT
.equ BAD_ALIGN, HV_STATUS_INVALID_ALIGNMENT

# One table row (ROW_SIZE bytes). `hdr` is added to the number of banks the
# runner wrote (0 for non-Ex) to form the variable header size; `expect` is
# the exact RAX. A success row whose fast input does not fit the 14 fast
# qwords (many banks) expects BAD_INPUT instead: that rule is tested too.
.macro CASE num, code, expect, reps=0, start=0, rsvd=0, fast=0, target=T_OTHERS, flags=0, gvas=0, gva=G_NORMAL, input=I_PAGE, hdr=0
    .quad \num
    .quad \code | (\fast << 16) | (\reps << HV_REP_COUNT_SHIFT) | (\start << HV_REP_START_SHIFT) | \rsvd
    .quad \expect
    .quad \fast
    .quad \target
    .quad \flags
    .quad \gvas
    .quad \gva
    .quad \input
    .quad \hdr
.endm
.equ ROW_NUM, 0
.equ ROW_CONTROL, 8
.equ ROW_EXPECT, 16
.equ ROW_FAST, 24
.equ ROW_TARGET, 32
.equ ROW_FLAGS, 40
.equ ROW_GVAS, 48
.equ ROW_GVA, 56
.equ ROW_INPUT, 64
.equ ROW_HDR, 72
.equ ROW_SIZE, 80

# Runner scratch (PV_TMP slots).
.equ C_TARGETS, PV_TMP
.equ C_BANKS, PV_TMP + 8
.equ C_HEADER_QWORDS, PV_TMP + 16
.equ C_EXPECT, PV_TMP + 24
.equ C_SKIPPED, PV_TMP + 32
.equ CONCURRENT_ROUNDS, 3

# ---- Gates (vCPU 0, after the table): faults are caught by an IDT ----
# Per-vCPU counters and the recovery point the fault handlers jump to (an
# emulated guest cannot rely on iretq: the handlers reset RSP and jump).
.equ PV_UD, 0x1090              # u64 #UD caught
.equ PV_GP, 0x1098              # u64 #GP caught
.equ PV_RECOVER_RIP, 0x10A0     # u64 where a handler resumes
.equ PV_RECOVER_RSP, 0x10A8     # u64 the stack it resumes with
.equ PV_ENOSYS, 0x10B0          # u64 calls answered -KVM_ENOSYS
.equ PV_UD_CALLS, 0x10B8        # u64 of PV_UD: hypercalls answered #UD
# Shared area (vCPU 0 only).
.equ SH_OLD_GDTR, 0x3C0         # 10 bytes: the boot GDT
.equ SH_GDTR, 0x3D0             # 10 bytes: the copy with a 32-bit code segment
.equ SH_IDTR, 0x3E0             # 10 bytes
.equ SH_IDT, 0x400              # 14 gates of 16 bytes (vectors 0..13)
.equ SH_GDT, 0x500              # copy of the boot GDT (at most 0xF8 bytes) + 1 entry
.equ IDT_VECTORS, 14
.equ VEC_UD, 6
.equ VEC_GP, 13
.equ DESC_CODE32, 0x00cf9b000000ffff
.equ RAX_KVM_ENOSYS, -1000      # -KVM_ENOSYS (include/uapi/linux/kvm_para.h)
# Failure codes of the gate phase (docs/guest-abi.md §8.3).
.equ FAIL_NO_GP, 0x310          # a crash/reenlightenment/TSC-invariant MSR access did not #GP (RSI = MSR)
.equ FAIL_NO_ENOSYS, 0x311      # a call with GUEST_OS_ID 0 did not return -KVM_ENOSYS
.equ FAIL_COMPAT_SERVED, 0x312  # a call from compatibility mode was served (no #UD)
.equ FAIL_GATE_COUNT, 0x313     # the handlers counted an unexpected fault
.equ FAIL_GDT, 0x314            # the boot GDT is too large to copy
.equ FAIL_RING3_SERVED, 0x315   # a call from ring 3 (IOPL 3) was served (no #UD)
.equ FAIL_RING3_PORT, 0x316     # ring 3 with IOPL 0 reached the hypercall port (no #GP)
.equ PV_SAVED_SS, 0x10C0        # u64 SS of the workload, restored after ring 3
.equ PV_RING3_RAN, 0x10C8       # u64 set by ring-3 code after a call that returned
.equ PV_RING3_GP, 0x10D0        # u64 ring-3 calls with IOPL 3 the host CPU refused (#GP)
.equ PV_UD_RIP, 0x10D8          # u64 RIP the last #UD reported
.equ FAIL_UD_RIP, 0x318         # the #UD of a refused call does not point at the stub's `out` (RDX = its RIP)
.equ TSS_IO_MAP_BASE, 0x66
.equ FAIL_TSS_PORTS, 0x317      # the start state's TSS has an I/O bitmap (RDX = I/O map base)
.equ MSR_SYSENTER_CS, 0x174     # SYSEXIT (64-bit): CS = this + 32, SS = this + 40, RPL 3
.equ RFLAGS_IOPL3, 3 << 12
.equ PTE_USER, 1 << 2

# Sets the recovery point of the fault handlers to label \at, keeping RSP.
.macro RECOVER_AT at
    lea rax, [rip + \at]
    mov [r15 + PV_RECOVER_RIP], rax
    mov [r15 + PV_RECOVER_RSP], rsp
.endm

WORKLOAD_BEGIN conformance
    WORKLOAD_ENTRY conformance
    call conformance_hv_init
    test r12, r12
    jnz conformance_wait

    lea rbx, [rip + conformance_cases]
conformance_next_case:
    lea rax, [rip + conformance_cases_end]
    cmp rbx, rax
    jae conformance_table_done
    call conformance_run_case
    add rbx, ROW_SIZE
    jmp conformance_next_case
conformance_table_done:
    PRINT conformance, conformance_s_passed
    mov rax, [r15 + PV_COUNT]
    call conformance_print_hex
    PRINT conformance, conformance_s_skipped
    mov rax, [r15 + C_SKIPPED]
    call conformance_print_hex
    PRINT conformance, conformance_s_newline
    call conformance_gates
    mov qword ptr [r14 + SH_DONE], 1
    jmp conformance_concurrent

conformance_wait:
    cmp qword ptr [r14 + SH_DONE], 0
    jne conformance_concurrent
    pause
    jmp conformance_wait

# Every vCPU flushes the others at the same time.
conformance_concurrent:
    mov ebx, CONCURRENT_ROUNDS
conformance_round:
    test qword ptr [r15 + PV_FEATURES], FEAT_EX
    jz 1f
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call conformance_input_ex
    mov rcx, rax
    shl rcx, HV_HDR_SHIFT
    or rcx, HVCALL_SPACE_EX
    call conformance_call_input_page
    CHECK_STATUS conformance, 0x301, OK
1:

    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call conformance_input_nonex
    mov edi, 2
    mov edx, 0x200003
    mov r8d, 0x10000
    call conformance_gvas
    mov rcx, HVCALL_LIST | (2 << HV_REP_COUNT_SHIFT)
    call conformance_call_input_page
    mov r11, 2 << HV_REP_COUNT_SHIFT
    CHECK_STATUS conformance, 0x302, r11

    mov rax, [r15 + PV_FEATURES]
    and eax, FEAT_EX | FEAT_XMM
    cmp eax, FEAT_EX | FEAT_XMM
    jne 2f
    mov rdi, [r15 + PV_NEXT]
    xor edx, edx
    call conformance_input_ex
    mov [r15 + C_BANKS], rax
    mov edi, 1
    mov edx, 0x400000
    xor r8d, r8d
    call conformance_gvas
    mov rcx, [r15 + C_BANKS]
    shl rcx, HV_HDR_SHIFT
    mov rax, HVCALL_LIST_EX | (1 << HV_REP_COUNT_SHIFT)
    or rcx, rax
    lea rsi, [r15 + PV_INPUT]
    call conformance_call_fast
    mov r11, 1 << HV_REP_COUNT_SHIFT
    CHECK_STATUS conformance, 0x303, r11

2:  dec ebx
    jnz conformance_round
    call conformance_barrier
    EXIT 0

# Runs the case at RBX: builds its input, makes the call, compares RAX.
conformance_run_case:
    mov rax, [rbx + ROW_TARGET]
    mov rdi, [r15 + PV_NEXT]
    cmp rax, T_SINGLE
    je 2f
    mov rdi, [r15 + PV_OTHERS]
    cmp rax, T_OTHERS
    je 2f
    cmp rax, T_ALLFLAG
    je 2f
    xor edi, edi
    cmp rax, T_ZERO
    je 2f
    cmp rax, T_EXALL
    je 2f
    mov rdi, [r15 + PV_HIGH]    # T_BANKS: needs a VP >= 64
    test rdi, rdi
    jz conformance_skip_case
    or rdi, [r15 + PV_SELF]
2:  mov [r15 + C_TARGETS], rdi
    mov rdx, [rbx + ROW_FLAGS]
    cmp qword ptr [rbx + ROW_TARGET], T_ALLFLAG
    jne 3f
    or rdx, HV_FLUSH_ALL_PROCESSORS
3:  mov rax, [rbx + ROW_CONTROL]
    and eax, 0xffff
    cmp eax, HVCALL_SPACE_EX
    je 4f
    cmp eax, HVCALL_LIST_EX
    je 4f
    # Non-Ex layout (also used for unknown codes): 3 header qwords.
    call conformance_input_nonex
    mov qword ptr [r15 + C_BANKS], 0
    mov qword ptr [r15 + C_HEADER_QWORDS], 3
    jmp 7f
4:  cmp qword ptr [rbx + ROW_TARGET], T_EXALL
    jne 5f
    lea rsi, [r15 + PV_INPUT]
    mov qword ptr [rsi], 0
    mov [rsi + 8], rdx
    mov qword ptr [rsi + 16], 1 # HV_GENERIC_SET_ALL
    mov qword ptr [rsi + 24], 0
    add rsi, 32
    xor eax, eax
    jmp 6f
5:  call conformance_input_ex
6:  mov [r15 + C_BANKS], rax
    add rax, 4
    mov [r15 + C_HEADER_QWORDS], rax

    # GVA list at RSI.
7:  mov rax, [rbx + ROW_GVA]
    mov edx, 0x200003
    mov r8d, 0x10000
    cmp rax, G_NORMAL
    je 8f
    mov rdx, 0x0000800000000000
    mov r8d, 0x1000
    cmp rax, G_NONCANON
    je 8f
    mov edx, 0x40000000 | (1 << 11)
    mov r8d, 0x200000
8:  mov rdi, [rbx + ROW_GVAS]
    call conformance_gvas

    # Expected status: a success row whose fast input overflows expects 3.
    mov rax, [rbx + ROW_EXPECT]
    cmp qword ptr [rbx + ROW_FAST], 0
    je 9f
    test eax, 0xffff
    jnz 9f
    mov rcx, [r15 + C_HEADER_QWORDS]
    add rcx, [rbx + ROW_GVAS]
    cmp rcx, HV_FAST_QWORDS
    jbe 9f
    mov eax, BAD_INPUT
    # What the partition does not offer: Ex calls are refused before any
    # other check (6); fast input without XMM cannot hold a flush call (3).
9:  mov rcx, [rbx + ROW_CONTROL]
    and ecx, 0xffff
    cmp ecx, HVCALL_SPACE_EX
    je 14f
    cmp ecx, HVCALL_LIST_EX
    jne 15f
14: test qword ptr [r15 + PV_FEATURES], FEAT_EX
    jnz 15f
    mov eax, HV_STATUS_ACCESS_DENIED
    jmp 16f
15: cmp qword ptr [rbx + ROW_FAST], 0
    je 16f
    test qword ptr [r15 + PV_FEATURES], FEAT_XMM
    jnz 16f
    test eax, 0xffff
    jnz 16f
    mov eax, BAD_INPUT
16: mov [r15 + C_EXPECT], rax

    # Control word: the row's bits plus the variable header size.
    mov rcx, [r15 + C_BANKS]
    add rcx, [rbx + ROW_HDR]
    and ecx, 0x3ff
    shl rcx, HV_HDR_SHIFT
    or rcx, [rbx + ROW_CONTROL]
    cmp qword ptr [rbx + ROW_FAST], 0
    je 10f
    lea rsi, [r15 + PV_INPUT]
    call conformance_call_fast
    jmp 12f
10: lea rdx, [r15 + PV_INPUT]
    mov rax, [rbx + ROW_INPUT]
    cmp rax, I_PAGE
    je 11f
    add rdx, 4
    cmp rax, I_MISALIGN
    je 11f
    add rdx, 0xff8 - 4
    cmp rax, I_SPAN
    je 11f
    mov rdx, 1 << 40
11: xor r8d, r8d
    HV_CALL
12: mov rsi, [r15 + C_EXPECT]
    cmp rax, rsi
    je 13f
    mov rdx, rax
    mov rdi, [rbx + ROW_NUM]
    jmp conformance_fail
13: inc qword ptr [r15 + PV_COUNT]
    ret

conformance_skip_case:
    inc qword ptr [r15 + C_SKIPPED]
    PRINT conformance, conformance_s_skip
    mov rax, [rbx + ROW_NUM]
    call conformance_print_hex
    PRINT conformance, conformance_s_no_high_vp
    ret


# ---- Gate phase: what the VMM must refuse, caught by our own IDT ----
conformance_gates:
    call conformance_install_idt

    # #GP for every crash, reenlightenment and TSC-invariant MSR, read and write.
    lea rbx, [rip + conformance_gp_msrs]
1:  mov ecx, [rbx]
    test ecx, ecx
    jz 4f
    RECOVER_AT 2f
    rdmsr
    mov edi, FAIL_NO_GP
    mov esi, [rbx]
    xor edx, edx
    jmp conformance_fail
2:  mov ecx, [rbx]
    RECOVER_AT 3f
    xor eax, eax
    xor edx, edx
    wrmsr
    mov edi, FAIL_NO_GP
    mov esi, [rbx]
    mov edx, 1
    jmp conformance_fail
3:  add rbx, 4
    jmp 1b
4:
    # GUEST_OS_ID = 0 turns the Hyper-V interface off: a call through the
    # stale hypercall page is KVM's own hypercall, RAX = -KVM_ENOSYS.
    mov ecx, HV_MSR_GUEST_OS_ID
    xor eax, eax
    xor edx, edx
    wrmsr
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call conformance_input_nonex
    mov ecx, HVCALL_SPACE
    call conformance_call_input_page
    mov rsi, RAX_KVM_ENOSYS
    mov edi, FAIL_NO_ENOSYS
    mov rdx, rax
    cmp rax, rsi
    jne conformance_fail
    inc qword ptr [r15 + PV_ENOSYS]
    # Back on: identify again and re-enable the page (the VMM rewrites it).
    mov ecx, HV_MSR_GUEST_OS_ID
    mov eax, HV_GUEST_OS_ID_LOW
    mov edx, HV_GUEST_OS_ID_HIGH
    wrmsr
    mov ecx, HV_MSR_HYPERCALL
    lea rax, [r14 + SH_HYPERCALL_PAGE]
    mov rdx, rax
    shr rdx, 32
    or eax, 1
    wrmsr

    # A call from compatibility mode (CS.L = 0, not 64-bit mode) gets #UD.
    call conformance_gdt_with_code32
    lea rax, [rip + conformance_compat]
    mov [r15 + PV_TMP + 56], eax
    mov ax, [r14 + SH_GDTR]
    and eax, 0xfff8             # the appended descriptor's selector
    mov [r15 + PV_TMP + 60], ax
    lea rax, [r14 + SH_HYPERCALL_PAGE]
    mov esi, eax                # stub address for the 32-bit call
    RECOVER_AT 5f
    mov rcx, HVCALL_SPACE
    jmp fword ptr [r15 + PV_TMP + 56]
5:  inc qword ptr [r15 + PV_UD_CALLS]
    lgdt [r14 + SH_OLD_GDTR]
    # The fault points at the calling instruction: the stub's `out`.
    lea rsi, [r14 + SH_HYPERCALL_PAGE]
    mov rdx, [r15 + PV_UD_RIP]
    mov edi, FAIL_UD_RIP
    cmp rdx, rsi
    jne conformance_fail

    # Ring 3: with IOPL 3 the `out` reaches the VMM, which must answer #UD
    # (CPL > 0); with IOPL 0 the start state's TSS grants no port, so the
    # CPU raises #GP before the VMM sees anything.
    call conformance_prepare_ring3
    mov ebx, RFLAGS_IOPL3
    RECOVER_AT 6f
    call conformance_enter_ring3
6:  call conformance_leave_ring3
    mov rdx, [r15 + PV_RING3_RAN]
    xor esi, esi
    mov edi, FAIL_RING3_SERVED
    test rdx, rdx
    jnz conformance_fail
    # #UD: the VMM refused it (CPL 3). #GP at the `out`: the host refused
    # the port before any exit (hosts whose ring 3 never reaches port I/O,
    # whatever IOPL says, like this project's CI hosts); either way the
    # call was not served.
    mov rax, [r15 + PV_UD]
    cmp rax, [r15 + PV_UD_CALLS]
    jbe 8f
    inc qword ptr [r15 + PV_UD_CALLS]
    lea rsi, [r14 + SH_HYPERCALL_PAGE]
    mov rdx, [r15 + PV_UD_RIP]
    mov edi, FAIL_UD_RIP
    cmp rdx, rsi
    jne conformance_fail
    jmp 9f
8:  inc qword ptr [r15 + PV_RING3_GP]
9:
    mov rax, [r15 + PV_GP]
    mov [r15 + PV_TMP + 48], rax
    xor ebx, ebx
    RECOVER_AT 7f
    call conformance_enter_ring3
7:  call conformance_leave_ring3
    mov rdx, [r15 + PV_GP]
    mov rsi, [r15 + PV_TMP + 48]
    inc rsi
    mov edi, FAIL_RING3_PORT
    cmp rdx, rsi
    jne conformance_fail
    cmp qword ptr [r15 + PV_RING3_RAN], 0
    jne conformance_fail

    # Exactly the expected faults: 20 #GP from the MSRs, 1 from ring 3 with
    # IOPL 0 (plus the host's refusal above, if any), one #UD per refused
    # call.
    mov rdx, [r15 + PV_GP]
    mov esi, 21
    add rsi, [r15 + PV_RING3_GP]
    mov edi, FAIL_GATE_COUNT
    cmp rdx, rsi
    jne conformance_fail
    mov rdx, [r15 + PV_UD]
    mov rsi, [r15 + PV_UD_CALLS]
    cmp rdx, rsi
    jne conformance_fail
    PRINT conformance, conformance_s_gates
    mov rax, [r15 + PV_UD_CALLS]
    call conformance_print_hex
    PRINT conformance, conformance_s_gp
    mov rax, [r15 + PV_GP]
    call conformance_print_hex
    PRINT conformance, conformance_s_enosys
    mov rax, [r15 + PV_ENOSYS]
    call conformance_print_hex
    PRINT conformance, conformance_s_ring3_gp
    mov rax, [r15 + PV_RING3_GP]
    call conformance_print_hex
    PRINT conformance, conformance_s_newline
    ret

# IDT with #UD and #GP gates (vectors 0..13; the others are not present).
conformance_install_idt:
    lea rbx, [r14 + SH_IDT]
    mov edi, VEC_UD
    lea rsi, [rip + conformance_ud_handler]
    call conformance_set_gate
    mov edi, VEC_GP
    lea rsi, [rip + conformance_gp_handler]
    call conformance_set_gate
    mov word ptr [r14 + SH_IDTR], IDT_VECTORS * 16 - 1
    mov [r14 + SH_IDTR + 2], rbx
    lidt [r14 + SH_IDTR]
    ret

# Loads a copy of the current GDT with a flat 32-bit code descriptor
# appended (its selector = the new limit & ~7); the old GDTR is kept.
conformance_gdt_with_code32:
    sgdt [r14 + SH_OLD_GDTR]
    movzx ecx, word ptr [r14 + SH_OLD_GDTR]
    inc ecx                     # bytes in the boot GDT
    mov edi, FAIL_GDT
    mov esi, 0xf8
    mov edx, ecx
    cmp ecx, esi
    ja conformance_fail
    mov rsi, [r14 + SH_OLD_GDTR + 2]
    lea rdi, [r14 + SH_GDT]
    xor eax, eax
1:  mov rdx, [rsi + rax]
    mov [rdi + rax], rdx
    add eax, 8
    cmp eax, ecx
    jb 1b
    mov rdx, DESC_CODE32
    mov [rdi + rcx], rdx
    add ecx, 7
    mov [r14 + SH_GDTR], cx
    mov [r14 + SH_GDTR + 2], rdi
    lgdt [r14 + SH_GDTR]
    ret


# Ring 3 needs: user pages (U on the first 8 MiB of the identity map: code,
# data areas, hypercall page), a ring-0 stack in the TSS (RSP0) for the
# fault, SYSENTER_CS for SYSEXIT (which the emulator runs; iretq to ring 3
# it does not), and the workload's SS to come back to.
conformance_prepare_ring3:
    mov ax, ss
    mov [r15 + PV_SAVED_SS], rax
    mov rax, cr3
    and rax, -0x1000
    or qword ptr [rax], PTE_USER        # PML4[0]
    mov rax, [rax]
    mov rdx, 0x000ffffffffff000
    and rax, rdx
    or qword ptr [rax], PTE_USER        # PDPT[0]
    mov rax, [rax]
    mov rdx, 0x000ffffffffff000
    and rax, rdx
    xor ecx, ecx
1:  or qword ptr [rax + rcx * 8], PTE_USER   # PD[0..3]: 2 MiB pages
    inc ecx
    cmp ecx, 4
    jb 1b
    mov rax, cr3
    mov cr3, rax
    # TSS.RSP0 = 512 bytes below this stack (the handlers reset RSP).
    str ax
    movzx eax, ax
    sgdt [r14 + SH_OLD_GDTR]
    add rax, [r14 + SH_OLD_GDTR + 2]
    movzx ecx, word ptr [rax + 2]
    movzx edx, byte ptr [rax + 4]
    shl edx, 16
    or ecx, edx
    movzx edx, byte ptr [rax + 7]
    shl edx, 24
    or ecx, edx
    mov edx, [rax + 8]
    shl rdx, 32
    or rcx, rdx
    # The start state grants ring 3 no port: I/O map base past the limit.
    movzx edx, word ptr [rcx + TSS_IO_MAP_BASE]
    mov esi, 0x68
    mov edi, FAIL_TSS_PORTS
    cmp edx, esi
    jb conformance_fail
    lea rax, [rsp - 512]
    and rax, -16
    mov [rcx + 4], rax
    mov ecx, MSR_SYSENTER_CS
    mov eax, 0x08
    xor edx, edx
    wrmsr
    ret

# Drops to ring 3 with IOPL = EBX >> 12 and calls the hypercall page there
# (RCX = a Space call). Does not return: the fault handler resumes at the
# recovery point.
conformance_enter_ring3:
    mov qword ptr [r15 + PV_RING3_RAN], 0
    pushfq
    and qword ptr [rsp], ~RFLAGS_IOPL3
    or [rsp], rbx
    popfq
    lea rdx, [rip + conformance_ring3]
    lea rcx, [r15 + PV_INPUT + 0xff0]
    lea rsi, [r14 + SH_HYPERCALL_PAGE]
    rex64 sysexit

conformance_leave_ring3:
    mov rax, [r15 + PV_SAVED_SS]
    mov ss, ax
    pushfq
    and qword ptr [rsp], ~RFLAGS_IOPL3
    popfq
    ret

conformance_ring3:
    mov rcx, HVCALL_SPACE
    call rsi
    mov qword ptr [r15 + PV_RING3_RAN], 1
    ud2

conformance_ud_handler:
    inc qword ptr [r15 + PV_UD]
    mov rax, [rsp]              # RIP of the faulting instruction (#UD has no error code)
    mov [r15 + PV_UD_RIP], rax
    jmp 1f
conformance_gp_handler:
    inc qword ptr [r15 + PV_GP]
1:  mov rsp, [r15 + PV_RECOVER_RSP]
    jmp qword ptr [r15 + PV_RECOVER_RIP]

# Compatibility mode: call the hypercall page (ESI) with RCX's low half.
# The VMM must answer #UD at the `out`; if it serves the call instead, the
# stub returns here and the vCPU fails.
.code32
conformance_compat:
    call esi
    mov eax, FAIL_COMPAT_SERVED
    out PORT_EXIT, eax
    ud2
.code64

    .balign 4
conformance_gp_msrs:
    .long 0x40000100, 0x40000101, 0x40000102, 0x40000103, 0x40000104, 0x40000105
    .long 0x40000106, 0x40000107, 0x40000108, 0x40000118, 0

    ROUTINES conformance

    .balign 8
conformance_cases:
# --- Space (0x0002): every target form, memory and fast input ---
    CASE 1, HVCALL_SPACE, OK, target=T_SINGLE
    CASE 2, HVCALL_SPACE, OK, target=T_SINGLE, fast=1
    CASE 3, HVCALL_SPACE, OK, target=T_OTHERS
    CASE 4, HVCALL_SPACE, OK, target=T_OTHERS, fast=1
    CASE 5, HVCALL_SPACE, OK, target=T_ALLFLAG
    CASE 6, HVCALL_SPACE, OK, target=T_ALLFLAG, fast=1
    CASE 7, HVCALL_SPACE, OK, target=T_ZERO           # mask 0 = all processors
    CASE 8, HVCALL_SPACE, OK, target=T_ZERO, fast=1
# --- List (0x0003), one GVA range ---
    CASE 9, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_SINGLE
    CASE 10, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_SINGLE, fast=1
    CASE 11, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_OTHERS
    CASE 12, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_OTHERS, fast=1
    CASE 13, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_ALLFLAG
    CASE 14, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_ALLFLAG, fast=1
    CASE 15, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_ZERO
    CASE 16, HVCALL_LIST, 1 << 32, reps=1, gvas=1, target=T_ZERO, fast=1
# --- SpaceEx (0x0013): sparse sets, empty set, banks, format ALL ---
    CASE 17, HVCALL_SPACE_EX, OK, target=T_SINGLE
    CASE 18, HVCALL_SPACE_EX, OK, target=T_SINGLE, fast=1
    CASE 19, HVCALL_SPACE_EX, OK, target=T_OTHERS
    CASE 20, HVCALL_SPACE_EX, OK, target=T_OTHERS, fast=1
    CASE 21, HVCALL_SPACE_EX, OK, target=T_ALLFLAG
    CASE 22, HVCALL_SPACE_EX, OK, target=T_ALLFLAG, fast=1
    CASE 23, HVCALL_SPACE_EX, OK, target=T_ZERO       # empty set: nobody to flush
    CASE 24, HVCALL_SPACE_EX, OK, target=T_ZERO, fast=1
    CASE 25, HVCALL_SPACE_EX, OK, target=T_BANKS      # skipped without a VP >= 64
    CASE 26, HVCALL_SPACE_EX, OK, target=T_BANKS, fast=1
    CASE 27, HVCALL_SPACE_EX, OK, target=T_EXALL
    CASE 28, HVCALL_SPACE_EX, OK, target=T_EXALL, fast=1
# --- ListEx (0x0014), one GVA range ---
    CASE 29, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_SINGLE
    CASE 30, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_SINGLE, fast=1
    CASE 31, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_OTHERS
    CASE 32, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_OTHERS, fast=1
    CASE 33, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_ALLFLAG
    CASE 34, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_ALLFLAG, fast=1
    CASE 35, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_ZERO
    CASE 36, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_ZERO, fast=1
    CASE 37, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_BANKS
    CASE 38, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_BANKS, fast=1
    CASE 39, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_EXALL
    CASE 40, HVCALL_LIST_EX, 1 << 32, reps=1, gvas=1, target=T_EXALL, fast=1
# --- List sizes: > 15 entries become flush-all inside but report every rep ---
    CASE 41, HVCALL_LIST, 16 << 32, reps=16, gvas=16
    CASE 42, HVCALL_LIST, 20 << 32, reps=20, gvas=20
    CASE 43, HVCALL_LIST_EX, 20 << 32, reps=20, gvas=20
    CASE 44, HVCALL_LIST, 11 << 32, reps=11, gvas=11, fast=1   # fills all 12 XMM qwords
# --- Restartable lists: rep start < rep count is success, RAX = rep count << 32 ---
    CASE 45, HVCALL_LIST, 3 << 32, reps=3, start=1, gvas=3
    CASE 46, HVCALL_LIST_EX, 3 << 32, reps=3, start=2, gvas=3, target=T_SINGLE, fast=1
# --- Flags and GVA forms ---
    CASE 47, HVCALL_LIST, 2 << 32, reps=2, gvas=2, gva=G_LARGE, flags=HV_FLUSH_EXTENDED_RANGE
    CASE 48, HVCALL_LIST_EX, 2 << 32, reps=2, gvas=2, gva=G_LARGE, flags=HV_FLUSH_EXTENDED_RANGE, target=T_SINGLE, fast=1
    CASE 49, HVCALL_LIST, 3 << 32, reps=3, gvas=3, gva=G_NONCANON   # ignored, not an error
    CASE 50, HVCALL_LIST, 1 << 32, reps=1, gvas=1, flags=HV_FLUSH_ALL_ADDRESS_SPACES | HV_FLUSH_NON_GLOBAL_ONLY
    CASE 51, HVCALL_LIST, 2 << 32, reps=2, gvas=2, gva=G_NONCANON, fast=1
# --- Reserved control bits 31:27, 47:44, 63:60 -> 3 ---
    CASE 52, HVCALL_SPACE, BAD_INPUT, rsvd=RSVD_27
    CASE 53, HVCALL_LIST, BAD_INPUT, reps=1, gvas=1, rsvd=RSVD_44
    CASE 54, HVCALL_SPACE_EX, BAD_INPUT, rsvd=RSVD_60
    CASE 55, HVCALL_LIST_EX, BAD_INPUT, reps=1, gvas=1, rsvd=RSVD_31, fast=1
# --- Rep rules -> 3 ---
    CASE 56, HVCALL_SPACE, BAD_INPUT, reps=1          # Space takes no reps
    CASE 57, HVCALL_SPACE_EX, BAD_INPUT, reps=1
    CASE 58, HVCALL_SPACE, BAD_INPUT, start=1
    CASE 59, HVCALL_LIST, BAD_INPUT                   # List needs rep count > 0
    CASE 60, HVCALL_LIST_EX, BAD_INPUT
    CASE 61, HVCALL_LIST, BAD_INPUT, reps=1, start=1, gvas=1   # rep start >= rep count
    CASE 62, HVCALL_LIST_EX, BAD_INPUT, reps=2, start=3, gvas=2, fast=1
# --- Variable header size ---
    CASE 63, HVCALL_SPACE, BAD_INPUT, hdr=1           # non-Ex: must be 0
    CASE 64, HVCALL_LIST, BAD_INPUT, reps=1, gvas=1, hdr=1, fast=1
    CASE 65, HVCALL_SPACE_EX, BAD_INPUT, hdr=1        # Ex: must equal popcount(valid_bank_mask)
    CASE 66, HVCALL_LIST_EX, BAD_INPUT, reps=1, gvas=1, hdr=-1, target=T_SINGLE
    CASE 67, HVCALL_SPACE_EX, BAD_INPUT, hdr=1, target=T_SINGLE, fast=1
# --- Unknown call code -> 2 ---
    CASE 68, UNKNOWN_CODE, BAD_CODE
    CASE 69, UNKNOWN_CODE, BAD_CODE, fast=1
# --- Memory input placement: alignment / page span -> 4, not RAM -> 3 ---
    CASE 70, HVCALL_SPACE, BAD_ALIGN, input=I_MISALIGN
    CASE 71, HVCALL_LIST_EX, BAD_ALIGN, reps=1, gvas=1, input=I_MISALIGN
    CASE 72, HVCALL_LIST, BAD_ALIGN, reps=1, gvas=1, input=I_SPAN
    CASE 73, HVCALL_SPACE_EX, BAD_ALIGN, input=I_SPAN
    CASE 74, HVCALL_SPACE, BAD_INPUT, input=I_OUTSIDE
    CASE 75, HVCALL_LIST_EX, BAD_INPUT, reps=1, gvas=1, input=I_OUTSIDE
# --- Fast Ex input overflow: format + mask + 1 bank + 11 GVAs = 14 > 12 -> 3 ---
    CASE 76, HVCALL_LIST_EX, BAD_INPUT, reps=11, gvas=11, target=T_SINGLE, fast=1
# --- Precedence between rules ---
    CASE 77, UNKNOWN_CODE, BAD_INPUT, rsvd=RSVD_31                 # reserved bits before code
    CASE 78, UNKNOWN_CODE, BAD_CODE, input=I_MISALIGN              # code before alignment
    CASE 79, HVCALL_SPACE, BAD_INPUT, reps=1, input=I_MISALIGN     # rep rules before alignment
    CASE 80, HVCALL_SPACE, BAD_INPUT, hdr=1, input=I_SPAN          # non-Ex header before span
    CASE 81, HVCALL_SPACE_EX, BAD_ALIGN, hdr=1, input=I_MISALIGN   # alignment before Ex header
    CASE 82, HVCALL_LIST, BAD_INPUT, rsvd=RSVD_27, input=I_OUTSIDE, reps=1 # reserved before memory
conformance_cases_end:

conformance_s_gates:
    .asciz "conformance: gates ud "
conformance_s_gp:
    .asciz " gp "
conformance_s_enosys:
    .asciz " enosys "
conformance_s_ring3_gp:
    .asciz " ring3-host-gp "
conformance_s_passed:
    .asciz "conformance: cases passed "
conformance_s_skipped:
    .asciz ", skipped "
conformance_s_skip:
    .asciz "conformance: skipped case "
conformance_s_no_high_vp:
    .asciz " (no VP index >= 64)\n"
WORKLOAD_END conformance
