# bench: guest half of `hvflush-vmm bench` (protocol in docs/guest-abi.md).
#
# After Hyper-V init, vCPU 0 builds one memory-input List call with 16 GVA
# ranges at every other vCPU (ListEx when some VP index is >= 64 and Ex masks
# are offered), then:
#   marker 1, `iterations` calls through the trap-only stub,
#   marker 2, `iterations` of the List call through the hypercall page,
#   marker 3, checks every status was success (16 << 32); with idle
#   targets (param 0) then:
#   marker 4, `iterations` of the List call at vCPU 0 alone (self-flush:
#   every call arms the flush executor on the way back in),
#   marker 5, `iterations` trap-stub calls that the VMM runs without the
#   flush hooks on this vCPU's thread,
#   marker 6, the same trap loop with the hooks,
#   marker 7, checks the self-flush statuses, exits 0.
# Both phases run the same instructions (bench_phase); only the called
# address differs, so the difference isolates the VMM's hypercall handling.
# vCPUs 1..=param spin until `stop` (running targets); the others exit at
# once (idle targets), and vCPU 0 waits until they have before marker 1.
# With BENCH_HALT in param (PVH boot), those others halt instead (halted
# targets): each enables its LAPIC, loads an IDT with a gate for
# BENCH_WAKE_VECTOR, counts itself and halts with interrupts enabled. After
# marker 7 vCPU 0 wakes them with a fixed IPI to all but itself; each woken
# target writes marker 8 (guest code run after the flushes, which the host
# trace sees), counts itself woken and exits 0; vCPU 0 waits for them all.

.equ B_CALL_TARGET, PV_TMP      # address called in the current phase
.equ B_LOOPS, PV_TMP + 8        # calls left in the phase
.equ B_ERRORS, PV_TMP + 16      # OR of (RAX xor expected) over the phase
.equ B_CONTROL, PV_TMP + 24     # control word of the List call
.equ B_EXPECT, PV_TMP + 32      # its expected RAX
.equ B_SELF_ERRORS, PV_TMP + 40 # B_ERRORS of the self-flush phase
.equ B_HALT_RSP, PV_TMP + 48    # a halted target's stack pointer, for its wake handler
.equ B_IDT, 0x1400              # private area: a halted target's IDT (vectors 0..0x20)
.equ B_IDTR, 0x1620             # private area: its IDTR (10 bytes)
.equ B_WOKEN, 0x010             # u64 data area: halted targets woken
.equ BENCH_HALT, 1 << 32        # param: targets above the running ones halt
.equ BENCH_WAKE_VECTOR, 0x20
.equ APIC_EOI, 0xB0
.equ APIC_SVR, 0xF0
.equ APIC_SVR_ENABLE, 0x1FF     # APIC software enable | spurious vector 0xFF
.equ ICR_FIXED_OTHERS, 0x000C4000 # fixed, level assert, all excluding self
.equ BENCH_GVAS, 16
.equ BENCH_OK, BENCH_GVAS << HV_REP_COUNT_SHIFT
.equ MARKER_TRAP_START, 1
.equ MARKER_HYPERCALL_START, 2
.equ MARKER_HYPERCALL_END, 3
.equ MARKER_SELF_FLUSH_START, 4
.equ MARKER_HOOKS_OFF_START, 5
.equ MARKER_HOOKS_ON_START, 6
.equ MARKER_HOOKS_ON_END, 7
.equ MARKER_TARGET_WOKEN, 8
.equ FAIL_NO_TRAP_STUB, 0x501   # control page trap_stub_gpa is 0
.equ FAIL_BENCH_STATUS, 0x502   # a List call did not succeed
.equ FAIL_BENCH_TRAMPOLINE, 0x503 # halted targets asked for under flat boot

WORKLOAD_BEGIN bench
    WORKLOAD_ENTRY bench
    call bench_hv_init
    test byte ptr [rbp + CTL_PARAM + 4], BENCH_HALT >> 32
    jz 1f
    # Halted targets need the LAPIC, which only the PVH page tables map.
    NEED_TRAMPOLINE bench, FAIL_BENCH_TRAMPOLINE
1:  test r12, r12
    jz bench_initiator
    mov eax, [rbp + CTL_PARAM]  # the running targets (low half)
    cmp r12, rax
    ja bench_idle
bench_spin:
    cmp qword ptr [rbp + CTL_STOP], 0
    jne bench_exit
    pause
    jmp bench_spin
bench_exit:
    EXIT 0
bench_idle:
    test byte ptr [rbp + CTL_PARAM + 4], BENCH_HALT >> 32
    jnz bench_halt
    # Counted just before leaving: vCPU 0 starts measuring only after every
    # idle vCPU got here, so its flushes find them outside KVM_RUN.
    lock inc qword ptr [r14 + SH_DONE]
    EXIT 0

# A halted target: blocked in the host (in-kernel LAPIC) until the wake IPI.
bench_halt:
    call bench_install_idt
    mov eax, LAPIC_GPA
    mov dword ptr [rax + APIC_SVR], APIC_SVR_ENABLE
    mov [r15 + B_HALT_RSP], rsp
    lock inc qword ptr [r14 + SH_DONE]
1:  sti
    hlt
    jmp 1b                      # a wake-up without the IPI: halt again

# The wake IPI's handler (an interrupt gate: IF is clear). An emulated guest
# cannot rely on iretq (faults.s), and the target only exits from here.
bench_woken:
    mov rsp, [r15 + B_HALT_RSP]
    mov eax, MARKER_TARGET_WOKEN
    out PORT_MARKER, eax
    mov eax, LAPIC_GPA
    mov dword ptr [rax + APIC_EOI], 0
    lock inc qword ptr [r14 + B_WOKEN]
    EXIT 0

