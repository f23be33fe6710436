//! The `hyperv_flush` configuration section: one type for the option
//! string (`--hyperv-flush mode=auto,l1=on,...`), the VM config JSON file and
//! the REST API.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::hypercall_port::{
    MAX_HYPERCALL_PORT, PortError, free_port_ranges, validate_hypercall_port,
};

/// Which path serves the flush hypercalls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushMode {
    /// Offload where the kernel/hypervisor can, otherwise serve in userspace.
    #[default]
    Auto,
    /// The kernel (KVM in-kernel Hyper-V) or hypervisor (MSHV) does the work.
    Offload,
    /// The VMM decodes the hypercalls and drives the flushes itself.
    Userspace,
    /// No flush enlightenment is offered to the guest.
    Off,
}

/// Whether L2 (Direct Virtual Flush) is wanted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum L2Mode {
    /// Offer it when every prerequisite holds.
    #[default]
    Auto,
    /// Require it; refuse to start (or refuse the update) when impossible.
    On,
    /// Never offer it.
    Off,
}

/// The hypervisor vendor signature shown at CPUID 0x40000000.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VendorSignature {
    /// "Microsoft Hv": Linux guests take the Hyper-V enlightened paths.
    #[default]
    Microsoft,
    /// "Linux KVM Hv": what KVM/QEMU show; Linux guests ignore it.
    Kvm,
}

/// Default I/O port of the hypercall page's trap (`out imm8, al`).
///
/// The stub uses the 8-bit immediate form so it clobbers no register but
/// RAX/flags; 0x99 is used by no standard PC device.
pub const DEFAULT_HYPERCALL_PORT: u16 = 0x99;

/// The `hyperv_flush` section of a VM configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HypervFlushConfig {
    /// Offload, userspace, automatic choice, or off.
    pub mode: FlushMode,
    /// Serve L1 flush hypercalls (HvFlushVirtualAddressSpace/List and their Ex forms).
    pub l1: bool,
    /// L2 Direct Virtual Flush.
    pub l2: L2Mode,
    /// Offer the Ex calls (sparse VP sets, VP index >= 64).
    pub ex_masks: bool,
    /// Offer XMM fast hypercall input.
    pub xmm_input: bool,
    /// Offer the extended GVA range format.
    pub extended_ranges: bool,
    /// Vendor signature at CPUID 0x40000000.
    pub vendor: VendorSignature,
    /// I/O port the hypercall page traps through (userspace mode).
    pub hypercall_port: u16,
}

impl Default for HypervFlushConfig {
    fn default() -> Self {
        Self {
            mode: FlushMode::Auto,
            l1: true,
            l2: L2Mode::Auto,
            ex_masks: true,
            xmm_input: true,
            extended_ranges: true,
            vendor: VendorSignature::Microsoft,
            hypercall_port: DEFAULT_HYPERCALL_PORT,
        }
    }
}

/// A value that has a fixed set of lowercase option-string spellings.
pub(crate) trait OptionValue: Sized + Copy + 'static {
    /// Every accepted spelling, in help order.
    const NAMES: &'static [&'static str];
    /// The values, in the same order as `NAMES`.
    const VALUES: &'static [Self];

    /// The option-string spelling of `self`.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        let i = Self::VALUES.iter().position(|v| *v == self).unwrap_or(0);
        Self::NAMES[i]
    }

    /// Parses an option-string spelling.
    fn from_name(s: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::VALUES[i])
    }
}

impl OptionValue for FlushMode {
    const NAMES: &'static [&'static str] = &["auto", "offload", "userspace", "off"];
    const VALUES: &'static [Self] = &[Self::Auto, Self::Offload, Self::Userspace, Self::Off];
}

impl OptionValue for L2Mode {
    const NAMES: &'static [&'static str] = &["auto", "on", "off"];
    const VALUES: &'static [Self] = &[Self::Auto, Self::On, Self::Off];
}

impl OptionValue for VendorSignature {
    const NAMES: &'static [&'static str] = &["microsoft", "kvm"];
    const VALUES: &'static [Self] = &[Self::Microsoft, Self::Kvm];
}

impl OptionValue for bool {
    const NAMES: &'static [&'static str] = &["on", "off"];
    const VALUES: &'static [Self] = &[true, false];
}

macro_rules! display_by_name {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}
display_by_name!(FlushMode, L2Mode, VendorSignature);

/// Errors of a configuration that parsed but is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `hypercall_port` is out of range or taken.
    #[error("Invalid value `{value:#x}` for `hypercall_port`")]
    InvalidPort {
        /// The port given.
        value: u16,
        /// Why it is unusable.
        #[source]
        source: PortError,
    },
}

