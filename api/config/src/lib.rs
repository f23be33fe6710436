//! The `hyperv_flush` configuration section: one type for the option
//! string (`--hyperv-flush mode=auto,l1=on,...`), the VM config JSON section
//! and the REST API, with its validation. Depends on serde and thiserror
//! only, so a VMM's config crate can embed it.
#![deny(missing_docs)]

pub mod hypercall_port;
#[macro_use]
mod keys;
pub mod object;
pub mod option;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use keys::ChangeScope;
pub use option::{ApiSocketConfig, Endpoint, EventMonitorConfig, OptionError};

pub use hypercall_port::{
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

config_keys! {
    /// Offload, userspace, automatic choice, or off.
    mode: FlushMode = FlushMode::Auto, Reboot,
        "who serves the flush hypercalls: the kernel/hypervisor (`offload`), the VMM (`userspace`), whichever is possible (`auto`, offload first), or nobody (`off`: no enlightenment offered)";
    /// Serve L1 flush hypercalls (HvFlushVirtualAddressSpace/List and their Ex forms).
    l1: bool = true, Runtime,
        "serve HvFlushVirtualAddressSpace/List[Ex] from the L1 guest";
    /// L2 Direct Virtual Flush.
    l2: L2Mode = L2Mode::Auto, Reboot,
        "L2 Direct Virtual Flush; `on` fails when the host cannot do it, `auto` offers it when every prerequisite holds";
    /// Offer the Ex calls (sparse VP sets, VP index >= 64).
    ex_masks: bool = true, Runtime,
        "offer the Ex calls (sparse VP sets, VP index 64 and up)";
    /// Offer XMM fast hypercall input.
    xmm_input: bool = true, Runtime,
        "offer XMM fast hypercall input";
    /// Offer the extended GVA range format.
    extended_ranges: bool = true, Runtime,
        "offer the extended GVA range format";
    /// Vendor signature at CPUID 0x40000000.
    vendor: VendorSignature = VendorSignature::Microsoft, Reboot,
        "CPUID 0x40000000 signature; Linux guests take the Hyper-V paths only with \"Microsoft Hv\"";
    /// I/O port the hypercall page traps through (userspace mode).
    hypercall_port: u16 = DEFAULT_HYPERCALL_PORT, Reboot,
        "port of the hypercall page's trap (userspace mode)";
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

/// The most vCPUs the flush enlightenments can address: a Hyper-V VP set
/// has 64 banks of 64 VP indices (TLFS 6.0 §7.6.2, `HV_VP_SET`), and the
/// non-Ex calls reach only the first 64.
pub const MAX_VP_INDICES: u32 = 4096;

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
    /// More vCPUs than VP indices.
    #[error(
        "{vcpus} vCPUs with Hyper-V flush enlightenments: Hyper-V VP indices address at most {MAX_VP_INDICES} vCPUs; lower the vCPU count or set mode=off"
    )]
    TooManyVcpus {
        /// The VM's (maximum) vCPU count.
        vcpus: u32,
    },
}

impl HypervFlushConfig {
    /// Option-string syntax, for `--help`: every key with its values and
    /// its default.
    pub fn syntax() -> String {
        let keys: Vec<String> = ConfigKey::ALL
            .iter()
            .map(|k| format!("{}={}", k.name(), k.values_syntax()))
            .collect();
        format!(
            "Hyper-V TLB flush enlightenment \"{}\" (defaults: {})",
            keys.join(","),
            Self::default().to_option_string()
        )
    }

    /// Checks the values serde cannot check by type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_hypercall_port(self.hypercall_port).map_err(|source| ConfigError::InvalidPort {
            value: self.hypercall_port,
            source,
        })
    }

    /// The enlightenments off (`mode=off`, every other key at its default):
    /// the default of a VMM that offers them only when asked, so that a VM
    /// configured without the section keeps its own CPUID (Cloud
    /// Hypervisor: `#[serde(default = "HypervFlushConfig::disabled")]`).
    pub fn disabled() -> Self {
        Self {
            mode: FlushMode::Off,
            ..Self::default()
        }
    }

    /// Checks the configuration against the VM's maximum vCPU count
    /// (boot and hotplug): more than [`MAX_VP_INDICES`] is refused unless
    /// the enlightenments are off. A VMM calls it where it validates its VM
    /// configuration.
    pub fn validate_vcpus(&self, max_vcpus: u32) -> Result<(), ConfigError> {
        if self.mode != FlushMode::Off && max_vcpus > MAX_VP_INDICES {
            return Err(ConfigError::TooManyVcpus { vcpus: max_vcpus });
        }
        Ok(())
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

impl HypervFlushUpdate {
    /// True when no key is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with the given keys replaced, validated.
    pub fn apply_to(&self, base: &HypervFlushConfig) -> Result<HypervFlushConfig, ConfigError> {
        let merged = self.merged(base);
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

    /// The given keys as an option string, e.g. `l1=off,hypercall_port=0x99`.
    pub fn to_option_string(&self) -> String {
        self.entries()
            .map(|(key, value)| format!("{}={value}", key.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}