# This vCPU's IDT at B_IDT: only the wake vector's gate is present.
bench_install_idt:
    lea rbx, [r15 + B_IDT]
    mov edi, BENCH_WAKE_VECTOR
    lea rsi, [rip + bench_woken]
    call bench_set_gate
    mov word ptr [r15 + B_IDTR], (BENCH_WAKE_VECTOR + 1) * 16 - 1
    mov [r15 + B_IDTR + 2], rbx
    lidt [r15 + B_IDTR]
    ret

bench_initiator:
    # Idle or halted vCPUs: count - 1 - running (none if the running
    # targets are every other vCPU).
    lea rax, [r13 - 1]
    mov ecx, [rbp + CTL_PARAM]
    sub rax, rcx
    jae 5f
    xor eax, eax
5:  cmp [r14 + SH_DONE], rax
    je 6f
    pause
    jmp 5b
6:
    mov rdi, [r15 + PV_OTHERS]
    call bench_nonex_mask
    mov rdi, [r15 + PV_OTHERS]
    test rdx, rdx
    jz 3f
    test qword ptr [r15 + PV_FEATURES], FEAT_EX
    jnz 1f
3:  xor edx, edx
    call bench_input_nonex
    mov rcx, HVCALL_LIST | BENCH_OK
    jmp 2f
1:  xor edx, edx
    call bench_input_ex
    mov rcx, rax
    shl rcx, HV_HDR_SHIFT
    mov rax, HVCALL_LIST_EX | BENCH_OK
    or rcx, rax
2:  mov [r15 + B_CONTROL], rcx
    mov edi, BENCH_GVAS
    mov edx, 0x200003
    mov r8d, 0x10000
    call bench_gvas
    mov rax, BENCH_OK
    mov [r15 + B_EXPECT], rax

    mov rdx, [rbp + CTL_TRAP_STUB]
    mov edi, FAIL_NO_TRAP_STUB
    mov esi, 1
    test rdx, rdx
    jz bench_fail
    mov [r15 + B_CALL_TARGET], rdx
    mov eax, MARKER_TRAP_START
    out PORT_MARKER, eax
    call bench_phase

    lea rax, [r14 + SH_HYPERCALL_PAGE]
    mov [r15 + B_CALL_TARGET], rax
    mov eax, MARKER_HYPERCALL_START
    out PORT_MARKER, eax
    call bench_phase
    mov eax, MARKER_HYPERCALL_END
    out PORT_MARKER, eax

    mov rdx, [r15 + B_ERRORS]
    mov edi, FAIL_BENCH_STATUS
    xor esi, esi
    test rdx, rdx
    jnz bench_fail
    # Running targets: done (the VMM stops them at marker 3).
    mov eax, [rbp + CTL_PARAM]
    test eax, eax
    jnz bench_exit

    # Self-flush: the same List call at this vCPU alone.
    mov rdi, [r15 + PV_SELF]
    xor edx, edx
    call bench_input_nonex
    mov edi, BENCH_GVAS
    mov edx, 0x200003
    mov r8d, 0x10000
    call bench_gvas
    mov rcx, HVCALL_LIST | BENCH_OK
    mov [r15 + B_CONTROL], rcx
    lea rax, [r14 + SH_HYPERCALL_PAGE]
    mov [r15 + B_CALL_TARGET], rax
    mov eax, MARKER_SELF_FLUSH_START
    out PORT_MARKER, eax
    call bench_phase
    mov rax, [r15 + B_ERRORS]
    mov [r15 + B_SELF_ERRORS], rax

    # Non-flush exits, without and then with the flush hooks.
    mov rdx, [rbp + CTL_TRAP_STUB]
    mov [r15 + B_CALL_TARGET], rdx
    mov eax, MARKER_HOOKS_OFF_START
    out PORT_MARKER, eax
    call bench_phase
    mov eax, MARKER_HOOKS_ON_START
    out PORT_MARKER, eax
    call bench_phase
    mov eax, MARKER_HOOKS_ON_END
    out PORT_MARKER, eax

    mov rdx, [r15 + B_SELF_ERRORS]
    mov edi, FAIL_BENCH_STATUS
    mov esi, 2
    test rdx, rdx
    jnz bench_fail
    test byte ptr [rbp + CTL_PARAM + 4], BENCH_HALT >> 32
    jz 7f
    # Wake the halted targets and wait until each ran its handler.
    SEND_IPI 0, ICR_FIXED_OTHERS | BENCH_WAKE_VECTOR, 1
    lea rax, [r13 - 1]
8:  cmp [r14 + B_WOKEN], rax
    jae 7f
    pause
    jmp 8b
7:  EXIT 0

# One timed phase: `iterations` identical calls to [B_CALL_TARGET] with the
# hypercall registers set up (RCX control, RDX input GPA, R8 0).
bench_phase:
    mov rax, [rbp + CTL_ITERATIONS]
    mov [r15 + B_LOOPS], rax
    mov qword ptr [r15 + B_ERRORS], 0
    test rax, rax
    jz 2f
1:  mov rcx, [r15 + B_CONTROL]
    lea rdx, [r15 + PV_INPUT]
    xor r8d, r8d
    call [r15 + B_CALL_TARGET]
    xor rax, [r15 + B_EXPECT]
    or [r15 + B_ERRORS], rax
    dec qword ptr [r15 + B_LOOPS]
    jnz 1b
2:  ret

    ROUTINES bench
WORKLOAD_END bench
