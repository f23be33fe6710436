//! Which path serves the flush hypercalls (`mode=auto|offload|userspace|off`),
//! decided per feature (L1, L2) from the host facts, with reasons an
//! operator can act on, and every refusal.
//!
//! The decision is a pure function of the configuration and [`HostFacts`],
//! so the whole table is tested with fixtures; `probe::probe_host` fills
//! the facts from /dev/kvm or /dev/mshv. Nothing here touches a device.

use hvflush_config::{ChangeScope, FlushMode, HypervFlushConfig, HypervFlushUpdate, L2Mode};
use hyperv_flush::decode::Offer;
use serde::{Deserialize, Serialize};

use crate::cpuid::{self, EngineSupport, FlushFeatures, HvLeaf, KernelHvCpuid};
use crate::facts::{Backend, CpuVendor, HostFacts, KvmFacts, MshvFacts, MshvSyntheticFeature};

/// The path a feature (or the VM) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPath {
    /// The kernel (KVM in-kernel Hyper-V) or the hypervisor (MSHV) flushes.
    Offload,
    /// The VMM's userspace engine flushes.
    Userspace,
    /// Not offered.
    Off,
}

/// The decision for one feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureDecision {
    /// Offered to the guest.
    pub available: bool,
    /// Which path serves it ([`FlushPath::Off`] when not available).
    pub path: FlushPath,
    /// Why, in words an operator acts on.
    pub reasons: Vec<String>,
}

impl FeatureDecision {
    fn off(reasons: Vec<String>) -> Self {
        Self {
            available: false,
            path: FlushPath::Off,
            reasons,
        }
    }
}

/// The decision for a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The backend the VM runs on.
    pub backend: Backend,
    /// The path of the VM as a whole.
    pub selected_mode: FlushPath,
    /// L1 flush hypercalls.
    pub l1: FeatureDecision,
    /// L2 direct virtual flush.
    pub l2: FeatureDecision,
    /// What the guest is offered (input of the CPUID / MSHV composition).
    pub features: FlushFeatures,
}

/// Why a configuration cannot run on this host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No hypervisor device could be opened.
    #[error(
        "No hypervisor: neither /dev/kvm nor /dev/mshv can be opened; load kvm_intel or kvm_amd and give this user access to /dev/kvm, or set mode=off"
    )]
    NoHypervisor,
    /// `mode=offload` on a KVM host without in-kernel Hyper-V flush.
    #[error("mode=offload refused: {0}; use mode=auto or mode=userspace")]
    OffloadUnavailable(&'static str),
    /// `mode=userspace` on a KVM host that lacks a prerequisite.
    #[error("mode=userspace refused: {0}; use mode=auto or mode=offload")]
    UserspaceUnavailable(&'static str),
    /// `mode=auto` on a KVM host where neither path works.
    #[error("No flush path on this host: offload: {offload}; userspace: {userspace}")]
    NoPath {
        /// What offload lacks.
        offload: &'static str,
        /// What userspace lacks.
        userspace: &'static str,
    },
    /// `mode=userspace` on MSHV.
    #[error(
        "mode=userspace is not possible on MSHV: the hypervisor performs the flushes and a root VMM has no way to flush a child partition's TLB; use mode=offload or mode=auto"
    )]
    MshvUserspace,
    /// MSHV does not let the VMM assign a feature L1 needs.
    #[error(
        "MSHV offload refused: the hypervisor does not let this VMM assign the synthetic feature {0}; update the hypervisor or set l1=off"
    )]
    MshvNotAssignable(&'static str),
    /// `l2=on` but L2 direct flush is unavailable.
    #[error("l2=on refused: {0}; set l2=auto to run without it")]
    L2Unavailable(String),
    /// `l2=on` together with `mode=off`.
    #[error("l2=on conflicts with mode=off; set l2=auto or l2=off, or choose another mode")]
    L2WithModeOff,
}

/// Decides the path of each feature for `config` on `host`.
///
/// An `Err` is a configuration the VMM must refuse to start with; the
/// message says what to change.
pub fn decide(config: &HypervFlushConfig, host: &HostFacts) -> Result<Decision, Refusal> {
    if config.mode == FlushMode::Off {
        if config.l2 == L2Mode::On {
            return Err(Refusal::L2WithModeOff);
        }
        let why = || vec!["mode=off: no flush enlightenment is offered".to_string()];
        return Ok(Decision {
            backend: host.backend,
            selected_mode: FlushPath::Off,
            l1: FeatureDecision::off(why()),
            l2: FeatureDecision::off(why()),
            features: no_features(config),
        });
    }
    match (host.backend, &host.kvm, &host.mshv) {
        (Backend::Kvm, Some(kvm), _) => decide_kvm(config, kvm),
        (Backend::Mshv, _, Some(mshv)) => decide_mshv(config, mshv),
        _ => Err(Refusal::NoHypervisor),
    }
}

