# restart: an AP restarted with INIT/SIPI in the middle of a storm, the way an
# OS offlines and onlines a CPU. Needs PVH boot (the trampoline) and >= 2 vCPUs.
#
# vCPU 1 spins as a running target. vCPU 0 flushes it RS_BEFORE times (Space,
# then List with 2 ranges, statuses checked), sends it INIT then SIPI twice
# (targeted ICR, APIC ID 1), waits until vCPU 1 came back through the
# trampoline into this workload (its generation counter RS_GEN reaches 2),
# then flushes it until `stop` (at least once). Restarted, vCPU 1 checks its
# VP index is unchanged and spins until `stop`. vCPUs 2.. run the storm loop.
# Failure codes 0x601-0x605 below.

.equ RS_GEN, 0x010                  # u64 data area: vCPU 1's entries into the workload
.equ RS_CODE, PV_TMP + 40           # failure code of the flush being made
.equ RS_TARGET, 1                   # vCPU (= APIC ID) that is restarted
.equ RS_BEFORE, 8                   # flush pairs at it before the restart
.equ RS_GVAS, 2
.equ RS_LIST_OK, RS_GVAS << HV_REP_COUNT_SHIFT
.equ FAIL_RS_VCPUS, 0x601           # fewer than 2 vCPUs
.equ FAIL_RS_TRAMPOLINE, 0x602      # no PVH boot trampoline (flat boot)
.equ FAIL_RS_VP, 0x603              # the restarted vCPU's VP index changed
.equ FAIL_RS_BEFORE, 0x604          # a flush of vCPU 1 before the restart failed
.equ FAIL_RS_AFTER, 0x605           # a flush of vCPU 1 after the restart failed

WORKLOAD_BEGIN restart
    WORKLOAD_ENTRY restart
    mov edi, FAIL_RS_VCPUS
    mov esi, 2
    mov rdx, r13
    cmp r13, rsi
    jb restart_fail
    NEED_TRAMPOLINE restart, FAIL_RS_TRAMPOLINE
    cmp r12, RS_TARGET
    jne 1f
    mov eax, 1
    lock xadd [r14 + RS_GEN], rax
    test rax, rax
    jnz restart_again
1:  call restart_hv_init
    cmp r12, RS_TARGET
    je restart_target
    test r12, r12
    jnz restart_others

    mov ebx, RS_BEFORE
2:  mov edi, FAIL_RS_BEFORE
    call restart_flush_target
    dec ebx
    jnz 2b
    SEND_IPI RS_TARGET, ICR_INIT, INIT_DELAY
    SEND_IPI RS_TARGET, ICR_SIPI | (TRAMPOLINE_GPA >> 12), SIPI_DELAY
    SEND_IPI RS_TARGET, ICR_SIPI | (TRAMPOLINE_GPA >> 12), SIPI_DELAY
3:  cmp qword ptr [r14 + RS_GEN], 2
    jae 4f
    pause
    jmp 3b
4:  xor ebx, ebx
5:  mov edi, FAIL_RS_AFTER
    call restart_flush_target
    inc rbx
    cmp qword ptr [rbp + CTL_STOP], 0
    je 5b
    PRINT restart, restart_s_after
    mov rax, rbx
    call restart_print_hex
    PRINT restart, restart_s_newline
    EXIT 0

# vCPU 1, first life: a running target until vCPU 0 restarts it.
restart_target:
    pause
    jmp restart_target

# vCPU 1 after INIT/SIPI (boot trampoline, then this entry again).
restart_again:
    mov ecx, HV_MSR_VP_INDEX
    rdmsr
    shl rdx, 32
    or rdx, rax
    mov rsi, [r14 + SH_VP_TABLE + RS_TARGET * 8]
    mov edi, FAIL_RS_VP
    cmp rdx, rsi
    jne restart_fail
    PRINT restart, restart_s_back
6:  cmp qword ptr [rbp + CTL_STOP], 0
    jne 7f
    pause
    jmp 6b
7:  EXIT 0

restart_others:
    STORM_LOOP restart
restart_storm_done:
    EXIT 0

# Space, then List with RS_GVAS ranges, at vCPU RS_TARGET; EDI = failure code.
restart_flush_target:
    mov [r15 + RS_CODE], rdi
    mov edi, 1 << RS_TARGET
    xor edx, edx
    call restart_input_nonex
    mov ecx, HVCALL_SPACE
    call restart_call_input_page
    xor esi, esi
    test rax, rax
    jnz 8f
    mov edi, 1 << RS_TARGET
    xor edx, edx
    call restart_input_nonex
    mov edi, RS_GVAS
    mov edx, 0x200003
    mov r8d, 0x10000
    call restart_gvas
    mov rcx, HVCALL_LIST | RS_LIST_OK
    call restart_call_input_page
    mov rsi, RS_LIST_OK
    cmp rax, rsi
    jne 8f
    ret
8:  mov rdx, rax
    mov rdi, [r15 + RS_CODE]
    jmp restart_fail

    ROUTINES restart

restart_s_after:
    .asciz "restart: vCPU 1 restarted, flushes after restart "
restart_s_back:
    .asciz "restart: back after INIT/SIPI\n"
WORKLOAD_END restart
