# hyperv-flush reference guest: definitions, macros and routines shared by every
# built-in workload (docs/guest-abi.md is the contract they follow).
#
# Assembled once, ahead of the workloads, in one global_asm! block (Intel syntax).
# Every workload is its own position-independent blob in its own read-only
# section: only RIP-relative references to labels inside that blob, no absolute
# relocations. Guest code runs in KVM's instruction emulator on our hosts, so it
# only uses plain integer instructions, lock xadd, pause, cpuid, rdmsr/wrmsr,
# out, and movdqu for XMM loads (docs/host-facts.md §1: movq xmm, r64 is not emulated).
#
# Register conventions inside workloads (kept across every routine below):
#   r12 = vCPU index, r13 = vCPU count, rbp = control page GPA,
#   r14 = shared data area (first page boundary after the image),
#   r15 = this vCPU's private area, rbx = free for the caller.
# Routines may clobber rax, rcx, rdx, rsi, rdi, r8-r11 and XMM0-5.

# ---- ABI: ports and control page (docs/guest-abi.md) ----
.equ PORT_CONSOLE, 0xE9
.equ PORT_EXIT, 0xF4
.equ PORT_MARKER, 0xF6
.equ CTL_STOP, 0
.equ CTL_ITERATIONS, 8
.equ CTL_PARAM, 16
.equ CTL_TRAP_STUB, 24
# CTL_EXIT_HOOK comes from layout::control::EXIT_HOOK (workloads.rs).

# ---- Hyper-V (TLFS 6.0 §3.13 MSRs, §3.7 hypercall control, appendix flush calls) ----
.equ HV_MSR_GUEST_OS_ID, 0x40000000
.equ HV_MSR_HYPERCALL, 0x40000001
.equ HV_MSR_VP_INDEX, 0x40000002
# Guest OS ID: bit 63 open source, vendor 0x81 like Linux guests (arch/x86/include/asm/mshyperv.h).
.equ HV_GUEST_OS_ID_HIGH, 0x81000000
.equ HV_GUEST_OS_ID_LOW, 0x00000001
.equ HVCALL_SPACE, 0x0002
.equ HVCALL_LIST, 0x0003
.equ HVCALL_SPACE_EX, 0x0013
.equ HVCALL_LIST_EX, 0x0014
.equ HV_FAST, 1 << 16
.equ HV_HDR_SHIFT, 17
.equ HV_REP_COUNT_SHIFT, 32
.equ HV_REP_START_SHIFT, 48
.equ HV_FLUSH_ALL_PROCESSORS, 1 << 0
.equ HV_FLUSH_ALL_ADDRESS_SPACES, 1 << 1
.equ HV_FLUSH_NON_GLOBAL_ONLY, 1 << 2
.equ HV_FLUSH_EXTENDED_RANGE, 1 << 3
.equ HV_STATUS_SUCCESS, 0
.equ HV_STATUS_INVALID_HYPERCALL_CODE, 2
.equ HV_STATUS_INVALID_HYPERCALL_INPUT, 3
.equ HV_STATUS_INVALID_ALIGNMENT, 4
.equ HV_STATUS_ACCESS_DENIED, 6
# Fast input: RDX, R8, then XMM0-XMM5 = 14 qwords (TLFS §3.7.8).
.equ HV_FAST_QWORDS, 14

# ---- xAPIC interprocessor interrupts (Intel SDM Vol. 3A §11.6.1, §9.4.4) ----
# LAPIC_GPA and TRAMPOLINE_GPA / TRAMPOLINE_SIGNATURE come from layout.rs (workloads.rs).
.equ ICR_LOW, 0x300
.equ ICR_HIGH, 0x310                # destination APIC ID in bits 31:24
.equ ICR_BUSY, 1 << 12              # delivery status
.equ ICR_INIT, 0x00004500           # INIT, level assert, to the destination
.equ ICR_SIPI, 0x00004600           # start-up | vector, to the destination
.equ ICR_INIT_OTHERS, 0x000C4500    # INIT, all excluding self
.equ ICR_SIPI_OTHERS, 0x000C4600    # start-up | vector, all excluding self
.equ ICR_INIT_ALL, 0x00084500       # INIT, all including self
.equ INIT_DELAY, 10000              # pause loops after INIT (KVM needs none; hardware wants ~10 ms)
.equ SIPI_DELAY, 1000               # pause loops after each SIPI

