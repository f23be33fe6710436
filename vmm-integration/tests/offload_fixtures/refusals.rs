//! Every refusal message and the reasons that name their fix.

use super::*;
use crate::backends::mshv_facts;

fn l2_reasons(name: &str) -> Vec<String> {
    let fx = fixture(name);
    decide(&HypervFlushConfig::default(), &HostFacts::kvm(fx.facts))
        .unwrap()
        .l2
        .reasons
}

#[test]
fn l2_reasons_name_the_fix() {
    assert_eq!(
        l2_reasons("linux-5.10-intel-nested"),
        [
            "L2 direct flush needs Linux 6.2 or newer: KVM_GET_SUPPORTED_HV_CPUID does not report 0x4000000A EAX bit 17"
        ]
    );
    assert_eq!(
        l2_reasons("linux-5.10-amd-nested"),
        [
            "L2 direct flush needs Linux 6.2 or newer: KVM_GET_SUPPORTED_HV_CPUID does not report 0x4000000A EAX bit 17"
        ]
    );
    assert_eq!(
        l2_reasons("linux-6.16-intel-no-nested"),
        [
            "L2 direct flush needs nested virtualization: load kvm_intel with nested=1",
            "L2 direct flush on Intel needs enlightened VMCS: KVM reports no eVMCS version (0x4000000A EAX bits 15:0); load kvm_intel with nested=1",
        ]
    );
    assert_eq!(
        l2_reasons("linux-6.16-amd-no-nested"),
        ["L2 direct flush needs nested virtualization: load kvm_amd with nested=1"]
    );
    assert_eq!(
        l2_reasons("linux-6.16-intel-no-hyperv"),
        [
            "L2 direct flush needs KVM's in-kernel Hyper-V (offload): L2 translations and the nested VP identities live in KVM's nested state, out of the VMM's reach",
            "KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0): use a kernel built with CONFIG_KVM_HYPERV",
        ]
    );
    assert_eq!(
        l2_reasons("linux-6.16-intel-nested"),
        ["KVM handles L2 flush hypercalls itself, with enlightened VMCS on every vCPU"]
    );
    assert_eq!(
        l2_reasons("linux-6.16-amd-nested"),
        ["KVM handles L2 flush hypercalls itself, through nested SVM enlightenments"]
    );
    let fx = fixture("linux-6.16-intel-nested");
    let config = HypervFlushConfig {
        l1: false,
        ..HypervFlushConfig::default()
    };
    let d = decide(&config, &HostFacts::kvm(fx.facts)).unwrap();
    assert_eq!(
        d.l2.reasons,
        [
            "L2 direct flush needs l1=on: KVM checks L1's remote flush recommendation for L2 flush hypercalls too"
        ]
    );
    assert_eq!(d.selected_mode, FlushPath::Off);
}

#[test]
fn l1_sub_feature_reasons() {
    let fx = fixture("linux-5.10-intel-nested");
    let d = decide(&HypervFlushConfig::default(), &HostFacts::kvm(fx.facts)).unwrap();
    assert_eq!(
        d.l1.reasons,
        [
            "KVM's in-kernel Hyper-V performs the flushes",
            "xmm_input not offered: the kernel does not report XMM fast input (0x40000003 EDX bit 4): needs Linux 5.14 or newer",
            "extended_ranges not offered: the kernel does not report extended GVA ranges (0x40000003 EDX bit 14): needs Linux 6.2 or newer",
        ]
    );
    let fx = fixture("linux-6.16-intel-no-hyperv");
    let config = HypervFlushConfig {
        ex_masks: false,
        ..HypervFlushConfig::default()
    };
    let d = decide(&config, &HostFacts::kvm(fx.facts)).unwrap();
    assert_eq!(
        d.l1.reasons,
        [
            "served in userspace: KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0): use a kernel built with CONFIG_KVM_HYPERV",
            "ex_masks=off: not offered",
        ]
    );
}

fn no_hyperv_with(userspace: KvmUserspaceCaps) -> HostFacts {
    let mut facts = fixture("linux-6.16-intel-no-hyperv").facts;
    facts.userspace = userspace;
    HostFacts::kvm(facts)
}

fn refusal(config: &HypervFlushConfig, host: &HostFacts) -> String {
    decide(config, host).unwrap_err().to_string()
}

