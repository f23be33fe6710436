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

conformance_s_passed:
    .asciz "conformance: cases passed "
conformance_s_skipped:
    .asciz ", skipped "
conformance_s_skip:
    .asciz "conformance: skipped case "
conformance_s_no_high_vp:
    .asciz " (no VP index >= 64)\n"
WORKLOAD_END conformance
