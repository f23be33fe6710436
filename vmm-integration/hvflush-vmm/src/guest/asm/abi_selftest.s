# abi_selftest: proves the start state of docs/guest-abi.md without any
# hypercall. Every vCPU checks its registers, control registers, segments,
# stack, SSE and RAM; vCPU 0 also walks the page tables. All vCPUs then meet at
# a barrier (shared zeroed RAM after the image, lock xadd) and vCPU 0 checks
# that every vCPU arrived. Failure code = number of the failed check.

.equ ST_COUNT, 1        # RSI (vCPU count) not in 1..=64
.equ ST_INDEX, 2        # RDI (vCPU index) >= RSI
.equ ST_CONTROL, 3      # RCX is not the control page GPA 0x8000
.equ ST_LIMIT, 4        # RDX (usable limit) not page aligned
.equ ST_STACK, 5        # RSP is not RDX + (index + 1) * 16 KiB
.equ ST_RFLAGS, 6       # RFLAGS is not 0x2 (interrupts must be disabled)
.equ ST_CS, 7           # CS is not 0x08
.equ ST_DATA_SEG, 8     # DS/ES/SS is not 0x10
.equ ST_CR0, 9          # CR0 lacks PE/MP/NE/PG or has EM/TS
.equ ST_CR4, 10         # CR4 lacks PAE/OSFXSR/OSXMMEXCPT
.equ ST_EFER, 11        # EFER lacks LME/LMA
.equ ST_PML4, 12        # PML4[0] not present/writable
.equ ST_PDPT, 13        # a PDPT entry not present/writable
.equ ST_PD, 14          # a PD entry is not the 2 MiB identity mapping
.equ ST_STOP, 15        # control page stop is not 0
.equ ST_SSE, 16         # movdqu round trip through XMM0/XMM5 lost data
.equ ST_RAM, 17         # RAM at the usable limit did not keep a value
.equ ST_PUSH, 18        # push/pop on the stack did not round-trip
.equ ST_BARRIER, 19     # barrier count is not the vCPU count
.equ ST_ARRIVED, 20     # some vCPU did not mark its arrival

.equ CR0_REQUIRED, (1 << 0) | (1 << 1) | (1 << 5) | (1 << 31)   # PE MP NE PG
.equ CR0_FORBIDDEN, (1 << 2) | (1 << 3)                         # EM TS
.equ CR4_REQUIRED, (1 << 5) | (1 << 9) | (1 << 10)              # PAE OSFXSR OSXMMEXCPT
.equ EFER_REQUIRED, (1 << 8) | (1 << 10)                        # LME LMA
.equ PTE_FLAGS, 0x83                                            # present, writable, 2 MiB
.equ PTE_IGNORE, 0x60                                           # accessed, dirty

