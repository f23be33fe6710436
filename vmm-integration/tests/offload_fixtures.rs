//! Offload composition and decision against `KVM_GET_SUPPORTED_HV_CPUID`
//! fixtures (tests/fixtures/*.json, each naming the kernel version and
//! source it was derived from), the MSHV feature masks, and the real probe
//! on this host.

use std::path::Path;

use hvflush_api::config::{FlushMode, HypervFlushConfig, L2Mode, VendorSignature};
use serde::Deserialize;
use vmm_integration::cpuid::{
    FlushRequest, HvLeaf, KernelHvCpuid, UserspaceOffer, compose_offload, compose_userspace,
};
use vmm_integration::decision::{
    self, Backend, ChangeTiming, CpuVendor, FlushPath, HostFacts, KvmFacts, KvmHypervCaps,
    KvmUserspaceCaps, MshvFacts, NestedFacts, Refusal, decide,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HexLeaf {
    function: String,
    eax: String,
    ebx: String,
    ecx: String,
    edx: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    kernel: String,
    source: String,
    query: String,
    vendor: String,
    nested: bool,
    note: String,
    caps: KvmHypervCaps,
    leaves: Option<Vec<HexLeaf>>,
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex register")
}

struct Loaded {
    name: String,
    fixture: Fixture,
    facts: KvmFacts,
}

fn load_all() -> Vec<Loaded> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let fixture: Fixture =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            fixture.kernel.starts_with("Linux "),
            "{path:?} names its kernel"
        );
        assert!(
            fixture.source.contains("hyperv.c"),
            "{path:?} names its source"
        );
        assert!(!fixture.query.is_empty() && !fixture.note.is_empty());
        let vendor = match fixture.vendor.as_str() {
            "intel" => CpuVendor::Intel,
            "amd" => CpuVendor::Amd,
            other => panic!("vendor {other}"),
        };
        let report = fixture.leaves.as_ref().map(|ls| {
            KernelHvCpuid::new(
                ls.iter()
                    .map(|l| HvLeaf {
                        function: hex(&l.function),
                        eax: hex(&l.eax),
                        ebx: hex(&l.ebx),
                        ecx: hex(&l.ecx),
                        edx: hex(&l.edx),
                    })
                    .collect(),
            )
        });
        let facts = KvmFacts {
            vendor,
            hyperv: fixture.caps,
            supported_hv_cpuid: report,
            nested: NestedFacts {
                module_param: Some(fixture.nested),
                cpuid_offers: fixture.nested,
            },
            userspace: all_userspace_caps(),
        };
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.push(Loaded {
            name,
            fixture,
            facts,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(out.len(), 9, "every fixture loaded");
    out
}

fn all_userspace_caps() -> KvmUserspaceCaps {
    KvmUserspaceCaps {
        user_space_msr: true,
        msr_filter: true,
        sync_regs: true,
        immediate_exit: true,
        pv_tlb_flush: true,
        steal_time: true,
    }
}

/// Every configuration the flush bits depend on.
fn all_configs() -> Vec<HypervFlushConfig> {
    let mut v = Vec::new();
    for mode in [
        FlushMode::Auto,
        FlushMode::Offload,
        FlushMode::Userspace,
        FlushMode::Off,
    ] {
        for l1 in [true, false] {
            for l2 in [L2Mode::Auto, L2Mode::On, L2Mode::Off] {
                for bits in 0..8u8 {
                    for vendor in [VendorSignature::Microsoft, VendorSignature::Kvm] {
                        v.push(HypervFlushConfig {
                            mode,
                            l1,
                            l2,
                            ex_masks: bits & 1 != 0,
                            xmm_input: bits & 2 != 0,
                            extended_ranges: bits & 4 != 0,
                            vendor,
                            ..HypervFlushConfig::default()
                        });
                    }
                }
            }
        }
    }
    v
}

fn reg(leaves: &[HvLeaf], f: u32) -> HvLeaf {
    leaves
        .iter()
        .find(|l| l.function == f)
        .copied()
        .unwrap_or(HvLeaf::zero(f))
}

fn sig_regs(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

/// The TLFS/KVM rules restated from FINDINGS §3-4, independent of
/// `compose`: what the guest must see for `config` once the decision says
/// which features are available.
fn expected_offload(
    config: &HypervFlushConfig,
    l1: bool,
    l2: bool,
    intel: bool,
    k: &[HvLeaf],
) -> Vec<HvLeaf> {
    if !l1 && !l2 {
        return Vec::new();
    }
    let k3 = reg(k, 0x4000_0003);
    let k4 = reg(k, 0x4000_0004);
    let ka = reg(k, 0x4000_000a);
    let mut f_eax = 0x60 & k3.eax;
    if l2 {
        f_eax |= 0x10 & k3.eax;
    }
    let mut f_edx = 0;
    let mut r_eax = 0;
    if l1 {
        if config.xmm_input {
            f_edx |= 0x10 & k3.edx;
        }
        if config.extended_ranges {
            f_edx |= 0x4000 & k3.edx;
        }
        r_eax |= 0x4 & k4.eax;
        if config.ex_masks {
            r_eax |= 0x800 & k4.eax;
        }
    }
    let mut n_eax = 0;
    if l2 {
        n_eax |= 0x2_0000 & ka.eax;
        if intel {
            r_eax |= 0x4000 & k4.eax;
            n_eax |= 0xffff & ka.eax;
        }
    }
    let max = if n_eax != 0 { 0x4000_000a } else { 0x4000_0005 };
    let name: &[u8; 12] = match config.vendor {
        VendorSignature::Microsoft => b"Microsoft Hv",
        VendorSignature::Kvm => b"Linux KVM Hv",
    };
    let (b, c, d) = sig_regs(name);
    (0x4000_0000..=max)
        .map(|f| {
            let z = HvLeaf::zero(f);
            match f {
                0x4000_0000 => HvLeaf {
                    eax: max,
                    ebx: b,
                    ecx: c,
                    edx: d,
                    ..z
                },
                0x4000_0001 => HvLeaf {
                    eax: 0x3123_7648,
                    ..z
                },
                0x4000_0002 => HvLeaf {
                    function: f,
                    ..reg(k, f)
                },
                0x4000_0003 => HvLeaf {
                    eax: f_eax,
                    edx: f_edx,
                    ..z
                },
                0x4000_0004 => HvLeaf {
                    eax: r_eax,
                    ebx: k4.ebx,
                    ..z
                },
                0x4000_0005 => HvLeaf {
                    eax: reg(k, f).eax,
                    ebx: reg(k, f).ebx,
                    ..z
                },
                0x4000_000a => HvLeaf { eax: n_eax, ..z },
                _ => z,
            }
        })
        .collect()
}

fn kernel_l2_ok(name: &str) -> bool {
    name == "linux-6.16-intel-nested" || name == "linux-6.16-amd-nested"
}

#[test]
fn composed_cpuid_bit_for_bit_for_every_config_and_kernel() {
    let offer = UserspaceOffer::engine(8);
    let mut checked = 0;
    for fx in load_all() {
        let host = HostFacts::kvm(fx.facts.clone());
        for config in all_configs() {
            let Ok(d) = decide(&config, &host) else {
                continue;
            };
            let report = fx.facts.supported_hv_cpuid.as_ref();
            let got = d.hyperv_leaves(report, &offer);
            let want = match d.selected_mode {
                FlushPath::Off => Vec::new(),
                FlushPath::Offload => expected_offload(
                    &config,
                    d.l1.available,
                    d.l2.available,
                    fx.facts.vendor == CpuVendor::Intel,
                    report.unwrap().leaves(),
                ),
                FlushPath::Userspace => {
                    assert!(!d.l2.available, "{}: userspace never offers L2", fx.name);
                    let mut v = expected_offload(
                        &config,
                        d.l1.available,
                        false,
                        false,
                        &userspace_reference_leaves(8),
                    );
                    // Userspace reports its own version and never-notify spin retries.
                    for l in &mut v {
                        match l.function {
                            0x4000_0002 => l.ebx = 0x000a_0000,
                            0x4000_0004 => l.ebx = u32::MAX,
                            _ => {}
                        }
                    }
                    v
                }
            };
            assert_eq!(got, want, "{} {config:?}", fx.name);
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked} configurations checked");
}

/// What the userspace engine implements, as a "kernel report" for the oracle.
fn userspace_reference_leaves(max_vcpus: u32) -> Vec<HvLeaf> {
    vec![
        HvLeaf {
            function: 0x4000_0003,
            eax: 0x60,
            edx: 0x4010,
            ..HvLeaf::zero(0)
        },
        HvLeaf {
            function: 0x4000_0004,
            eax: 0x804,
            ..HvLeaf::zero(0)
        },
        HvLeaf {
            function: 0x4000_0005,
            eax: max_vcpus,
            ebx: 64,
            ..HvLeaf::zero(0)
        },
    ]
}

fn fixture(name: &str) -> Loaded {
    load_all().into_iter().find(|f| f.name == name).unwrap()
}

#[test]
fn golden_values_for_default_config() {
    let config = HypervFlushConfig::default();
    let fx = fixture("linux-6.16-intel-nested");
    let d = decide(&config, &HostFacts::kvm(fx.facts.clone())).unwrap();
    let got = d.hyperv_leaves(
        fx.facts.supported_hv_cpuid.as_ref(),
        &UserspaceOffer::engine(4),
    );
    let v = |f| reg(&got, f);
    assert_eq!(got.len(), 11);
    assert_eq!(v(0x4000_0000).eax, 0x4000_000a);
    assert_eq!(v(0x4000_0000).signature(), *b"Microsoft Hv");
    assert_eq!(v(0x4000_0001).eax, 0x3123_7648);
    assert_eq!((v(0x4000_0003).eax, v(0x4000_0003).edx), (0x70, 0x4010));
    assert_eq!((v(0x4000_0004).eax, v(0x4000_0004).ebx), (0x4804, 0xfff));
    assert_eq!((v(0x4000_0005).eax, v(0x4000_0005).ebx), (1024, 64));
    assert_eq!(v(0x4000_000a).eax, 0x2_0101);

    // 5.10: no XMM input, no extended ranges, no direct flush.
    let fx = fixture("linux-5.10-intel-nested");
    let d = decide(&config, &HostFacts::kvm(fx.facts.clone())).unwrap();
    let got = d.hyperv_leaves(
        fx.facts.supported_hv_cpuid.as_ref(),
        &UserspaceOffer::engine(4),
    );
    assert_eq!(got.len(), 6);
    assert_eq!(reg(&got, 0x4000_0000).eax, 0x4000_0005);
    assert_eq!(reg(&got, 0x4000_0003).eax, 0x60);
    assert_eq!(reg(&got, 0x4000_0003).edx, 0);
    assert_eq!(reg(&got, 0x4000_0004).eax, 0x804);

    // Userspace on a kernel without in-kernel Hyper-V.
    let fx = fixture("linux-6.16-intel-no-hyperv");
    let d = decide(&config, &HostFacts::kvm(fx.facts)).unwrap();
    assert_eq!(d.selected_mode, FlushPath::Userspace);
    let got = d.hyperv_leaves(None, &UserspaceOffer::engine(4));
    assert_eq!(got.len(), 6);
    assert_eq!(reg(&got, 0x4000_0003).eax, 0x60);
    assert_eq!(reg(&got, 0x4000_0003).edx, 0x4010);
    assert_eq!(reg(&got, 0x4000_0004).eax, 0x804);
    assert_eq!(reg(&got, 0x4000_0004).ebx, u32::MAX);
    assert_eq!(
        (reg(&got, 0x4000_0005).eax, reg(&got, 0x4000_0005).ebx),
        (4, 64)
    );
}

#[test]
fn compose_never_offers_unreported_bits() {
    let req = FlushRequest {
        vendor: VendorSignature::Kvm,
        l1: true,
        ex_masks: true,
        xmm_input: true,
        extended_ranges: true,
        l2: true,
        evmcs: true,
    };
    let empty = KernelHvCpuid::new(Vec::new());
    for l in compose_offload(&req, &empty) {
        match l.function {
            0x4000_0000 | 0x4000_0001 => {}
            _ => assert_eq!((l.eax, l.ebx, l.ecx, l.edx), (0, 0, 0, 0), "{l:?}"),
        }
    }
    let off = UserspaceOffer {
        xmm_input: false,
        ex_masks: false,
        ..UserspaceOffer::engine(2)
    };
    let got = compose_userspace(&req, &off);
    assert_eq!(reg(&got, 0x4000_0003).edx, 0x4000);
    assert_eq!(reg(&got, 0x4000_0004).eax, 0x4);
    assert!(
        got.iter().all(|l| l.function <= 0x4000_0005),
        "no nested leaf"
    );
}

#[test]
fn auto_decision_table() {
    for fx in load_all() {
        let offload_ok = fx.fixture.caps.hyperv;
        let host = HostFacts::kvm(fx.facts.clone());
        for mode in [
            FlushMode::Auto,
            FlushMode::Offload,
            FlushMode::Userspace,
            FlushMode::Off,
        ] {
            for l1 in [true, false] {
                for l2 in [L2Mode::Auto, L2Mode::On, L2Mode::Off] {
                    let config = HypervFlushConfig {
                        mode,
                        l1,
                        l2,
                        ..HypervFlushConfig::default()
                    };
                    let got = decide(&config, &host);
                    let ctx = format!("{} {mode:?} l1={l1} l2={l2:?}", fx.name);
                    let path = match mode {
                        FlushMode::Off => {
                            if l2 == L2Mode::On {
                                assert_eq!(got, Err(Refusal::L2WithModeOff), "{ctx}");
                            } else {
                                let d = got.unwrap();
                                assert_eq!(d.selected_mode, FlushPath::Off, "{ctx}");
                                assert!(!d.l1.available && !d.l2.available, "{ctx}");
                            }
                            continue;
                        }
                        FlushMode::Offload if !offload_ok => {
                            assert!(matches!(got, Err(Refusal::OffloadUnavailable(_))), "{ctx}");
                            continue;
                        }
                        FlushMode::Userspace => FlushPath::Userspace,
                        FlushMode::Auto if !offload_ok => FlushPath::Userspace,
                        _ => FlushPath::Offload,
                    };
                    let l2_ok = path == FlushPath::Offload
                        && l1
                        && l2 != L2Mode::Off
                        && kernel_l2_ok(&fx.name);
                    if l2 == L2Mode::On && !l2_ok {
                        assert!(matches!(got, Err(Refusal::L2Unavailable(_))), "{ctx}");
                        continue;
                    }
                    let d = got.unwrap();
                    assert_eq!(d.backend, Backend::Kvm);
                    assert_eq!(d.l1.available, l1, "{ctx}");
                    assert_eq!(d.l2.available, l2_ok, "{ctx}");
                    let want_mode = if l1 || l2_ok { path } else { FlushPath::Off };
                    assert_eq!(d.selected_mode, want_mode, "{ctx}");
                    if l1 {
                        assert_eq!(d.l1.path, path, "{ctx}");
                    }
                    assert!(
                        !d.l1.reasons.is_empty() && !d.l2.reasons.is_empty(),
                        "{ctx}"
                    );
                }
            }
        }
    }
}

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

fn mshv_facts(vendor: CpuVendor, assignable: Option<u64>) -> MshvFacts {
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
                synthetic_features(&d.request),
                want,
                "{config:?} {vendor:?} {assignable:?}"
            );
            assert_eq!(partition_flags(&d.request) != 0, l2);
            // Other bits of a base mask survive, controlled bits follow the request.
            let base = (1 << 0) | (1 << 1) | (1 << 24) | (1 << 32);
            assert_eq!(apply_to_mask(base, &d.request), 0b11 | want);
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
        &UserspaceOffer::engine(2),
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
    let report = decision::probe_report(&HypervFlushConfig::default(), HostFacts::kvm(fx.facts));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["backend"], "kvm");
    assert_eq!(json["in_kernel_hyperv"], false);
    assert_eq!(json["selected_mode"], "userspace");
    assert_eq!(json["l1"]["available"], true);
    assert_eq!(json["l1"]["path"], "userspace");
    assert_eq!(json["l2"]["available"], false);
    assert_eq!(json["l2"]["path"], "off");
    assert!(!json["l2"]["reasons"].as_array().unwrap().is_empty());
    let text = decision::render_probe_human(&report);
    assert!(text.contains("selected mode:    userspace"), "{text}");

    let none = decision::probe_report(&HypervFlushConfig::default(), HostFacts::none(Vec::new()));
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
    let report = decision::probe_host(&HypervFlushConfig::default());
    if report.backend != Backend::Kvm {
        eprintln!("skipped: no usable /dev/kvm ({:?})", report.host.notes);
        return;
    }
    println!("{}", decision::render_probe_human(&report));
    if report.in_kernel_hyperv {
        eprintln!("skipped: this host has in-kernel Hyper-V; the expectation is for our CI hosts");
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
    use vmm_integration::kvm::offload::{KvmOffload, OffloadError};

    let fx = fixture("linux-5.10-amd-nested");
    let host = HostFacts::kvm(fx.facts.clone());
    let d = decide(&HypervFlushConfig::default(), &host).unwrap();
    let plan = KvmOffload::new(&d, &fx.facts).unwrap();
    assert!(!plan.evmcs() && !plan.enforce());
    assert_eq!(
        plan.leaves(),
        d.hyperv_leaves(
            fx.facts.supported_hv_cpuid.as_ref(),
            &UserspaceOffer::engine(1)
        )
        .as_slice()
    );

    let userspace = decide(
        &HypervFlushConfig::default(),
        &HostFacts::kvm(fixture("linux-6.16-intel-no-hyperv").facts),
    )
    .unwrap();
    assert!(matches!(
        KvmOffload::new(&userspace, &fx.facts),
        Err(OffloadError::NotOffload)
    ));

    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        eprintln!("skipped: /dev/kvm cannot be opened");
        return;
    };
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    plan.merge_into(&mut cpuid).unwrap();
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

/// With L2 offered, merging refuses a VMM table that hides VMX/SVM.
#[cfg(feature = "kvm")]
#[test]
fn offload_merge_requires_nested_bit_for_l2() {
    use kvm_bindings::{CpuId, kvm_cpuid_entry2};
    use vmm_integration::kvm::offload::{KvmOffload, OffloadError};

    for (name, function, bit, label) in [
        ("linux-6.16-intel-nested", 1u32, 1u32 << 5, "VMX"),
        ("linux-6.16-amd-nested", 0x8000_0001, 1 << 2, "SVM"),
    ] {
        let fx = fixture(name);
        let d = decide(
            &HypervFlushConfig::default(),
            &HostFacts::kvm(fx.facts.clone()),
        )
        .unwrap();
        assert!(d.l2.available, "{name}");
        let plan = KvmOffload::new(&d, &fx.facts).unwrap();
        let entry = |ecx| kvm_cpuid_entry2 {
            function,
            ecx,
            ..Default::default()
        };
        let mut hidden = CpuId::from_entries(&[entry(0)]).unwrap();
        let err = plan.merge_into(&mut hidden).unwrap_err();
        assert!(
            matches!(err, OffloadError::NestedHidden(l) if l == label),
            "{name}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "L2 direct flush is offered but the VMM's CPUID does not show {label} to the guest"
            )
        );
        let mut shown = CpuId::from_entries(&[entry(bit)]).unwrap();
        plan.merge_into(&mut shown).unwrap();
        assert_eq!(plan.evmcs(), label == "VMX", "{name}");
        assert!(plan.enforce());
    }
}