# Writes ICR high (\dest << 24) and low (\low), waits until it is delivered,
# then spins \delay (>= 1) pause loops. Needs the LAPIC mapped (PVH boot's
# page tables map it uncached). Clobbers RAX, RCX.
.macro SEND_IPI dest, low, delay
    mov eax, LAPIC_GPA
    mov dword ptr [rax + ICR_HIGH], (\dest) << 24
    mov dword ptr [rax + ICR_LOW], \low
98: test dword ptr [rax + ICR_LOW], ICR_BUSY
    jz 97f
    pause
    jmp 98b
97: mov ecx, \delay
96: pause
    dec ecx
    jnz 96b
.endm

# Fails with \code unless the PVH boot code's trampoline is in place (the
# workload needs INIT/SIPI, so it cannot run under flat boot).
.macro NEED_TRAMPOLINE name, code
    mov edi, \code
    mov esi, TRAMPOLINE_SIGNATURE
    mov edx, [TRAMPOLINE_GPA + 4]
    cmp edx, esi
    jne \name\()_fail
.endm

# ---- Guest data area after the image (zero at start: fresh guest RAM) ----
.equ SH_BARRIER, 0x000          # u64 barrier arrivals (monotonic)
.equ SH_DONE, 0x008             # u64 conformance: vCPU 0 finished its table
.equ SH_VP_TABLE, 0x100         # u64[64]: vCPU index -> VP index
.equ SH_HYPERCALL_PAGE, 0x1000  # the hypercall page vCPU 0 enables
.equ SH_PERCPU, 0x2000          # first private area
.equ PERCPU_SHIFT, 13           # private areas are 8 KiB apart
.equ SH_SIZE, SH_PERCPU + (64 << PERCPU_SHIFT)
# Offsets inside a private area (r15).
.equ PV_INPUT, 0x0000           # hypercall input page (also the fast-input buffer)
.equ PV_BARRIER_GEN, 0x1000     # u64 barriers passed
.equ PV_RNG, 0x1008             # u64 xorshift state
.equ PV_COUNT, 0x1010           # u64 calls made
.equ PV_ALL, 0x1018             # u64 vCPU mask: every vCPU
.equ PV_SELF, 0x1020            # u64 vCPU mask: this vCPU
.equ PV_OTHERS, 0x1028          # u64 vCPU mask: every other vCPU (self when alone)
.equ PV_NEXT, 0x1030            # u64 vCPU mask: the next vCPU (self when alone)
.equ PV_HIGH, 0x1038            # u64 vCPU mask: vCPUs whose VP index is >= 64
.equ PV_TMP, 0x1040             # 8 u64 of scratch for workloads
.equ PV_FEATURES, 0x1080        # u64 FEAT_* bits: what the partition offers
.equ PV_BANKS, 0x1200           # u64[64] bank scratch of vpset (always left zeroed)

# IDT gate type: present, DPL 0, 64-bit interrupt gate, IST 0 (SDM Vol. 3A §6.14.1).
.equ GATE_INTR64, 0x8E00

# Optional features a workload adapts to (PV_FEATURES).
.equ FEAT_XMM, 1 << 0           # CPUID 0x40000003 EDX bit 4: XMM fast input
.equ FEAT_EX, 1 << 1            # CPUID 0x40000004 EAX bit 11: Ex processor masks