WORKLOAD_BEGIN abi_selftest
    # Checks that need the untouched entry state come first (flags before any
    # flag-changing instruction).
    pushfq
    pop rax
    mov r8, rdi
    mov r9, rsi
    mov r10, rdx
    mov r11, rcx
    mov rbx, rsp
    mov rbp, rcx                # for EXIT_EAX should an early check fail
    mov r12, rdi

    mov edi, ST_COUNT
    mov esi, 64
    mov rdx, r9
    test r9, r9
    jz abi_selftest_fail
    cmp r9, rsi
    ja abi_selftest_fail
    mov edi, ST_INDEX
    mov rsi, r9
    mov rdx, r8
    cmp r8, r9
    jae abi_selftest_fail
    mov edi, ST_CONTROL
    mov esi, 0x8000
    mov rdx, r11
    cmp r11, rsi
    jne abi_selftest_fail
    mov edi, ST_LIMIT
    mov rdx, r10
    mov rsi, r10
    and rsi, -0x1000
    cmp r10, rsi
    jne abi_selftest_fail
    mov edi, ST_STACK
    lea rsi, [r8 + 1]
    shl rsi, 14
    add rsi, r10
    mov rdx, rbx
    cmp rbx, rsi
    jne abi_selftest_fail
    mov rdx, rax
    mov edi, ST_RFLAGS
    mov esi, 2
    cmp rdx, rsi
    jne abi_selftest_fail

    mov rdi, r8
    mov rsi, r9
    mov rdx, r10
    mov rcx, r11
    WORKLOAD_ENTRY abi_selftest

    xor edx, edx
    mov dx, cs
    mov edi, ST_CS
    mov esi, 0x08
    cmp edx, esi
    jne abi_selftest_fail
    mov edi, ST_DATA_SEG
    mov esi, 0x10
    mov dx, ds
    cmp edx, esi
    jne abi_selftest_fail
    mov dx, es
    cmp edx, esi
    jne abi_selftest_fail
    mov dx, ss
    cmp edx, esi
    jne abi_selftest_fail

    mov rdx, cr0
    mov edi, ST_CR0
    mov esi, CR0_REQUIRED
    mov rax, rdx
    and rax, rsi
    cmp rax, rsi
    jne abi_selftest_fail
    test edx, CR0_FORBIDDEN
    jnz abi_selftest_fail
    mov rdx, cr4
    mov edi, ST_CR4
    mov esi, CR4_REQUIRED
    mov rax, rdx
    and rax, rsi
    cmp rax, rsi
    jne abi_selftest_fail
    mov ecx, 0xC0000080         # IA32_EFER
    rdmsr
    mov edx, eax
    mov edi, ST_EFER
    mov esi, EFER_REQUIRED
    and eax, esi
    cmp eax, esi
    jne abi_selftest_fail

    mov edi, ST_STOP
    xor esi, esi
    mov rdx, [rbp + CTL_STOP]
    test rdx, rdx
    jnz abi_selftest_fail

    # SSE: XMM loads and stores through memory (what fast hypercalls need).
    lea rsi, [rip + abi_selftest_pattern]
    movdqu xmm0, [rsi]
    movdqu xmm5, [rsi + 16]
    movdqu [r15 + PV_TMP], xmm5
    movdqu [r15 + PV_TMP + 16], xmm0
    mov edi, ST_SSE
    mov rdx, [r15 + PV_TMP]
    mov rsi, [rip + abi_selftest_pattern + 16]
    cmp rdx, rsi
    jne abi_selftest_fail
    mov rdx, [r15 + PV_TMP + 24]
    mov rsi, [rip + abi_selftest_pattern + 8]
    cmp rdx, rsi
    jne abi_selftest_fail

    # The last qwords below the usable limit are RAM the guest owns.
    lea rax, [r12 * 8 + 8]
    mov rcx, r10
    sub rcx, rax
    lea rsi, [r12 + 0x5a00]
    mov [rcx], rsi
    mov edi, ST_RAM
    mov rdx, [rcx]
    cmp rdx, rsi
    jne abi_selftest_fail

    mov rsi, 0x1234567890abcdef
    push rsi
    mov rdx, [rsp]
    pop rax
    mov edi, ST_PUSH
    cmp rdx, rsi
    jne abi_selftest_fail
    cmp rsp, rbx
    jne abi_selftest_fail

    test r12, r12
    jnz abi_selftest_meet

    # vCPU 0: every 2 MiB page up to the top of the stacks is mapped 1:1.
    mov rax, cr3
    and rax, -0x1000
    mov rdx, [rax]
    mov edi, ST_PML4
    mov esi, 3
    mov rcx, rdx
    and rcx, rsi
    cmp rcx, rsi
    jne abi_selftest_fail
    and rdx, -0x1000
    mov r11, rdx                # PDPT
    lea r10, [r10 + (64 << 14)] # top of the stack region (usable limit + 1 MiB)
    xor r9d, r9d                # 2 MiB page number
abi_selftest_walk:
    mov rax, r9
    shl rax, 21
    cmp rax, r10
    jae abi_selftest_meet
    mov rax, r9
    shr rax, 9                  # PDPT slot
    mov rdx, [r11 + rax * 8]
    mov edi, ST_PDPT
    mov esi, 3
    mov rcx, rdx
    and rcx, rsi
    cmp rcx, rsi
    jne abi_selftest_fail
    and rdx, -0x1000            # page directory
    mov rax, r9
    and eax, 511
    mov rdx, [rdx + rax * 8]
    and rdx, ~PTE_IGNORE
    mov rsi, r9
    shl rsi, 21
    or rsi, PTE_FLAGS
    mov edi, ST_PD
    cmp rdx, rsi
    jne abi_selftest_fail
    inc r9
    jmp abi_selftest_walk

abi_selftest_meet:
    mov rax, r12
    inc rax
    mov [r14 + SH_VP_TABLE + r12 * 8], rax
    call abi_selftest_barrier
    test r12, r12
    jnz abi_selftest_pass
    mov edi, ST_BARRIER
    mov rsi, r13
    mov rdx, [r14 + SH_BARRIER]
    cmp rdx, rsi
    jne abi_selftest_fail
    xor ecx, ecx
abi_selftest_check_arrivals:
    lea rsi, [rcx + 1]
    mov rdx, [r14 + SH_VP_TABLE + rcx * 8]
    mov edi, ST_ARRIVED
    cmp rdx, rsi
    jne abi_selftest_fail
    inc rcx
    cmp rcx, r13
    jb abi_selftest_check_arrivals

abi_selftest_pass:
    PRINT abi_selftest, abi_selftest_s_vcpu
    mov rax, r12
    call abi_selftest_print_hex
    PRINT abi_selftest, abi_selftest_s_ok
    EXIT 0

    ROUTINES abi_selftest

    .balign 16
abi_selftest_pattern:
    .quad 0x0123456789abcdef, 0xfedcba9876543210, 0x0f1e2d3c4b5a6978, 0x8796a5b4c3d2e1f0
abi_selftest_s_vcpu:
    .asciz "abi_selftest: vCPU "
abi_selftest_s_ok:
    .asciz " ok\n"
WORKLOAD_END abi_selftest
