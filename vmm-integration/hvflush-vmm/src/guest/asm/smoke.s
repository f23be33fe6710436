# smoke: Hyper-V init like a Linux guest, then every vCPU makes each kind of
# flush (Space, List, SpaceEx, ListEx; memory and fast input) at the other
# vCPUs, twice, and checks every status. Failure code 0x2NN = call NN below.
# Calls the partition does not offer (Ex masks, XMM fast input) are skipped.

.equ SMOKE_ROUNDS, 2
.equ SMOKE_GVAS, 2                  # List calls flush 2 ranges of 4 pages
.equ SMOKE_GVA_FIRST, 0x200003      # GVA 2 MiB, 3 additional pages
.equ SMOKE_GVA_STRIDE, 0x10000
.equ SMOKE_LIST_OK, SMOKE_GVAS << HV_REP_COUNT_SHIFT   # success, reps complete

WORKLOAD_BEGIN smoke
    WORKLOAD_ENTRY smoke
    call smoke_hv_init
    mov ebx, SMOKE_ROUNDS

smoke_round:
    # 0x201/0x202: Space, memory and fast input.
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call smoke_input_nonex
    mov ecx, HVCALL_SPACE
    call smoke_call_input_page
    CHECK_STATUS smoke, 0x201, 0
    test qword ptr [r15 + PV_FEATURES], FEAT_XMM
    jz 1f
    mov ecx, HVCALL_SPACE
    lea rsi, [r15 + PV_INPUT]
    call smoke_call_fast
    CHECK_STATUS smoke, 0x202, 0
1:

    # 0x203/0x204: List with 2 GVA ranges, memory and fast input.
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call smoke_input_nonex
    call smoke_write_gvas
    mov rcx, HVCALL_LIST | SMOKE_LIST_OK
    call smoke_call_input_page
    mov r11, SMOKE_LIST_OK
    CHECK_STATUS smoke, 0x203, r11
    test qword ptr [r15 + PV_FEATURES], FEAT_XMM
    jz 1f
    mov rcx, HVCALL_LIST | SMOKE_LIST_OK
    lea rsi, [r15 + PV_INPUT]
    call smoke_call_fast
    mov r11, SMOKE_LIST_OK
    CHECK_STATUS smoke, 0x204, r11
1:

    # 0x205: SpaceEx, memory input, every other vCPU (any number of banks).
    test qword ptr [r15 + PV_FEATURES], FEAT_EX
    jz smoke_round_end
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call smoke_input_ex
    mov rcx, rax
    shl rcx, HV_HDR_SHIFT
    or rcx, HVCALL_SPACE_EX
    call smoke_call_input_page
    CHECK_STATUS smoke, 0x205, 0

    # 0x206: ListEx with 2 GVA ranges, memory input.
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call smoke_input_ex
    mov [r15 + PV_TMP], rax
    call smoke_write_gvas
    mov rcx, [r15 + PV_TMP]
    shl rcx, HV_HDR_SHIFT
    mov rax, HVCALL_LIST_EX | SMOKE_LIST_OK
    or rcx, rax
    call smoke_call_input_page
    mov r11, SMOKE_LIST_OK
    CHECK_STATUS smoke, 0x206, r11

    # 0x207/0x208: SpaceEx and ListEx, fast input (set + GVAs must fit 12 qwords).
    test qword ptr [r15 + PV_FEATURES], FEAT_XMM
    jz smoke_round_end
    call smoke_fast_ex_input
    mov rcx, rax
    shl rcx, HV_HDR_SHIFT
    or rcx, HVCALL_SPACE_EX
    lea rsi, [r15 + PV_INPUT]
    call smoke_call_fast
    CHECK_STATUS smoke, 0x207, 0
    call smoke_fast_ex_input
    mov [r15 + PV_TMP], rax
    call smoke_write_gvas
    mov rcx, [r15 + PV_TMP]
    shl rcx, HV_HDR_SHIFT
    mov rax, HVCALL_LIST_EX | SMOKE_LIST_OK
    or rcx, rax
    lea rsi, [r15 + PV_INPUT]
    call smoke_call_fast
    mov r11, SMOKE_LIST_OK
    CHECK_STATUS smoke, 0x208, r11

smoke_round_end:
    dec ebx
    jnz smoke_round

    call smoke_barrier
    test r12, r12
    jnz 1f
    PRINT smoke, smoke_s_ok
1:  EXIT 0

# Ex input for fast calls: every other vCPU when their banks leave room for
# SMOKE_GVAS ranges in the 12 XMM qwords, else only the next vCPU (one bank).
smoke_fast_ex_input:
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call smoke_input_ex
    cmp rax, 12 - 2 - SMOKE_GVAS
    jbe 1f
    mov rdi, [r15 + PV_NEXT]
    xor edx, edx
    call smoke_input_ex
1:  ret

# Appends the SMOKE_GVAS ranges at RSI.
smoke_write_gvas:
    mov edi, SMOKE_GVAS
    mov edx, SMOKE_GVA_FIRST
    mov r8d, SMOKE_GVA_STRIDE
    jmp smoke_gvas

    ROUTINES smoke

smoke_s_ok:
    .asciz "smoke: all vCPUs passed\n"
WORKLOAD_END smoke