# ---- Failure codes written to PORT_EXIT (docs/guest-abi.md lists them) ----
.equ FAIL_RAM, 0x100            # usable RAM too small for the data area
.equ FAIL_VENDOR, 0x101         # CPUID 0x40000000 is not "Microsoft Hv" or max leaf < 0x40000005
.equ FAIL_INTERFACE, 0x102      # CPUID 0x40000001 EAX is not "Hv#1"
.equ FAIL_HYPERCALL_MSR, 0x103  # CPUID 0x40000003 EAX bit 5 clear
.equ FAIL_VP_INDEX_MSR, 0x104   # CPUID 0x40000003 EAX bit 6 clear
.equ FAIL_REMOTE_FLUSH, 0x105   # CPUID 0x40000004 EAX bit 2 clear
.equ FAIL_HYPERCALL_ENABLE, 0x106 # HYPERCALL MSR reads back without the enable bit
.equ FAIL_VP_INDEX_RANGE, 0x107 # VP index >= 4096 (64 banks of 64)

# Begins workload \name: its own section, exported start symbol.
.macro WORKLOAD_BEGIN name
    .pushsection .rodata.hvflush_guest_\name,"a",@progbits
    .balign 16
    .globl hvflush_guest_\name\()_start
    .hidden hvflush_guest_\name\()_start
hvflush_guest_\name\()_start:
.endm

# Ends workload \name: a local end label for RIP-relative use, exported end symbol.
.macro WORKLOAD_END name
    .balign 16
\name\()_image_end:
    .globl hvflush_guest_\name\()_end
    .hidden hvflush_guest_\name\()_end
hvflush_guest_\name\()_end:
    .popsection
.endm

# Entry prologue: keep the ABI registers, find the data areas after the image
# (\name\()_image_end), check they fit below the usable limit (RDX).
.macro WORKLOAD_ENTRY name
    mov r12, rdi
    mov r13, rsi
    mov rbp, rcx
    lea r14, [rip + \name\()_image_end]
    add r14, 0xfff
    and r14, -0x1000
    lea rax, [r14 + SH_SIZE]
    cmp rax, rdx
    jbe 90f
    mov edi, FAIL_RAM
    mov rsi, rax
    jmp \name\()_fail
90:
    mov r15, r12
    shl r15, PERCPU_SHIFT
    lea r15, [r14 + r15 + SH_PERCPU]
.endm

# Ends this vCPU with status \code (0 = pass).
.macro EXIT code
    mov eax, \code
    EXIT_EAX
.endm

# Ends this vCPU with the status in EAX. hvflush-vmm never resumes it. A VMM
# that ignores the port resumes it here: then the PVH boot code's exit hook
# (control page `exit_hook`, EDI = status, ESI = vCPU index) reports and powers
# off; without a hook (flat boot) ud2 turns the resume into a visible shutdown.
.macro EXIT_EAX
    out PORT_EXIT, eax
    mov edi, eax
    mov esi, r12d
    mov rax, [rbp + CTL_EXIT_HOOK]
    test rax, rax
    jz 99f
    jmp rax
99: ud2
.endm

# Prints the NUL-terminated string at \label.
.macro PRINT name, label
    lea rsi, [rip + \label]
    call \name\()_print
.endm

# Calls the hypercall page: RCX control, RDX input GPA, R8 output GPA -> RAX status.
.macro HV_CALL
    lea rax, [r14 + SH_HYPERCALL_PAGE]
    call rax
.endm

# Reports a status mismatch and exits: case/failure code \code, expected in \expected.
# Actual status is in RAX.
.macro CHECK_STATUS name, code, expected
    cmp rax, \expected
    je 91f
    mov rdx, rax
    mov rsi, \expected
    mov edi, \code
    jmp \name\()_fail
91:
.endm

# Prints the NUL-terminated string at RSI on the console port, as
# \name\()_print (the boot code has one too; each image is self-contained).
.macro PRINT_ROUTINE name
\name\()_print:
1:  mov al, [rsi]
    test al, al
    jz 2f
    out PORT_CONSOLE, al
    inc rsi
    jmp 1b
2:  ret
.endm

# The shared routines, emitted once inside each workload with that workload's
# name as prefix (each image must be self-contained).
.macro ROUTINES name

PRINT_ROUTINE \name