#[test]
fn every_refusal_message() {
    let mode = |mode| HypervFlushConfig {
        mode,
        ..HypervFlushConfig::default()
    };
    assert_eq!(
        refusal(&mode(FlushMode::Auto), &HostFacts::none(Vec::new())),
        "No hypervisor: neither /dev/kvm nor /dev/mshv can be opened; load kvm_intel or kvm_amd and give this user access to /dev/kvm, or set mode=off"
    );
    let no_hv = HostFacts::kvm(fixture("linux-6.16-intel-no-hyperv").facts);
    assert_eq!(
        refusal(&mode(FlushMode::Offload), &no_hv),
        "mode=offload refused: KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0): use a kernel built with CONFIG_KVM_HYPERV; use mode=auto or mode=userspace"
    );
    let mut facts = fixture("linux-6.16-intel-nested").facts;
    facts.hyperv.tlbflush = false;
    assert_eq!(
        refusal(&mode(FlushMode::Offload), &HostFacts::kvm(facts.clone())),
        "mode=offload refused: KVM lacks in-kernel Hyper-V TLB flush (KVM_CAP_HYPERV_TLBFLUSH is 0): needs Linux 4.18 or newer; use mode=auto or mode=userspace"
    );
    facts.hyperv.tlbflush = true;
    facts.supported_hv_cpuid = None;
    assert_eq!(
        refusal(&mode(FlushMode::Offload), &HostFacts::kvm(facts.clone())),
        "mode=offload refused: KVM cannot report its Hyper-V CPUID (KVM_CAP_HYPERV_CPUID is 0): needs Linux 5.0 or newer; use mode=auto or mode=userspace"
    );
    facts.supported_hv_cpuid = Some(KernelHvCpuid::new(Vec::new()));
    assert_eq!(
        refusal(&mode(FlushMode::Offload), &HostFacts::kvm(facts)),
        "mode=offload refused: KVM_GET_SUPPORTED_HV_CPUID reports no remote TLB flush (0x40000004 EAX bit 2) or no hypercall/VP index MSRs (0x40000003 EAX bits 5, 6); use mode=auto or mode=userspace"
    );

    let all = all_userspace_caps();
    let cases = [
        (
            KvmUserspaceCaps {
                user_space_msr: false,
                ..all
            },
            "KVM cannot forward MSR accesses to userspace (KVM_CAP_X86_USER_SPACE_MSR is 0): needs Linux 5.10 or newer",
        ),
        (
            KvmUserspaceCaps {
                msr_filter: false,
                ..all
            },
            "KVM has no MSR filter (KVM_CAP_X86_MSR_FILTER is 0): needs Linux 5.10 or newer",
        ),
        (
            KvmUserspaceCaps {
                immediate_exit: false,
                ..all
            },
            "KVM cannot kick a vCPU out of KVM_RUN (KVM_CAP_IMMEDIATE_EXIT is 0): needs Linux 4.11 or newer",
        ),
        (
            KvmUserspaceCaps {
                steal_time: false,
                ..all
            },
            "KVM does not support steal time (supported CPUID 0x40000001 EAX bit 5), which carries the flush request",
        ),
        (
            KvmUserspaceCaps {
                pv_tlb_flush: false,
                ..all
            },
            "KVM does not support PV TLB flush (supported CPUID 0x40000001 EAX bit 9): needs Linux 4.16 or newer",
        ),
    ];
    for (caps, gap) in cases {
        let host = no_hyperv_with(caps);
        assert_eq!(
            refusal(&mode(FlushMode::Userspace), &host),
            format!("mode=userspace refused: {gap}; use mode=auto or mode=offload")
        );
        assert_eq!(
            refusal(&mode(FlushMode::Auto), &host),
            format!(
                "No flush path on this host: offload: KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0): use a kernel built with CONFIG_KVM_HYPERV; userspace: {gap}"
            )
        );
    }
    // SYNC_REGS only makes the userspace path cheaper; it is not required.
    let host = no_hyperv_with(KvmUserspaceCaps {
        sync_regs: false,
        ..all
    });
    assert!(decide(&mode(FlushMode::Userspace), &host).is_ok());

    let l2_on = |mode| HypervFlushConfig {
        mode,
        l2: L2Mode::On,
        ..HypervFlushConfig::default()
    };
    assert_eq!(
        refusal(&l2_on(FlushMode::Off), &no_hv),
        "l2=on conflicts with mode=off; set l2=auto or l2=off, or choose another mode"
    );
    let amd = HostFacts::kvm(fixture("linux-6.16-amd-no-nested").facts);
    assert_eq!(
        refusal(&l2_on(FlushMode::Auto), &amd),
        "l2=on refused: L2 direct flush needs nested virtualization: load kvm_amd with nested=1; set l2=auto to run without it"
    );
    let intel = HostFacts::kvm(fixture("linux-6.16-intel-nested").facts);
    assert_eq!(
        refusal(&l2_on(FlushMode::Userspace), &intel),
        "l2=on refused: L2 direct flush needs KVM's in-kernel Hyper-V (offload): L2 translations and the nested VP identities live in KVM's nested state, out of the VMM's reach; set l2=auto to run without it"
    );

    let mshv = HostFacts::mshv(mshv_facts(CpuVendor::Intel, Some(u64::MAX)));
    assert_eq!(
        refusal(&mode(FlushMode::Userspace), &mshv),
        "mode=userspace is not possible on MSHV: the hypervisor performs the flushes and a root VMM has no way to flush a child partition's TLB; use mode=offload or mode=auto"
    );
    let no_tb = HostFacts::mshv(mshv_facts(CpuVendor::Intel, Some(!(1u64 << 25))));
    assert_eq!(
        refusal(&mode(FlushMode::Auto), &no_tb),
        "MSHV offload refused: the hypervisor does not let this VMM assign the synthetic feature tb_flush_hypercalls; update the hypervisor or set l1=off"
    );
    let amd_mshv = HostFacts::mshv(mshv_facts(CpuVendor::Amd, Some(u64::MAX)));
    assert_eq!(
        refusal(&l2_on(FlushMode::Offload), &amd_mshv),
        "l2=on refused: L2 direct flush on MSHV is offered through enlightened VMCS, which needs an Intel host; set l2=auto to run without it"
    );
}
