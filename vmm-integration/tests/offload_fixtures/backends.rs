//! MSHV feature masks, CPUID merge, KVM offload setup, runtime changes
//! and the probe (including the real one on this host).

use super::*;

pub(crate) fn mshv_facts(vendor: CpuVendor, assignable: Option<u64>) -> MshvFacts {
    MshvFacts {
        vendor,
        assignable_query: assignable.is_some(),
        assignable_features: assignable,
    }
}

#[cfg(feature = "mshv")]
#[test]
fn mshv_feature_mask_for_every_config() {
    use vmm_integration::mshv::features::{apply_to_mask, partition_flags, synthetic_features};
    let partial = !(1u64 << 24) & !(1u64 << 32);
    let hosts = [
        (CpuVendor::Intel, Some(u64::MAX)),
        (CpuVendor::Intel, Some(partial)),
        (CpuVendor::Intel, None),
        (CpuVendor::Amd, Some(u64::MAX)),
    ];
    let mut checked = 0;
    for (vendor, assignable) in hosts {
        let host = HostFacts::mshv(mshv_facts(vendor, assignable));
        for config in all_configs() {
            let Ok(d) = decide(&config, &host) else {
                assert!(
                    config.mode == FlushMode::Userspace || config.l2 == L2Mode::On,
                    "{config:?} {vendor:?} {assignable:?}"
                );
                continue;
            };
            let can = |bit: u32| assignable.is_some_and(|m| m & (1 << bit) != 0);
            let on = config.mode != FlushMode::Off;
            let l1 = on && config.l1;
            let l2 = on
                && config.l1
                && config.l2 != L2Mode::Off
                && vendor == CpuVendor::Intel
                && can(32);
            let mut want = 0u64;
            if l1 || l2 {
                want |= (1 << 7) | (1 << 8);
            }
            if l1 {
                want |= 1 << 25;
                if config.ex_masks && can(24) {
                    want |= 1 << 24;
                }
                if config.extended_ranges && can(15) {
                    want |= 1 << 15;
                }
            }
            if l2 {
                want |= 1 << 32;
            }
            assert_eq!(d.l2.available, l2, "{config:?} {vendor:?} {assignable:?}");
            assert_eq!(
                synthetic_features(&d.features),
                want,
                "{config:?} {vendor:?} {assignable:?}"
            );
            assert_eq!(partition_flags(&d.features) != 0, l2);
            // Other bits of a base mask survive, controlled bits follow the request.
            let base = (1 << 0) | (1 << 1) | (1 << 24) | (1 << 32);
            assert_eq!(apply_to_mask(base, &d.features), 0b11 | want);
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}

#[cfg(feature = "kvm")]
#[test]
fn merge_replaces_kvm_leaves_and_keeps_the_rest() {
    use kvm_bindings::{CpuId, kvm_cpuid_entry2};
    let e = |function, index, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        index,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    let (kb, kc, kd) = sig_regs(b"KVMKVMKVM\0\0\0");
    let mut table = CpuId::from_entries(&[
        e(0, 0, 0xd, 1, 2, 3),
        e(1, 0, 0x806f8, 0, 0, 0),
        e(7, 0, 0, 0xabc, 0, 0),
        e(7, 1, 0, 0xdef, 0, 0),
        e(0x4000_0000, 0, 0x4000_0001, kb, kc, kd),
        e(0x4000_0001, 0, 0x0100_7efb, 0, 0, 0),
        e(0x4000_0100, 0, 0x4000_0101, kb, kc, kd),
        e(0x8000_0001, 0, 0, 0, 4, 0),
    ])
    .unwrap();
    let fx = fixture("linux-6.16-intel-nested");
    let d = decide(
        &HypervFlushConfig::default(),
        &HostFacts::kvm(fx.facts.clone()),
    )
    .unwrap();
    let leaves = d.hyperv_leaves(
        fx.facts.supported_hv_cpuid.as_ref(),
        &EngineSupport::engine(2),
    );
    vmm_integration::cpuid::merge_hyperv_leaves(&mut table, &leaves).unwrap();
    let s = table.as_slice();
    assert_eq!(s.len(), 5 + leaves.len());
    assert_eq!(s.iter().find(|x| x.function == 1).unwrap().ecx, 1 << 31);
    assert!(
        s.iter()
            .any(|x| x.function == 7 && x.index == 1 && x.ebx == 0xdef)
    );
    assert!(s.iter().any(|x| x.function == 0x8000_0001 && x.ecx == 4));
    assert!(
        !s.iter().any(|x| x.function == 0x4000_0100),
        "KVM leaves not moved"
    );
    let base = s.iter().find(|x| x.function == 0x4000_0000).unwrap();
    assert_eq!(HvLeaf::from(base).signature(), *b"Microsoft Hv");
    let kvm_pv = s.iter().find(|x| x.function == 0x4000_0001).unwrap();
    assert_eq!(kvm_pv.eax, 0x3123_7648, "Hv#1 replaced KVM's PV features");

    // Nothing offered: the VMM's table is untouched.
    let before = table.clone();
    vmm_integration::cpuid::merge_hyperv_leaves(&mut table, &[]).unwrap();
    assert_eq!(table.as_slice(), before.as_slice());
}

#[test]
fn runtime_changes_are_honest() {
    use decision::runtime_change_effect;
    let old = HypervFlushConfig::default();
    let userspace = decide(
        &old,
        &HostFacts::kvm(fixture("linux-6.16-intel-no-hyperv").facts),
    )
    .unwrap();
    let offload = decide(
        &old,
        &HostFacts::kvm(fixture("linux-6.16-intel-nested").facts),
    )
    .unwrap();
    let xmm_off = HypervFlushConfig {
        xmm_input: false,
        ..old.clone()
    };
    let e = runtime_change_effect(&userspace, &old, &xmm_off);
    assert_eq!(
        (e.timing, e.changed.as_slice()),
        (ChangeTiming::Now, &["xmm_input"][..])
    );
    let e = runtime_change_effect(&offload, &old, &xmm_off);
    assert_eq!(e.timing, ChangeTiming::PendingReboot);
    assert!(e.reason.contains("pending until reboot"), "{}", e.reason);
    let vendor = HypervFlushConfig {
        vendor: VendorSignature::Kvm,
        ..old.clone()
    };
    assert_eq!(
        runtime_change_effect(&userspace, &old, &vendor).timing,
        ChangeTiming::PendingReboot
    );
    assert_eq!(
        runtime_change_effect(&userspace, &old, &old).timing,
        ChangeTiming::Unchanged
    );
}

#[test]
fn probe_report_json_shape() {
    let fx = fixture("linux-6.16-intel-no-hyperv");
    let report = probe::probe_report(&HypervFlushConfig::default(), HostFacts::kvm(fx.facts));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["backend"], "kvm");
    assert_eq!(json["in_kernel_hyperv"], false);
    assert_eq!(json["selected_mode"], "userspace");
    assert_eq!(json["l1"]["available"], true);
    assert_eq!(json["l1"]["path"], "userspace");
    assert_eq!(json["l2"]["available"], false);
    assert_eq!(json["l2"]["path"], "off");
    assert!(!json["l2"]["reasons"].as_array().unwrap().is_empty());
    let text = probe::render_probe_human(&report);
    assert!(text.contains("selected mode:    userspace"), "{text}");

    let none = probe::probe_report(&HypervFlushConfig::default(), HostFacts::none(Vec::new()));
    let json = serde_json::to_value(&none).unwrap();
    assert_eq!(json["backend"], "none");
    assert_eq!(json["selected_mode"], "off");
    assert!(
        json["refusal"]
            .as_str()
            .unwrap()
            .starts_with("No hypervisor")
    );
}

/// The real probe on this host. Our hosts have no in-kernel Hyper-V and no
/// /dev/mshv: L1 must go to userspace, L2 must be unavailable with a reason.
#[test]
fn real_probe_on_this_host() {
    if !hvflush_tests::have_kvm() {
        return;
    }
    let report = probe::probe_host(&HypervFlushConfig::default());
    assert_eq!(report.backend, Backend::Kvm, "{:?}", report.host.notes);
    println!("{}", probe::render_probe_human(&report));
    if report.in_kernel_hyperv {
        hvflush_tests::skip_because(
            "this host has in-kernel Hyper-V; the userspace expectation is for hosts without it",
        );
        assert_eq!(report.selected_mode, FlushPath::Offload);
        return;
    }
    assert_eq!(report.selected_mode, FlushPath::Userspace, "{report:?}");
    assert!(report.l1.available);
    assert_eq!(report.l1.path, FlushPath::Userspace);
    assert!(!report.l2.available);
    assert_eq!(report.l2.path, FlushPath::Off);
    assert!(
        report.l2.reasons[0].starts_with("L2 direct flush needs KVM's in-kernel Hyper-V"),
        "{:?}",
        report.l2.reasons
    );
    let kvm = report.host.kvm.as_ref().unwrap();
    assert!(kvm.userspace.user_space_msr && kvm.userspace.msr_filter);
    assert!(kvm.userspace.pv_tlb_flush && kvm.userspace.steal_time);
    assert!(report.refusal.is_none());
}

/// The offload setup from a fixture's decision, applied to a real vCPU of
/// this host: the merged CPUID is what the vCPU ends up with. (The
/// fixture's kernel is not this host's, so only the CPUID part is real.)
#[cfg(feature = "kvm")]
#[test]
fn offload_setup_sets_the_composed_cpuid_on_a_vcpu() {
    use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
    use vmm_integration::kvm::offload::KvmOffload;

    let fx = fixture("linux-5.10-amd-nested");
    let host = HostFacts::kvm(fx.facts.clone());
    let d = decide(&HypervFlushConfig::default(), &host).unwrap();
    let plan = KvmOffload::new(d.kvm_offload_features().unwrap(), &fx.facts).unwrap();
    assert!(!plan.evmcs() && !plan.enforce());
    assert_eq!(
        plan.leaves(),
        d.hyperv_leaves(
            fx.facts.supported_hv_cpuid.as_ref(),
            &EngineSupport::engine(1)
        )
        .as_slice()
    );

    let userspace = decide(
        &HypervFlushConfig::default(),
        &HostFacts::kvm(fixture("linux-6.16-intel-no-hyperv").facts),
    )
    .unwrap();
    assert_eq!(userspace.kvm_offload_features(), None);

    if !hvflush_tests::have_kvm() {
        return;
    }
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let vmm = vmm_integration::cpuid::VmmCpuid {
        kvm_hyperv: false,
        nested: false,
        max_vcpus: 1,
    };
    vmm_integration::cpuid::apply_hyperv_cpuid(
        &mut cpuid,
        &d,
        fx.facts.supported_hv_cpuid.as_ref(),
        &vmm,
    )
    .unwrap();
    let vm = kvm.create_vm().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    plan.setup_vcpu(&vcpu, &cpuid).unwrap();
    let got = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
    for leaf in plan.leaves() {
        let e = got
            .as_slice()
            .iter()
            .find(|e| e.function == leaf.function)
            .unwrap_or_else(|| panic!("leaf {:#x} set", leaf.function));
        assert_eq!(HvLeaf::from(e), *leaf);
    }
}

/// With L2 offered, the CPUID function refuses vCPUs that are not shown
/// VMX/SVM (from the VMM's vCPU configuration), and eVMCS is Intel's.
#[cfg(feature = "kvm")]
#[test]
fn l2_requires_nested_vcpus() {
    use kvm_bindings::CpuId;
    use vmm_integration::cpuid::{CpuidError, VmmCpuid, apply_hyperv_cpuid};
    use vmm_integration::kvm::offload::KvmOffload;

    for (name, intel) in [
        ("linux-6.16-intel-nested", true),
        ("linux-6.16-amd-nested", false),
    ] {
        let fx = fixture(name);
        let d = decide(
            &HypervFlushConfig::default(),
            &HostFacts::kvm(fx.facts.clone()),
        )
        .unwrap();
        assert!(d.l2.available, "{name}");
        let kernel = fx.facts.supported_hv_cpuid.as_ref();
        let vmm = |nested| VmmCpuid {
            kvm_hyperv: false,
            nested,
            max_vcpus: 4,
        };
        let mut table = CpuId::new(0).unwrap();
        let err = apply_hyperv_cpuid(&mut table, &d, kernel, &vmm(false)).unwrap_err();
        assert!(matches!(err, CpuidError::NestedHidden), "{name}");
        assert_eq!(
            err.to_string(),
            "L2 direct flush is offered but the vCPUs are not shown VMX/SVM (nested virtualization off): enable it or set l2=off"
        );
        apply_hyperv_cpuid(&mut table, &d, kernel, &vmm(true)).unwrap();
        let plan = KvmOffload::new(d.kvm_offload_features().unwrap(), &fx.facts).unwrap();
        assert_eq!(plan.evmcs(), intel, "{name}");
        assert!(plan.enforce());
    }
}
