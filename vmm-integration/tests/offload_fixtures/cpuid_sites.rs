//! `cpuid::apply_hyperv_cpuid`, the one CPUID function of every site:
//! coexistence with Cloud Hypervisor's `kvm_hyperv=on` leaves (a superset,
//! bit for bit, on every kernel fixture), the refusal in userspace mode,
//! the KVM and TSC leaves, MSI extended destination IDs, and the same
//! table however often and wherever it is applied.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};
use vmm_integration::cpuid::{
    CpuidError, KVM_FEATURE_MSI_EXT_DEST_ID, LEAF_VS_INTERFACE, LEAF_VS_PROPERTIES,
    VS_INTERFACE_SIGNATURE, VS_PROPERTIES_EXTENDED_IOAPIC_RTE, VmmCpuid, apply_hyperv_cpuid,
};

use super::*;
use vmm_integration::decision::Decision;

fn entry(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

fn sig(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

/// A VMM's common table without Hyper-V: basic leaves, KVM's PV leaves
/// (with `kvm_features` EAX) and Cloud Hypervisor's TSC leaf 0x40000010.
fn kvm_table(kvm_features: u32) -> Vec<kvm_cpuid_entry2> {
    let (b, c, d) = sig(b"KVMKVMKVM\0\0\0");
    vec![
        entry(0, 0x16, 0, 0, 0),
        entry(1, 0, 0, 0, 0),
        entry(0x4000_0000, 0x4000_0010, b, c, d),
        entry(0x4000_0001, kvm_features, 0, 0, 0),
        entry(0x4000_0010, 2_000_000, 1_000_000, 0, 0),
    ]
}

/// Cloud Hypervisor's `kvm_hyperv=on` leaves (ae44c2971,
/// arch/src/x86_64/mod.rs `generate_common_cpuid`): facts, as numbers.
fn ch_kvm_hyperv_table() -> Vec<kvm_cpuid_entry2> {
    let (b, c, d) = sig(b"Linux KVM Hv");
    let mut t = vec![
        entry(0, 0x16, 0, 0, 0),
        entry(1, 0, 0, 0, 0),
        entry(0x4000_0000, 0x4000_000a, b, c, d),
        entry(0x4000_0001, 0x3123_7648, 0, 0, 0),
        entry(0x4000_0002, 0x3839, 0xa_0000, 0, 0),
        // EAX bits 0-6, 9, 11; EDX bits 3, 4, 8.
        entry(
            0x4000_0003,
            0b1010_0111_1111,
            0,
            0,
            (1 << 3) | (1 << 4) | (1 << 8),
        ),
        // EAX bits 1, 2, 3, 5, 9, 10; EBX 0xfff.
        entry(0x4000_0004, 0b110_0010_1110, 0xfff, 0, 0),
    ];
    t.extend((0x4000_0005..=0x4000_000a).map(|f| entry(f, 0, 0, 0, 0)));
    t
}

fn table(entries: &[kvm_cpuid_entry2]) -> CpuId {
    CpuId::from_entries(entries).unwrap()
}

fn leaf(t: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
    t.as_slice()
        .iter()
        .find(|e| e.function == function)
        .copied()
}

fn vmm(kvm_hyperv: bool) -> VmmCpuid {
    VmmCpuid {
        kvm_hyperv,
        nested: true,
        max_vcpus: 8,
    }
}

fn decide_on(name: &str, config: &str) -> (Decision, Loaded) {
    let fx = fixture(name);
    let d = decide(
        &HypervFlushConfig::parse(config).unwrap(),
        &HostFacts::kvm(fx.facts.clone()),
    )
    .unwrap();
    (d, fx)
}

/// Offload with `kvm_hyperv=on`: every bit of CH's leaves stays; what is
/// added is flush bits the kernel reports. Printed per fixture.
#[test]
fn offload_keeps_every_kvm_hyperv_bit_and_adds_the_flush_bits() {
    for fx in load_all() {
        if fx.facts.supported_hv_cpuid.is_none() {
            continue;
        }
        let (d, _) = decide_on(&fx.name, "mode=offload");
        let kernel = fx.facts.supported_hv_cpuid.as_ref();
        let ch = table(&ch_kvm_hyperv_table());
        let mut t = ch.clone();
        apply_hyperv_cpuid(&mut t, &d, kernel, &vmm(true)).unwrap();
        for before in ch.as_slice().iter().filter(|e| e.function >= 0x4000_0002) {
            let after = leaf(&t, before.function).expect("leaf kept");
            for (reg, b, a) in [
                ("eax", before.eax, after.eax),
                ("ebx", before.ebx, after.ebx),
                ("ecx", before.ecx, after.ecx),
                ("edx", before.edx, after.edx),
            ] {
                if before.function == 0x4000_0002
                    || (before.function == 0x4000_0004 && reg == "ebx")
                {
                    continue; // version and spin count are values, not bits
                }
                assert_eq!(
                    b & !a,
                    0,
                    "{}: {:#x}.{reg} lost bits {:#x}",
                    fx.name,
                    before.function,
                    b & !a
                );
                if a != b {
                    println!(
                        "{}: {:#x}.{reg} {b:#010x} -> {a:#010x} (+{:#x})",
                        fx.name,
                        before.function,
                        a & !b
                    );
                }
                // Every added bit is one the kernel reports.
                let k = kernel.unwrap().leaf_or_zero(before.function);
                let kv = match reg {
                    "eax" => k.eax,
                    "ebx" => k.ebx,
                    "ecx" => k.ecx,
                    _ => k.edx,
                };
                assert_eq!(
                    a & !b & !kv,
                    0,
                    "{}: {:#x}.{reg} added unreported bits",
                    fx.name,
                    before.function
                );
            }
        }
        // The flush calls are recommended.
        let rec = leaf(&t, 0x4000_0004).unwrap();
        assert_ne!(rec.eax & (1 << 2), 0, "{}", fx.name);
        let base = leaf(&t, 0x4000_0000).unwrap();
        assert!(base.eax >= 0x4000_000a, "{}", fx.name);
    }
}

#[test]
fn kvm_hyperv_on_in_userspace_mode_is_refused_naming_the_fix() {
    let (d, _) = decide_on("linux-6.16-intel-no-hyperv", "mode=userspace");
    let mut t = table(&ch_kvm_hyperv_table());
    let before = t.clone();
    let e = apply_hyperv_cpuid(&mut t, &d, None, &vmm(true)).unwrap_err();
    assert!(matches!(e, CpuidError::KvmHypervNeedsKernel));
    assert!(e.to_string().ends_with("set kvm_hyperv=off"), "{e}");
    assert_eq!(t.as_slice(), before.as_slice(), "nothing half-applied");
}

/// KVM's PV leaves and the TSC leaf go; the extended destination ID
/// survives as Hyper-V's VS property, and only when KVM offered it.
#[test]
fn kvm_leaves_go_and_msi_ext_dest_id_is_kept_through_hyperv() {
    let (d, _) = decide_on("linux-6.16-intel-no-hyperv", "mode=userspace");
    for ext_dest in [true, false] {
        let kvm_features = 0x0100_7efb & !KVM_FEATURE_MSI_EXT_DEST_ID
            | if ext_dest {
                KVM_FEATURE_MSI_EXT_DEST_ID
            } else {
                0
            };
        let mut t = table(&kvm_table(kvm_features));
        apply_hyperv_cpuid(&mut t, &d, None, &vmm(false)).unwrap();
        let base = leaf(&t, 0x4000_0000).unwrap();
        assert_eq!(HvLeaf::from(&base).signature(), *b"Microsoft Hv");
        assert!(leaf(&t, 0x4000_0010).is_none(), "TSC leaf dropped");
        assert_eq!(leaf(&t, 0x4000_0001).unwrap().eax, 0x3123_7648);
        let vs = leaf(&t, LEAF_VS_INTERFACE).map(|e| e.eax);
        let props = leaf(&t, LEAF_VS_PROPERTIES).map(|e| e.eax);
        if ext_dest {
            assert_eq!(vs, Some(VS_INTERFACE_SIGNATURE));
            assert_eq!(props, Some(VS_PROPERTIES_EXTENDED_IOAPIC_RTE));
        } else {
            assert_eq!((vs, props), (None, None));
        }
        assert_ne!(leaf(&t, 1).unwrap().ecx & (1 << 31), 0, "hypervisor bit");
    }
}

/// The same inputs give the same table at every site, and applying it to
/// an already composed table changes nothing (restore compares tables).
#[test]
fn every_site_gets_the_same_table() {
    let cases = [
        ("linux-6.16-intel-no-hyperv", "mode=userspace", false),
        ("linux-6.16-intel-nested", "mode=offload", true),
        ("linux-5.10-amd-nested", "mode=offload", false),
    ];
    for (name, config, kvm_hyperv) in cases {
        let (d, fx) = decide_on(name, config);
        let kernel = fx.facts.supported_hv_cpuid.as_ref();
        let base = if kvm_hyperv {
            ch_kvm_hyperv_table()
        } else {
            kvm_table(0x0100_7efb)
        };
        let mut first = table(&base);
        apply_hyperv_cpuid(&mut first, &d, kernel, &vmm(kvm_hyperv)).unwrap();
        let mut second = table(&base);
        apply_hyperv_cpuid(&mut second, &d, kernel, &vmm(kvm_hyperv)).unwrap();
        assert_eq!(first.as_slice(), second.as_slice(), "{name}");
        let mut again = first.clone();
        apply_hyperv_cpuid(&mut again, &d, kernel, &vmm(kvm_hyperv)).unwrap();
        let sorted = |t: &CpuId| {
            let mut v: Vec<_> = t
                .as_slice()
                .iter()
                .map(|e| (e.function, e.index, e.eax, e.ebx, e.ecx, e.edx))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(&again), sorted(&first), "{name}: idempotent");
    }
}

#[test]
fn mode_off_leaves_the_vmm_table_alone() {
    let (d, _) = decide_on("linux-6.16-intel-no-hyperv", "mode=off");
    for base in [kvm_table(0x0100_7efb), ch_kvm_hyperv_table()] {
        let mut t = table(&base);
        apply_hyperv_cpuid(&mut t, &d, None, &vmm(true)).unwrap();
        assert_eq!(t.as_slice(), base.as_slice());
    }
}
