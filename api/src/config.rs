//! The `hyperv_flush` configuration section: one type for the option
//! string (`--hyperv-flush mode=auto,l1=on,...`), the VM config JSON file and
//! the REST API.

use serde::{Deserialize, Serialize};

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
    /// Serve L1 flush hypercalls (HvFlushVirtualAddressSpace/List[Ex]).
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