impl HypervFlushConfig {
    /// Option-string syntax, for `--help`.
    pub const SYNTAX: &'static str = "Hyper-V TLB flush enlightenment \
        \"mode=auto|offload|userspace|off,l1=on|off,l2=auto|on|off,ex_masks=on|off,\
        xmm_input=on|off,extended_ranges=on|off,vendor=microsoft|kvm,hypercall_port=<port>\" \
        (defaults: mode=auto,l1=on,l2=auto,ex_masks=on,xmm_input=on,extended_ranges=on,\
        vendor=microsoft,hypercall_port=0x99)";

    /// Checks the values serde cannot check by type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_hypercall_port(self.hypercall_port).map_err(|source| ConfigError::InvalidPort {
            value: self.hypercall_port,
            source,
        })
    }

    /// The option string that parses back to `self` (every key given).
    pub fn to_option_string(&self) -> String {
        HypervFlushUpdate::from(self).to_option_string()
    }
}

impl fmt::Display for HypervFlushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_option_string())
    }
}

/// A partial update of [`HypervFlushConfig`]: the keys given replace the
/// current values, the others keep them. Used by `PUT /api/v1/vm.hyperv-flush`,
/// `hvflush-remote set` and the "command line overrides file" merge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HypervFlushUpdate {
    /// New `mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<FlushMode>,
    /// New `l1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l1: Option<bool>,
    /// New `l2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<L2Mode>,
    /// New `ex_masks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ex_masks: Option<bool>,
    /// New `xmm_input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xmm_input: Option<bool>,
    /// New `extended_ranges`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_ranges: Option<bool>,
    /// New `vendor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<VendorSignature>,
    /// New `hypercall_port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypercall_port: Option<u16>,
}

impl From<&HypervFlushConfig> for HypervFlushUpdate {
    fn from(c: &HypervFlushConfig) -> Self {
        Self {
            mode: Some(c.mode),
            l1: Some(c.l1),
            l2: Some(c.l2),
            ex_masks: Some(c.ex_masks),
            xmm_input: Some(c.xmm_input),
            extended_ranges: Some(c.extended_ranges),
            vendor: Some(c.vendor),
            hypercall_port: Some(c.hypercall_port),
        }
    }
}

impl HypervFlushUpdate {
    /// True when no key is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with the given keys replaced, validated.
    pub fn apply_to(&self, base: &HypervFlushConfig) -> Result<HypervFlushConfig, ConfigError> {
        let merged = HypervFlushConfig {
            mode: self.mode.unwrap_or(base.mode),
            l1: self.l1.unwrap_or(base.l1),
            l2: self.l2.unwrap_or(base.l2),
            ex_masks: self.ex_masks.unwrap_or(base.ex_masks),
            xmm_input: self.xmm_input.unwrap_or(base.xmm_input),
            extended_ranges: self.extended_ranges.unwrap_or(base.extended_ranges),
            vendor: self.vendor.unwrap_or(base.vendor),
            hypercall_port: self.hypercall_port.unwrap_or(base.hypercall_port),
        };
        merged.validate()?;
        Ok(merged)
    }

    /// Checks the given values that serde cannot check by type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.hypercall_port {
            Some(port) => {
                validate_hypercall_port(port).map_err(|source| ConfigError::InvalidPort {
                    value: port,
                    source,
                })
            }
            None => Ok(()),
        }
    }

    /// The keys of `new` that differ from `old`, as an update.
    pub fn diff(old: &HypervFlushConfig, new: &HypervFlushConfig) -> Self {
        fn changed<T: PartialEq + Copy>(a: T, b: T) -> Option<T> {
            (a != b).then_some(b)
        }
        Self {
            mode: changed(old.mode, new.mode),
            l1: changed(old.l1, new.l1),
            l2: changed(old.l2, new.l2),
            ex_masks: changed(old.ex_masks, new.ex_masks),
            xmm_input: changed(old.xmm_input, new.xmm_input),
            extended_ranges: changed(old.extended_ranges, new.extended_ranges),
            vendor: changed(old.vendor, new.vendor),
            hypercall_port: changed(old.hypercall_port, new.hypercall_port),
        }
    }

    /// The given keys as an option string, e.g. `l1=off,hypercall_port=0x99`.
    pub fn to_option_string(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut push = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                parts.push(format!("{key}={v}"));
            }
        };
        push("mode", self.mode.map(|v| v.name().to_owned()));
        push("l1", self.l1.map(|v| v.name().to_owned()));
        push("l2", self.l2.map(|v| v.name().to_owned()));
        push("ex_masks", self.ex_masks.map(|v| v.name().to_owned()));
        push("xmm_input", self.xmm_input.map(|v| v.name().to_owned()));
        push(
            "extended_ranges",
            self.extended_ranges.map(|v| v.name().to_owned()),
        );
        push("vendor", self.vendor.map(|v| v.name().to_owned()));
        push(
            "hypercall_port",
            self.hypercall_port.map(|v| format!("{v:#x}")),
        );
        parts.join(",")
    }
}
