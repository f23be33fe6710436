//! Offload composition and decision against `KVM_GET_SUPPORTED_HV_CPUID`
//! fixtures (tests/fixtures/*.json, each naming the kernel version and
//! source it was derived from), the MSHV feature masks, and the real probe
//! on this host.

use std::path::Path;

use hvflush_config::{FlushMode, HypervFlushConfig, L2Mode, VendorSignature};
use serde::Deserialize;
use vmm_integration::cpuid::{
    EngineSupport, FlushFeatures, HvLeaf, KernelHvCpuid, compose_offload, compose_userspace,
};
#[path = "offload_fixtures/backends.rs"]
mod backends;
#[cfg(feature = "kvm")]
#[path = "offload_fixtures/cpuid_sites.rs"]
mod cpuid_sites;
#[path = "offload_fixtures/refusals.rs"]
mod refusals;

use vmm_integration::decision::{self, ChangeTiming, FlushPath, Refusal, decide};
use vmm_integration::facts::{
    Backend, CpuVendor, HostFacts, KvmFacts, KvmHypervCaps, KvmUserspaceCaps, MshvFacts,
    NestedFacts,
};
use vmm_integration::probe;

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
    assert_eq!(out.len(), 13, "every fixture loaded");
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

/// The TLFS/KVM rules restated from docs/host-facts.md §3-4, independent of
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
    let offer = EngineSupport::engine(8);
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
        &EngineSupport::engine(4),
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
        &EngineSupport::engine(4),
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
    let got = d.hyperv_leaves(None, &EngineSupport::engine(4));
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
    let req = FlushFeatures {
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
    let off = EngineSupport {
        xmm_input: false,
        ex_masks: false,
        ..EngineSupport::engine(2)
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
