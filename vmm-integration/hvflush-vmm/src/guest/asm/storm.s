# storm: every vCPU flushes pseudo-random target sets with random call kinds
# (xorshift64 seeded by the vCPU index) until the control page's `stop` word
# becomes 1, checks every status, prints its call count and exits 0.
# HV_STATUS_ACCESS_DENIED is accepted and counted: the VMM may switch the
# flush service off at run time (a Linux guest then falls back to IPIs) and
# on again. Any other unexpected status fails.
# Failure code 0x4CC: CC = call code of the failed call.
#
# One random word per call: bits 63:62 call (Space, List, SpaceEx, ListEx),
# bit 61 fast input, bits 34:32 GVA count - 1, the low bits the target set.
# Ex calls and fast input are used only when the partition offers them.

.equ S_CONTROL, PV_TMP          # control word of the call being made
.equ S_EXPECT, PV_TMP + 8       # expected RAX
.equ S_GVAS, PV_TMP + 16        # GVA ranges of a List call
.equ S_QWORDS, PV_TMP + 24      # input size in qwords (fast input must fit 14)
.equ S_DENIED, PV_TMP + 32      # calls answered ACCESS_DENIED (service off)

# The storm loop, shared with `restart`: seeds the generator from the vCPU
# index, then random calls until `stop`; continues at \name\()_storm_done.
.macro STORM_LOOP name
    lea rax, [r12 + 1]
    mov rcx, 0x9e3779b97f4a7c15     # golden-ratio seed spreading, never 0 times 1..64
    imul rax, rcx
    mov [r15 + PV_RNG], rax
    mov qword ptr [r15 + S_DENIED], 0

\name\()_storm_loop:
    cmp qword ptr [rbp + CTL_STOP], 0
    jne \name\()_storm_done

    # xorshift64 (Marsaglia 2003): 13, 7, 17.
    mov rax, [r15 + PV_RNG]
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx
    mov [r15 + PV_RNG], rax

    mov rdi, rax
    and rdi, [r15 + PV_ALL]
    jnz 1f
    mov rdi, [r15 + PV_SELF]
1:  mov rcx, rax
    shr rcx, 32
    and ecx, 7
    inc ecx
    mov [r15 + S_GVAS], rcx
    xor edx, edx                    # flags

    bt rax, 63                      # Ex, when offered?
    jnc 6f
    test qword ptr [r15 + PV_FEATURES], FEAT_EX
    jnz \name\()_storm_ex
6:
    call \name\()_input_nonex
    mov qword ptr [r15 + S_QWORDS], 3
    mov ecx, HVCALL_SPACE
    jmp \name\()_storm_kind
\name\()_storm_ex:
    call \name\()_input_ex
    mov rcx, rax
    add rax, 4
    mov [r15 + S_QWORDS], rax
    shl rcx, HV_HDR_SHIFT
    or rcx, HVCALL_SPACE_EX

\name\()_storm_kind:
    # Space or List? (List codes are Space codes + 1.)
    xor eax, eax
    mov [r15 + S_EXPECT], rax
    mov rax, [r15 + PV_RNG]
    bt rax, 62
    jnc 2f
    inc rcx
    mov rax, [r15 + S_GVAS]
    add [r15 + S_QWORDS], rax
    shl rax, HV_REP_COUNT_SHIFT
    or rcx, rax
    mov [r15 + S_EXPECT], rax       # success: every rep complete
    mov [r15 + S_CONTROL], rcx
    mov rdi, [r15 + S_GVAS]
    mov edx, 0x200003
    mov r8d, 0x10000
    call \name\()_gvas
    mov rcx, [r15 + S_CONTROL]
2:  mov [r15 + S_CONTROL], rcx

    # Fast when the random bit says so and the input fits the fast registers.
    mov rax, [r15 + PV_RNG]
    bt rax, 61
    jnc 3f
    test qword ptr [r15 + PV_FEATURES], FEAT_XMM
    jz 3f
    cmp qword ptr [r15 + S_QWORDS], HV_FAST_QWORDS
    ja 3f
    lea rsi, [r15 + PV_INPUT]
    call \name\()_call_fast
    jmp 4f
3:  call \name\()_call_input_page
4:  mov rsi, [r15 + S_EXPECT]
    cmp rax, rsi
    je 5f
    cmp rax, HV_STATUS_ACCESS_DENIED
    jne 7f
    inc qword ptr [r15 + S_DENIED]
    jmp \name\()_storm_loop
7:  mov rdx, rax
    mov rdi, [r15 + S_CONTROL]
    and edi, 0xff
    or edi, 0x400
    jmp \name\()_fail
5:  inc qword ptr [r15 + PV_COUNT]
    jmp \name\()_storm_loop

.endm

WORKLOAD_BEGIN storm
    WORKLOAD_ENTRY storm
    call storm_hv_init
    STORM_LOOP storm

storm_storm_done:
    PRINT storm, storm_s_calls
    mov rax, [r15 + PV_COUNT]
    call storm_print_hex
    PRINT storm, storm_s_denied
    mov rax, [r15 + S_DENIED]
    call storm_print_hex
    PRINT storm, storm_s_newline
    EXIT 0

    ROUTINES storm

storm_s_calls:
    .asciz "storm: calls made "
storm_s_denied:
    .asciz ", access denied "
WORKLOAD_END storm