fn no_features(config: &HypervFlushConfig) -> FlushFeatures {
    FlushFeatures {
        vendor: config.vendor,
        l1: false,
        ex_masks: false,
        xmm_input: false,
        extended_ranges: false,
        l2: false,
        evmcs: false,
    }
}

/// What KVM's in-kernel Hyper-V lacks for L1 offload, if anything.
pub fn kvm_offload_gap(kvm: &KvmFacts) -> Option<&'static str> {
    if !kvm.hyperv.hyperv {
        return Some(
            "KVM has no in-kernel Hyper-V (KVM_CAP_HYPERV is 0): use a kernel built with CONFIG_KVM_HYPERV",
        );
    }
    if !kvm.hyperv.tlbflush {
        return Some(
            "KVM lacks in-kernel Hyper-V TLB flush (KVM_CAP_HYPERV_TLBFLUSH is 0): needs Linux 4.18 or newer",
        );
    }
    let Some(report) = &kvm.supported_hv_cpuid else {
        return Some(
            "KVM cannot report its Hyper-V CPUID (KVM_CAP_HYPERV_CPUID is 0): needs Linux 5.0 or newer",
        );
    };
    if !report.remote_flush() || !report.hypercall_and_vp_index() {
        return Some(
            "KVM_GET_SUPPORTED_HV_CPUID reports no remote TLB flush (0x40000004 EAX bit 2) or no hypercall/VP index MSRs (0x40000003 EAX bits 5, 6)",
        );
    }
    None
}

/// What the KVM userspace path lacks, if anything.
pub fn kvm_userspace_gap(kvm: &KvmFacts) -> Option<&'static str> {
    let u = &kvm.userspace;
    if !u.user_space_msr {
        return Some(
            "KVM cannot forward MSR accesses to userspace (KVM_CAP_X86_USER_SPACE_MSR is 0): needs Linux 5.10 or newer",
        );
    }
    if !u.msr_filter {
        return Some(
            "KVM has no MSR filter (KVM_CAP_X86_MSR_FILTER is 0): needs Linux 5.10 or newer",
        );
    }
    if !u.immediate_exit {
        return Some(
            "KVM cannot kick a vCPU out of KVM_RUN (KVM_CAP_IMMEDIATE_EXIT is 0): needs Linux 4.11 or newer",
        );
    }
    if !u.steal_time {
        return Some(
            "KVM does not support steal time (supported CPUID 0x40000001 EAX bit 5), which carries the flush request",
        );
    }
    if !u.pv_tlb_flush {
        return Some(
            "KVM does not support PV TLB flush (supported CPUID 0x40000001 EAX bit 9): needs Linux 4.16 or newer",
        );
    }
    None
}

fn l1_off_reason() -> String {
    "l1=off: L1 flush hypercalls are not offered".to_string()
}