# Prints RAX as 0x followed by 16 hex digits.
\name\()_print_hex:
    mov rdx, rax
    mov al, '0'
    out PORT_CONSOLE, al
    mov al, 'x'
    out PORT_CONSOLE, al
    mov ecx, 16
1:  rol rdx, 4
    mov eax, edx
    and eax, 0xf
    cmp eax, 10
    jb 2f
    add eax, 'a' - '0' - 10
2:  add eax, '0'
    out PORT_CONSOLE, al
    dec ecx
    jnz 1b
    ret

# Prints "<name>: FAIL <code> expected <RSI> actual <RDX>" and exits with code EDI.
\name\()_fail:
    mov ebx, edi
    mov r10, rsi
    mov r11, rdx
    PRINT \name, \name\()_s_fail
    mov eax, ebx
    call \name\()_print_hex
    PRINT \name, \name\()_s_expected
    mov rax, r10
    call \name\()_print_hex
    PRINT \name, \name\()_s_actual
    mov rax, r11
    call \name\()_print_hex
    PRINT \name, \name\()_s_newline
    mov eax, ebx
    EXIT_EAX

# Waits until every vCPU has arrived. The counter only grows: barrier k of a
# run completes when it reaches k * count.
\name\()_barrier:
    mov rax, [r15 + PV_BARRIER_GEN]
    inc rax
    mov [r15 + PV_BARRIER_GEN], rax
    imul rax, r13
    mov ecx, 1
    lock xadd [r14 + SH_BARRIER], rcx
1:  cmp [r14 + SH_BARRIER], rax
    jae 2f
    pause
    jmp 1b
2:  ret

# Hyper-V init the way a Linux guest does it (arch/x86/kernel/cpu/mshyperv.c,
# arch/x86/hyperv/hv_init.c): check the leaves, vCPU 0 sets GUEST_OS_ID and
# enables the hypercall page, every vCPU publishes its VP index; then the vCPU
# masks of this vCPU are computed and all vCPUs meet at a barrier. The
# optional features (Ex masks, XMM fast input) are noted in PV_FEATURES.
\name\()_hv_init:
    mov eax, 0x40000000
    cpuid
    mov r8d, eax
    mov r9d, ebx
    mov r10d, ecx
    mov r11d, edx
    mov edi, FAIL_VENDOR
    mov esi, 0x7263694d         # "Micr"
    mov edx, r9d
    cmp r9d, esi
    jne \name\()_fail
    mov esi, 0x666f736f         # "osof"
    mov edx, r10d
    cmp r10d, esi
    jne \name\()_fail
    mov esi, 0x76482074         # "t Hv"
    mov edx, r11d
    cmp r11d, esi
    jne \name\()_fail
    mov esi, 0x40000005         # highest leaf Linux requires
    mov edx, r8d
    cmp r8d, esi
    jb \name\()_fail

    mov eax, 0x40000001
    cpuid
    mov edi, FAIL_INTERFACE
    mov esi, 0x31237648         # "Hv#1"
    mov edx, eax
    cmp eax, esi
    jne \name\()_fail

    mov eax, 0x40000003
    cpuid
    xor r11d, r11d              # FEAT_* bits
    test edx, 1 << 4
    jz 3f
    or r11d, FEAT_XMM
3:  mov edx, eax
    mov edi, FAIL_HYPERCALL_MSR
    mov esi, 1 << 5
    test eax, esi
    jz \name\()_fail
    mov edi, FAIL_VP_INDEX_MSR
    mov esi, 1 << 6
    test edx, esi
    jz \name\()_fail

    mov eax, 0x40000004
    cpuid
    test eax, 1 << 11
    jz 4f
    or r11d, FEAT_EX
