//! Probing the host: its capabilities (from the backends' probes) and what
//! `mode=auto` (or the given configuration) would do, as JSON and as text
//! (`hvflush-vmm probe`).

use std::fmt::Write as _;

use hvflush_config::HypervFlushConfig;
use serde::{Deserialize, Serialize};

use crate::decision::{FeatureDecision, FlushPath, decide, kvm_offload_gap};
use crate::facts::{Backend, HostFacts};

/// The probe's answer. JSON field names are part of the CLI contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// "kvm", "mshv" or "none".
    pub backend: Backend,
    /// The kernel or hypervisor can perform L1 flushes itself.
    pub in_kernel_hyperv: bool,
    /// "offload", "userspace" or "off".
    pub selected_mode: FlushPath,
    /// L1 flush hypercalls.
    pub l1: FeatureDecision,
    /// L2 direct virtual flush.
    pub l2: FeatureDecision,
    /// Why the configuration would be refused, if it would.
    pub refusal: Option<String>,
    /// The probed facts.
    pub host: HostFacts,
}

/// The report for `config` on a host described by `host` (pure).
pub fn probe_report(config: &HypervFlushConfig, host: HostFacts) -> ProbeReport {
    let in_kernel_hyperv = match host.backend {
        Backend::Kvm => host
            .kvm
            .as_ref()
            .is_some_and(|k| kvm_offload_gap(k).is_none()),
        Backend::Mshv => true,
        Backend::None => false,
    };
    match decide(config, &host) {
        Ok(d) => ProbeReport {
            backend: host.backend,
            in_kernel_hyperv,
            selected_mode: d.selected_mode,
            l1: d.l1,
            l2: d.l2,
            refusal: None,
            host,
        },
        Err(refusal) => {
            let off = || FeatureDecision {
                available: false,
                path: FlushPath::Off,
                reasons: vec![refusal.to_string()],
            };
            ProbeReport {
                backend: host.backend,
                in_kernel_hyperv,
                selected_mode: FlushPath::Off,
                l1: off(),
                l2: off(),
                refusal: Some(refusal.to_string()),
                host,
            }
        }
    }
}

/// Probes /dev/kvm (preferred) and /dev/mshv and reports what `config`
/// would get. Never fails: an unusable device is a note in the report.
pub fn probe_host(config: &HypervFlushConfig) -> ProbeReport {
    #[cfg_attr(not(any(feature = "kvm", feature = "mshv")), allow(unused_mut))]
    let mut notes = Vec::new();
    #[cfg(feature = "kvm")]
    match crate::kvm::probe::probe_kvm() {
        Ok(facts) => return probe_report(config, HostFacts::kvm(facts)),
        Err(e) => notes.push(hvflush_api::error_line(&e)),
    }
    #[cfg(feature = "mshv")]
    match crate::mshv::probe::probe_mshv() {
        Ok(facts) => {
            let mut host = HostFacts::mshv(facts);
            host.notes = notes;
            return probe_report(config, host);
        }
        Err(e) => notes.push(hvflush_api::error_line(&e)),
    }
    probe_report(config, HostFacts::none(notes))
}

fn path_name(p: FlushPath) -> &'static str {
    match p {
        FlushPath::Offload => "offload",
        FlushPath::Userspace => "userspace",
        FlushPath::Off => "off",
    }
}

/// The report as text for a terminal.
pub fn render_probe_human(report: &ProbeReport) -> String {
    let mut out = String::new();
    let backend = match report.backend {
        Backend::Kvm => "kvm",
        Backend::Mshv => "mshv",
        Backend::None => "none",
    };
    let _ = writeln!(out, "backend:          {backend}");
    let _ = writeln!(
        out,
        "in-kernel hyperv: {}",
        if report.in_kernel_hyperv { "yes" } else { "no" }
    );
    let _ = writeln!(out, "selected mode:    {}", path_name(report.selected_mode));
    if let Some(r) = &report.refusal {
        let _ = writeln!(out, "refused:          {r}");
    }
    for (name, f) in [("L1 flush", &report.l1), ("L2 direct flush", &report.l2)] {
        let state = if f.available {
            "available"
        } else {
            "unavailable"
        };
        let _ = writeln!(out, "{name}: {state} (path: {})", path_name(f.path));
        for reason in &f.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    if let Some(k) = &report.host.kvm {
        let h = &k.hyperv;
        let u = &k.userspace;
        let yn = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(out, "kvm: cpu vendor {:?}", k.vendor);
        let _ = writeln!(
            out,
            "  hyperv caps: HYPERV {} TLBFLUSH {} CPUID {} SYS_HYPERV_CPUID {} ENFORCE_CPUID {} ENLIGHTENED_VMCS {} NESTED_STATE {}",
            yn(h.hyperv),
            yn(h.tlbflush),
            yn(h.cpuid),
            yn(h.sys_cpuid),
            yn(h.enforce_cpuid),
            yn(h.enlightened_vmcs),
            yn(h.nested_state)
        );
        let _ = writeln!(
            out,
            "  nested: module parameter {}, offered in CPUID {}",
            k.nested.module_param.map_or("unknown", yn),
            yn(k.nested.cpuid_offers)
        );
        let _ = writeln!(
            out,
            "  userspace path: USER_SPACE_MSR {} MSR_FILTER {} SYNC_REGS {} IMMEDIATE_EXIT {} PV_TLB_FLUSH {} STEAL_TIME {}",
            yn(u.user_space_msr),
            yn(u.msr_filter),
            yn(u.sync_regs),
            yn(u.immediate_exit),
            yn(u.pv_tlb_flush),
            yn(u.steal_time)
        );
    }
    if let Some(m) = &report.host.mshv {
        let _ = writeln!(
            out,
            "mshv: cpu vendor {:?}, assignable features {}",
            m.vendor,
            m.assignable_features
                .map_or("not reported".to_string(), |v| format!("{v:#018x}"))
        );
    }
    for note in &report.host.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