fn decide_kvm(config: &HypervFlushConfig, kvm: &KvmFacts) -> Result<Decision, Refusal> {
    let offload_gap = kvm_offload_gap(kvm);
    let userspace_gap = kvm_userspace_gap(kvm);
    let mut l1_reasons = Vec::new();
    let path = match (config.mode, offload_gap, userspace_gap) {
        (FlushMode::Offload, Some(gap), _) => return Err(Refusal::OffloadUnavailable(gap)),
        (FlushMode::Userspace, _, Some(gap)) => return Err(Refusal::UserspaceUnavailable(gap)),
        (FlushMode::Userspace, _, None) => {
            l1_reasons.push("mode=userspace: the VMM serves the flush hypercalls".to_string());
            FlushPath::Userspace
        }
        (FlushMode::Auto | FlushMode::Offload, None, _) => {
            l1_reasons.push("KVM's in-kernel Hyper-V performs the flushes".to_string());
            FlushPath::Offload
        }
        (FlushMode::Auto, Some(gap), None) => {
            l1_reasons.push(format!("served in userspace: {gap}"));
            FlushPath::Userspace
        }
        (FlushMode::Auto, Some(offload), Some(userspace)) => {
            return Err(Refusal::NoPath { offload, userspace });
        }
        // `decide` answers mode=off before asking the backend.
        (FlushMode::Off, ..) => FlushPath::Off,
    };
    let report = kvm.supported_hv_cpuid.clone().unwrap_or_default();
    let mut features = no_features(config);
    let l1 = if config.l1 {
        features.l1 = true;
        let (ex, xmm, ext) = match path {
            FlushPath::Offload => (
                report.ex_masks(),
                report.xmm_input(),
                report.extended_ranges(),
            ),
            _ => (true, true, true),
        };
        features.ex_masks =
            sub_feature(config.ex_masks, ex, "ex_masks", EX_MISSING, &mut l1_reasons);
        features.xmm_input = sub_feature(
            config.xmm_input,
            xmm,
            "xmm_input",
            XMM_MISSING,
            &mut l1_reasons,
        );
        features.extended_ranges = sub_feature(
            config.extended_ranges,
            ext,
            "extended_ranges",
            EXT_MISSING,
            &mut l1_reasons,
        );
        FeatureDecision {
            available: true,
            path,
            reasons: l1_reasons,
        }
    } else {
        FeatureDecision::off(vec![l1_off_reason()])
    };

    let l2 = match config.l2 {
        L2Mode::Off => FeatureDecision::off(vec!["l2=off: L2 direct flush is not offered".into()]),
        L2Mode::Auto | L2Mode::On => {
            let gaps = kvm_l2_gaps(config, kvm, path, offload_gap, &report);
            if gaps.is_empty() {
                features.l2 = true;
                features.evmcs = kvm.vendor == CpuVendor::Intel;
                let how = match kvm.vendor {
                    CpuVendor::Intel => "with enlightened VMCS on every vCPU",
                    _ => "through nested SVM enlightenments",
                };
                FeatureDecision {
                    available: true,
                    path: FlushPath::Offload,
                    reasons: vec![format!("KVM handles L2 flush hypercalls itself, {how}")],
                }
            } else if config.l2 == L2Mode::On {
                return Err(Refusal::L2Unavailable(gaps.join("; ")));
            } else {
                FeatureDecision::off(gaps)
            }
        }
    };
    finish(Backend::Kvm, path, l1, l2, features)
}

fn finish(
    backend: Backend,
    path: FlushPath,
    l1: FeatureDecision,
    l2: FeatureDecision,
    features: FlushFeatures,
) -> Result<Decision, Refusal> {
    let selected_mode = if l1.available || l2.available {
        path
    } else {
        FlushPath::Off
    };
    Ok(Decision {
        backend,
        selected_mode,
        l1,
        l2,
        features,
    })
}

const EX_MISSING: &str = "the kernel does not report Ex processor masks (0x40000004 EAX bit 11); guests use them only with VP index 64 or higher";
const XMM_MISSING: &str =
    "the kernel does not report XMM fast input (0x40000003 EDX bit 4): needs Linux 5.14 or newer";
const EXT_MISSING: &str = "the kernel does not report extended GVA ranges (0x40000003 EDX bit 14): needs Linux 6.2 or newer";

fn sub_feature(
    wanted: bool,
    supported: bool,
    name: &str,
    missing: &str,
    reasons: &mut Vec<String>,
) -> bool {
    if !wanted {
        reasons.push(format!("{name}=off: not offered"));
        false
    } else if !supported {
        reasons.push(format!("{name} not offered: {missing}"));
        false
    } else {
        true
    }
}