4:  mov [r15 + PV_FEATURES], r11
    mov edx, eax
    mov edi, FAIL_REMOTE_FLUSH
    mov esi, 1 << 2
    test eax, esi
    jz \name\()_fail

    test r12, r12
    jnz 1f
    # vCPU 0: partition-wide MSRs.
    mov ecx, HV_MSR_GUEST_OS_ID
    mov eax, HV_GUEST_OS_ID_LOW
    mov edx, HV_GUEST_OS_ID_HIGH
    wrmsr
    mov ecx, HV_MSR_HYPERCALL
    rdmsr
    and eax, 0xffe              # keep the reserved bits 11:1 as read
    lea rsi, [r14 + SH_HYPERCALL_PAGE]
    or eax, esi                 # page GPA bits 31:12
    or eax, 1                   # enable
    mov rdx, rsi
    shr rdx, 32                 # page GPA bits 63:32
    wrmsr
    rdmsr
    mov edi, FAIL_HYPERCALL_ENABLE
    mov esi, 1
    mov edx, eax
    test eax, esi
    jz \name\()_fail
1:
    mov ecx, HV_MSR_VP_INDEX
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov edi, FAIL_VP_INDEX_RANGE
    mov esi, 4095
    mov rdx, rax
    cmp rax, rsi
    ja \name\()_fail
    mov [r14 + SH_VP_TABLE + r12 * 8], rax
    call \name\()_barrier
    jmp \name\()_masks

# Computes the PV_ALL/SELF/OTHERS/NEXT/HIGH vCPU masks of this vCPU. Needs
# the VP table to be complete (after the init barrier).
\name\()_masks:
    mov rax, -1
    cmp r13, 64
    je 1f
    mov ecx, r13d
    mov eax, 1
    shl rax, cl
    dec rax
1:  mov [r15 + PV_ALL], rax
    mov ecx, r12d
    mov edx, 1
    shl rdx, cl
    mov [r15 + PV_SELF], rdx
    mov rsi, rdx
    not rsi
    and rax, rsi
    jnz 2f
    mov rax, rdx                # alone: "others" is this vCPU
2:  mov [r15 + PV_OTHERS], rax
    lea rcx, [r12 + 1]
    cmp rcx, r13
    jb 3f
    xor ecx, ecx
3:  mov eax, 1
    shl rax, cl
    mov [r15 + PV_NEXT], rax
    xor eax, eax                # vCPUs with VP >= 64
    xor r9d, r9d
4:  cmp r9, r13
    jae 6f
    cmp qword ptr [r14 + SH_VP_TABLE + r9 * 8], 64
    jb 5f
    mov ecx, r9d
    mov edx, 1
    shl rdx, cl
    or rax, rdx
5:  inc r9
    jmp 4b
6:  mov [r15 + PV_HIGH], rax
    ret

# Non-Ex processor mask of the vCPUs in mask RDI: RAX = VP bits of those with
# VP < 64, RDX = the vCPUs left out (VP >= 64, not expressible without Ex).
\name\()_nonex_mask:
    xor eax, eax
    xor edx, edx
    xor r9d, r9d
1:  cmp r9, r13
    jae 4f
    mov r8, rdi
    mov ecx, r9d
    shr r8, cl
    test r8d, 1
    jz 3f
    mov rcx, [r14 + SH_VP_TABLE + r9 * 8]
    mov r8d, 1
    cmp rcx, 64
    jae 2f
    shl r8, cl
    or rax, r8
    jmp 3f
2:  mov ecx, r9d
    shl r8, cl
    or rdx, r8
3:  inc r9
    jmp 1b
4:  ret

# Writes the sparse VP set (TLFS hv_vp_set: format 0, valid_bank_mask, banks in
# ascending bank order) of the vCPUs in mask RDI at RSI. Returns RAX = number of
# banks (the Ex variable header size) and RSI just past the last bank.
\name\()_vpset:
    lea r10, [r15 + PV_BANKS]
    xor edx, edx                # valid_bank_mask
    xor r9d, r9d
1:  cmp r9, r13
    jae 3f
    mov r8, rdi
    mov ecx, r9d
    shr r8, cl
    test r8d, 1
    jz 2f
    mov rax, [r14 + SH_VP_TABLE + r9 * 8]
    mov ecx, eax
    and ecx, 63
    mov r8d, 1
    shl r8, cl                  # bit of the VP in its bank
    shr rax, 6                  # bank
    or [r10 + rax * 8], r8
    mov ecx, eax
    mov r8d, 1
    shl r8, cl
    or rdx, r8
