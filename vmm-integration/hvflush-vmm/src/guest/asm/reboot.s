# reboot: a full VM reset like hardware. Needs PVH boot (trampoline) and a
# reset ROM that re-enters the PVH entry (hvflush-vmm maps one, §10.4).
#
# Boot 1: init, every vCPU flushes every other (Space, List with 2 ranges),
# barrier; the APs park (cli; hlt) and vCPU 0, once all have parked, sends
# INIT to all including self (ICR shorthand 10b). KVM resets every vCPU
# (kvm_apic_accept_events -> kvm_vcpu_reset): the BSP restarts at the reset
# vector, the APs wait for SIPI. Guest RAM survives, so the boot code runs
# again, brings the APs up again, and this workload sees RB_BOOTS = 2: another
# round of flushes, then every vCPU exits 0. Failure codes 0x701-0x703.

.equ RB_BOOTS, 0x018                # u64 data area: boots seen by vCPU 0
.equ RB_PARKED, 0x020               # u64 data area: APs parked in boot 1
.equ RB_CODE, PV_TMP + 40
.equ RB_GVAS, 2
.equ RB_LIST_OK, RB_GVAS << HV_REP_COUNT_SHIFT
.equ FAIL_RB_TRAMPOLINE, 0x701      # no PVH boot trampoline (flat boot)
.equ FAIL_RB_ROUND, 0x702           # a flush failed in boot 1 (0x703: in boot 2)

WORKLOAD_BEGIN reboot
    WORKLOAD_ENTRY reboot
    NEED_TRAMPOLINE reboot, FAIL_RB_TRAMPOLINE
    test r12, r12
    jnz 1f
    inc qword ptr [r14 + RB_BOOTS]
1:  call reboot_hv_init
    mov rbx, [r14 + RB_BOOTS]
    lea edi, [rbx + FAIL_RB_ROUND - 1]
    call reboot_round
    call reboot_barrier
    cmp rbx, 2
    jae reboot_done
    test r12, r12
    jnz reboot_park

    lea rcx, [r13 - 1]
2:  cmp [r14 + RB_PARKED], rcx
    jae 3f
    pause
    jmp 2b
3:  PRINT reboot, reboot_s_reset
    SEND_IPI 0, ICR_INIT_ALL, 1
4:  cli                             # KVM resets this vCPU before it gets here
    hlt
    jmp 4b

reboot_park:
    lock inc qword ptr [r14 + RB_PARKED]
5:  cli
    hlt
    jmp 5b

reboot_done:
    test r12, r12
    jnz 6f
    PRINT reboot, reboot_s_done
6:  EXIT 0

# Space, then List with RB_GVAS ranges, at every other vCPU; EDI = failure code.
reboot_round:
    mov [r15 + RB_CODE], rdi
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call reboot_input_nonex
    mov ecx, HVCALL_SPACE
    call reboot_call_input_page
    xor esi, esi
    test rax, rax
    jnz 7f
    mov rdi, [r15 + PV_OTHERS]
    xor edx, edx
    call reboot_input_nonex
    mov edi, RB_GVAS
    mov edx, 0x200003
    mov r8d, 0x10000
    call reboot_gvas
    mov rcx, HVCALL_LIST | RB_LIST_OK
    call reboot_call_input_page
    mov rsi, RB_LIST_OK
    cmp rax, rsi
    jne 7f
    ret
7:  mov rdx, rax
    mov rdi, [r15 + RB_CODE]
    jmp reboot_fail

    ROUTINES reboot

reboot_s_reset:
    .asciz "reboot: boot 1 done, INIT to all including self\n"
reboot_s_done:
    .asciz "reboot: boot 2 done\n"
WORKLOAD_END reboot