fn kvm_l2_gaps(
    config: &HypervFlushConfig,
    kvm: &KvmFacts,
    path: FlushPath,
    offload_gap: Option<&'static str>,
    report: &KernelHvCpuid,
) -> Vec<String> {
    let mut gaps = Vec::new();
    if path != FlushPath::Offload {
        gaps.push(
            "L2 direct flush needs KVM's in-kernel Hyper-V (offload): L2 translations and the nested VP identities live in KVM's nested state, out of the VMM's reach"
                .to_string(),
        );
        if let Some(gap) = offload_gap {
            gaps.push(gap.to_string());
        }
        return gaps;
    }
    if !config.l1 {
        gaps.push(
            "L2 direct flush needs l1=on: KVM checks L1's remote flush recommendation for L2 flush hypercalls too"
                .to_string(),
        );
    }
    if !report.direct_flush() {
        gaps.push(
            "L2 direct flush needs Linux 6.2 or newer: KVM_GET_SUPPORTED_HV_CPUID does not report 0x4000000A EAX bit 17"
                .to_string(),
        );
    }
    if !report.apic_access() {
        gaps.push(
            "L2 direct flush needs the VP assist page: KVM does not report 0x40000003 EAX bit 4"
                .to_string(),
        );
    }
    match kvm.vendor.kvm_module() {
        None => gaps.push("L2 direct flush needs an Intel (VMX) or AMD (SVM) host CPU".to_string()),
        Some(module) if !kvm.nested.available() => gaps.push(format!(
            "L2 direct flush needs nested virtualization: load {module} with nested=1"
        )),
        Some(_) => {}
    }
    if kvm.vendor == CpuVendor::Intel {
        if !kvm.hyperv.enlightened_vmcs {
            gaps.push(
                "L2 direct flush on Intel needs enlightened VMCS: KVM_CAP_HYPERV_ENLIGHTENED_VMCS is 0 (kernel without CONFIG_KVM_HYPERV)"
                    .to_string(),
            );
        } else if report.evmcs_version() == 0 {
            gaps.push(
                "L2 direct flush on Intel needs enlightened VMCS: KVM reports no eVMCS version (0x4000000A EAX bits 15:0); load kvm_intel with nested=1"
                    .to_string(),
            );
        }
    }
    gaps
}

fn decide_mshv(config: &HypervFlushConfig, mshv: &MshvFacts) -> Result<Decision, Refusal> {
    if config.mode == FlushMode::Userspace {
        return Err(Refusal::MshvUserspace);
    }
    use MshvSyntheticFeature as F;
    // Without the assignable-features query only what mshv-ioctls assigns by
    // default (hypercall regs, VP index, TB flush hypercalls) is known to work.
    let assignable = |f: F| match mshv.assignable_features {
        Some(mask) => f.is_in(mask),
        None => matches!(
            f,
            F::AccessHypercallRegs | F::AccessVpIndex | F::TbFlushHypercalls
        ),
    };
    let unverifiable = |f: F| {
        format!(
            "{} cannot be verified: this hypervisor does not report assignable synthetic features",
            f.name()
        )
    };
    let mut features = no_features(config);
    let path = FlushPath::Offload;
    let l1 = if config.l1 {
        for f in [
            F::AccessHypercallRegs,
            F::AccessVpIndex,
            F::TbFlushHypercalls,
        ] {
            if !assignable(f) {
                return Err(Refusal::MshvNotAssignable(f.name()));
            }
        }
        let mut reasons = vec!["the Microsoft hypervisor performs the flushes".to_string()];
        features.l1 = true;
        for (wanted, f, name, slot) in [
            (
                config.ex_masks,
                F::ExtendedProcessorMasks,
                "ex_masks",
                &mut features.ex_masks,
            ),
            (
                config.extended_ranges,
                F::ExtendedGvaRanges,
                "extended_ranges",
                &mut features.extended_ranges,
            ),
        ] {
            let why = if mshv.assignable_features.is_none() {
                unverifiable(f)
            } else {
                format!("the hypervisor does not let this VMM assign {}", f.name())
            };
            *slot = sub_feature(wanted, assignable(f), name, &why, &mut reasons);
        }
        // XMM fast input is the hypervisor's own CPUID bit; nothing to assign.
        features.xmm_input = config.xmm_input;
        if config.xmm_input {
            reasons.push("xmm_input: offered as the hypervisor reports it".to_string());
        }
        FeatureDecision {
            available: true,
            path,
            reasons,
        }
    } else {
        FeatureDecision::off(vec![l1_off_reason()])
    };
    let l2 = match config.l2 {
        L2Mode::Off => FeatureDecision::off(vec!["l2=off: L2 direct flush is not offered".into()]),
        L2Mode::Auto | L2Mode::On => {
            let mut gaps = Vec::new();
            if !config.l1 {
                gaps.push("L2 direct flush needs l1=on".to_string());
            }
            if mshv.vendor != CpuVendor::Intel {
                gaps.push(
                    "L2 direct flush on MSHV is offered through enlightened VMCS, which needs an Intel host"
                        .to_string(),
                );
            } else if mshv.assignable_features.is_none() {
                gaps.push(format!(
                    "L2 direct flush: {}",
                    unverifiable(F::EnlightenedVmcs)
                ));
            } else if !assignable(F::EnlightenedVmcs) {
                gaps.push(
                    "L2 direct flush needs the synthetic feature enlightened_vmcs, which the hypervisor does not let this VMM assign"
                        .to_string(),
                );
            }
            if gaps.is_empty() {
                features.l2 = true;
                features.evmcs = true;
                FeatureDecision {
                    available: true,
                    path,
                    reasons: vec![
                        "the hypervisor handles L2 flushes (enlightened VMCS, nested partition)"
                            .to_string(),
                    ],
                }
            } else if config.l2 == L2Mode::On {
                return Err(Refusal::L2Unavailable(gaps.join("; ")));
            } else {
                FeatureDecision::off(gaps)
            }
        }
    };
    finish(Backend::Mshv, path, l1, l2, features)
}