2:  inc r9
    jmp 1b
3:  mov qword ptr [rsi], 0      # HV_GENERIC_SET_SPARSE_4K
    mov [rsi + 8], rdx
    add rsi, 16
    xor eax, eax
    xor r9d, r9d
4:  test rdx, rdx               # pack the banks, clearing the scratch behind us
    jz 6f
    test edx, 1
    jz 5f
    mov r8, [r10 + r9 * 8]
    mov qword ptr [r10 + r9 * 8], 0
    mov [rsi], r8
    add rsi, 8
    inc eax
5:  shr rdx, 1
    inc r9
    jmp 4b
6:  ret

# Writes RDI GVA range entries at RSI: the first is RDX, each next adds R8.
# Returns RSI just past the list.
\name\()_gvas:
    mov rax, rdx
    mov rcx, rdi
1:  test rcx, rcx
    jz 2f
    mov [rsi], rax
    add rsi, 8
    add rax, r8
    dec rcx
    jmp 1b
2:  ret

# Non-Ex input header at the input page (TLFS hv_tlb_flush): address space 0,
# flags RDX, processor mask of the vCPUs in mask RDI. A non-empty set that has
# no VP < 64 falls back to HV_FLUSH_ALL_PROCESSORS (over-flushing is allowed);
# RDI = 0 keeps mask 0 (= all processors). Returns RSI = GVA list start.
\name\()_input_nonex:
    mov r11, rdx
    call \name\()_nonex_mask
    test rax, rax
    jnz 1f
    test rdi, rdi
    jz 1f
    or r11, HV_FLUSH_ALL_PROCESSORS
1:  lea rsi, [r15 + PV_INPUT]
    mov qword ptr [rsi], 0
    mov [rsi + 8], r11
    mov [rsi + 16], rax
    add rsi, 24
    ret

# Ex input header at the input page (TLFS hv_tlb_flush_ex): address space 0,
# flags RDX, sparse VP set of the vCPUs in mask RDI. Returns RAX = banks (the
# variable header size) and RSI = GVA list start.
\name\()_input_ex:
    lea rsi, [r15 + PV_INPUT]
    mov qword ptr [rsi], 0
    mov [rsi + 8], rdx
    add rsi, 16
    jmp \name\()_vpset

# Fast hypercall: RCX control (the fast bit is set here), RSI = 14-qword input
# buffer laid out like the memory input: RDX = [0], R8 = [8], XMM0-5 = [16..112).
# Returns the status in RAX.
\name\()_call_fast:
    or rcx, HV_FAST
    mov rdx, [rsi]
    mov r8, [rsi + 8]
    movdqu xmm0, [rsi + 16]
    movdqu xmm1, [rsi + 32]
    movdqu xmm2, [rsi + 48]
    movdqu xmm3, [rsi + 64]
    movdqu xmm4, [rsi + 80]
    movdqu xmm5, [rsi + 96]
    HV_CALL
    ret

# Memory-input hypercall with the input at this vCPU's input page: RCX control.
\name\()_call_input_page:
    lea rdx, [r15 + PV_INPUT]
    xor r8d, r8d
    HV_CALL
    ret

# IDT gate for vector EDI to handler RSI in the IDT at RBX, CS = the current
# CS. Clobbers RAX, RDX.
\name\()_set_gate:
    mov rax, rdi
    shl rax, 4
    add rax, rbx
    mov [rax], si
    mov dx, cs
    mov [rax + 2], dx
    mov word ptr [rax + 4], GATE_INTR64
    mov rdx, rsi
    shr rdx, 16
    mov [rax + 6], dx
    shr rdx, 16
    mov [rax + 8], edx
    mov dword ptr [rax + 12], 0
    ret

\name\()_s_fail:
    .asciz "\name: FAIL "
\name\()_s_expected:
    .asciz " expected "
\name\()_s_actual:
    .asciz " actual "
\name\()_s_newline:
    .asciz "\n"
.endm