impl Decision {
    /// The guest's Hyper-V leaves for this decision: from the kernel's
    /// report in offload mode, from `engine` in userspace mode, none when off.
    ///
    /// Offload on MSHV has no CPUID to compose (the hypervisor derives it
    /// from the partition's synthetic features) and returns none.
    pub fn hyperv_leaves(
        &self,
        kernel: Option<&KernelHvCpuid>,
        engine: &EngineSupport,
    ) -> Vec<HvLeaf> {
        match (self.selected_mode, self.backend) {
            (FlushPath::Offload, Backend::Kvm) => match kernel {
                Some(k) => cpuid::compose_offload(&self.features, k),
                None => Vec::new(),
            },
            (FlushPath::Userspace, _) => cpuid::compose_userspace(&self.features, engine),
            _ => Vec::new(),
        }
    }

    /// What the userspace engine serves at boot: the calls the guest's
    /// CPUID shows (`Partition`'s initial offer).
    pub fn engine_offer(&self) -> Offer {
        Offer {
            remote_flush: self.features.l1,
            ex_masks: self.features.ex_masks,
            xmm_input: self.features.xmm_input,
        }
    }

    /// The features to hand `kvm::offload::KvmOffload::new`, when this
    /// decision selected KVM offload.
    pub fn kvm_offload_features(&self) -> Option<&FlushFeatures> {
        (self.backend == Backend::Kvm && self.selected_mode == FlushPath::Offload)
            .then_some(&self.features)
    }
}

/// The keys that take effect at the next boot only, as words:
/// "mode, l2, vendor and hypercall_port".
fn reboot_keys() -> String {
    let names: Vec<&str> = hvflush_config::ConfigKey::ALL
        .iter()
        .filter(|k| k.scope() == ChangeScope::Reboot)
        .map(|k| k.name())
        .collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// When a configuration change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTiming {
    /// Nothing changed.
    Unchanged,
    /// Applies to the next hypercall (userspace path).
    Now,
    /// Pending until the vCPUs are recreated (reboot): CPUID is fixed once a
    /// vCPU has run, and offload is configured at vCPU creation.
    PendingReboot,
}

/// How a runtime configuration change is honoured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeEffect {
    /// When it applies.
    pub timing: ChangeTiming,
    /// The settings that changed.
    pub changed: Vec<&'static str>,
    /// Why, for the operator.
    pub reason: String,
}

/// Says whether changing `old` to `new` applies now or is pending until
/// reboot, for a VM running with `decision`.
pub fn runtime_change_effect(
    decision: &Decision,
    old: &HypervFlushConfig,
    new: &HypervFlushConfig,
) -> ChangeEffect {
    let diff = HypervFlushUpdate::diff(old, new);
    let changed: Vec<&'static str> = diff.entries().map(|(key, _)| key.name()).collect();
    let structural = diff
        .entries()
        .any(|(key, _)| key.scope() == ChangeScope::Reboot);
    if changed.is_empty() {
        return ChangeEffect {
            timing: ChangeTiming::Unchanged,
            changed,
            reason: "no setting changed".to_string(),
        };
    }
    let (timing, reason) = match decision.selected_mode {
        FlushPath::Userspace if !structural => (
            ChangeTiming::Now,
            "userspace path: applies to the next flush hypercall".to_string(),
        ),
        FlushPath::Userspace => (
            ChangeTiming::PendingReboot,
            format!(
                "{} shape the guest's CPUID and hypercall page: pending until the vCPUs are recreated (reboot)",
                reboot_keys()
            ),
        ),
        FlushPath::Offload => (
            ChangeTiming::PendingReboot,
            "offload path: the kernel or hypervisor was configured at vCPU creation and CPUID is fixed once a vCPU has run; pending until reboot".to_string(),
        ),
        FlushPath::Off => (
            ChangeTiming::PendingReboot,
            "flush enlightenments are off for this boot: the guest saw no Hyper-V CPUID; pending until reboot".to_string(),
        ),
    };
    ChangeEffect {
        timing,
        changed,
        reason,
    }
}
