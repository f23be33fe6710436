//! The component's state of a VM, for snapshot, restore and live
//! migration: versioned serde data a VMM stores next to its own.
//!
//! [`FlushState::capture`] runs with every vCPU paused.
//! [`FlushState::restore`] runs on the new VM before its vCPUs first run:
//! it checks everything first (version, host, vCPU count, the hypercall
//! page in the restored RAM), then applies it, so a refused state changes
//! nothing. Pending flush requests are not carried over: every vCPU
//! flushes everything at its first entry instead (over-flushing is
//! allowed). The flush records are registered again by `setup_vcpu`, as
//! for any new vCPU.

use hvflush_config::HypervFlushConfig;
use hyperv_flush::abi::msr;
use hyperv_flush::decode::Offer;
use hyperv_flush::engine::{CountersSnapshot, EngineError, Partition};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::cpuid::FlushFeatures;
use crate::decision::{self, Decision, FlushPath, Refusal};
use crate::facts::HostFacts;
use crate::kvm::userspace::{HypervMsrs, hypercall_stub};

/// The state format this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// The partition-wide Hyper-V MSRs the userspace path emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsrState {
    /// HV_X64_MSR_GUEST_OS_ID.
    pub guest_os_id: u64,
    /// HV_X64_MSR_HYPERCALL: page GPA and enable bit.
    pub hypercall: u64,
}

/// The calls the engine serves (runtime `l1` changes included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferState {
    /// The flush calls at all.
    pub remote_flush: bool,
    /// The Ex calls.
    pub ex_masks: bool,
    /// XMM fast input.
    pub xmm_input: bool,
}

/// Everything the component needs to go on serving a restored VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushState {
    /// [`STATE_VERSION`] of the writer.
    pub version: u32,
    /// The configuration the VM booted with (the decision's input).
    pub config: HypervFlushConfig,
    /// The decision: the path the guest's CPUID was built for.
    pub decision: Decision,
    /// The emulated MSRs (userspace path; offload keeps them in KVM's
    /// vCPU state, which the VMM saves with its `KVM_GET_MSRS`).
    pub msrs: Option<MsrState>,
    /// Each vCPU's VP index.
    pub vp_indices: Vec<u32>,
    /// The engine's L1 offer.
    pub offer: OfferState,
    /// L2 direct flush offered by the engine.
    pub l2_offered: bool,
    /// The engine's counters.
    pub counters: CountersSnapshot,
}

/// Why a state is refused; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON of this shape: truncated or corrupted.
    #[error("Hyper-V flush state is truncated or corrupted")]
    Corrupt(#[source] serde_json::Error),
    /// Written by an incompatible version.
    #[error(
        "Hyper-V flush state version {found} is not supported (this build reads version {STATE_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// This host cannot serve the path the guest was set up for.
    #[error("This host cannot serve the saved Hyper-V flush path ({saved:?})")]
    HostCannotServe {
        /// The saved path.
        saved: FlushPath,
        /// Why.
        #[source]
        refusal: Refusal,
    },
    /// This host would choose another path for the saved configuration.
    #[error(
        "The saved VM uses the {saved:?} flush path; this host would serve {here:?}, which the guest's CPUID does not describe"
    )]
    PathDiffers {
        /// The saved path.
        saved: FlushPath,
        /// This host's.
        here: FlushPath,
    },
    /// Same path, but this host would offer other flush features.
    #[error(
        "The saved VM was offered the flush features {saved:?}; this host would offer {here:?}, which the guest's CPUID does not describe"
    )]
    FeaturesDiffer {
        /// Offered to the saved guest.
        saved: FlushFeatures,
        /// What this host would offer.
        here: FlushFeatures,
    },
    /// The VM has another vCPU count.
    #[error("The state has {saved} vCPUs, the VM {vm}")]
    VcpuCount {
        /// vCPUs in the state.
        saved: usize,
        /// vCPUs of the VM.
        vm: usize,
    },
    /// The hypercall page in the restored RAM is not the stub.
    #[error(
        "The hypercall page at {gpa:#x} in the restored memory does not hold the hypercall stub"
    )]
    HypercallPage {
        /// The page.
        gpa: u64,
    },
    /// The engine refused a value.
    #[error("Cannot restore the flush engine")]
    Engine(#[source] EngineError),
}

/// Only the version, read before the rest (so a newer format is named as
/// such, not as corrupt).
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl FlushState {
    /// The state of a VM whose vCPUs are all paused.
    pub fn capture(
        partition: &Partition,
        config: &HypervFlushConfig,
        decision: &Decision,
        msrs: Option<&HypervMsrs>,
    ) -> Self {
        let offer = partition.offer();
        Self {
            version: STATE_VERSION,
            config: config.clone(),
            decision: decision.clone(),
            msrs: msrs.map(|m| MsrState {
                guest_os_id: m.guest_os_id(),
                hypercall: m.hypercall_msr(),
            }),
            vp_indices: (0..partition.vcpu_count())
                .map(|v| partition.vp_index(v).unwrap_or(v as u32))
                .collect(),
            offer: OfferState {
                remote_flush: offer.remote_flush,
                ex_masks: offer.ex_masks,
                xmm_input: offer.xmm_input,
            },
            l2_offered: partition.l2_offered(),
            counters: partition.counters(),
        }
    }

    /// The state as bytes (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of plain data always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a state written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let VersionOnly { version } = serde_json::from_slice(bytes).map_err(StateError::Corrupt)?;
        if version != STATE_VERSION {
            return Err(StateError::Version { found: version });
        }
        serde_json::from_slice(bytes).map_err(StateError::Corrupt)
    }

    /// Parses a state a VMM kept as a JSON value inside its own snapshot
    /// (Cloud Hypervisor's `SnapshotData`), with the same version check as
    /// [`Self::from_bytes`]; deserializing the value straight into
    /// `FlushState` would skip it.
    pub fn from_value(value: serde_json::Value) -> Result<Self, StateError> {
        Self::from_bytes(value.to_string().as_bytes())
    }

    /// Checks that this host and the new VM can take the state: the saved
    /// configuration decides the same path here, the vCPU count matches,
    /// and an enabled hypercall page holds the stub of `hypercall_port`.
    pub fn check<M: GuestMemory + ?Sized>(
        &self,
        host: &HostFacts,
        vcpus: usize,
        mem: &M,
    ) -> Result<(), StateError> {
        let saved = self.decision.selected_mode;
        let here = decision::decide(&self.config, host)
            .map_err(|refusal| StateError::HostCannotServe { saved, refusal })?;
        if here.selected_mode != saved {
            return Err(StateError::PathDiffers {
                saved,
                here: here.selected_mode,
            });
        }
        if here.features != self.decision.features {
            return Err(StateError::FeaturesDiffer {
                saved: self.decision.features,
                here: here.features,
            });
        }
        if self.vp_indices.len() != vcpus {
            return Err(StateError::VcpuCount {
                saved: self.vp_indices.len(),
                vm: vcpus,
            });
        }
        if let Some(m) = self
            .msrs
            .filter(|m| m.hypercall & msr::HYPERCALL_ENABLE != 0)
        {
            let gpa = m.hypercall & !0xfff;
            let port = u8::try_from(self.config.hypercall_port).unwrap_or(0);
            let want = hypercall_stub(port);
            let mut got = [0u8; 3];
            let read = mem.read_slice(&mut got, GuestAddress(gpa));
            if read.is_err() || got != want {
                return Err(StateError::HypercallPage { gpa });
            }
        }
        Ok(())
    }

    /// Checks ([`Self::check`]), then applies the state to a new VM's
    /// engine and MSRs, before any vCPU runs.
    pub fn restore<M: GuestMemory + ?Sized>(
        &self,
        host: &HostFacts,
        mem: &M,
        partition: &Partition,
        msrs: Option<&HypervMsrs>,
    ) -> Result<(), StateError> {
        self.check(host, partition.vcpu_count(), mem)?;
        for (v, vp) in self.vp_indices.iter().enumerate() {
            partition.set_vp_index(v, *vp).map_err(StateError::Engine)?;
        }
        partition.set_offer(Offer {
            remote_flush: self.offer.remote_flush,
            ex_masks: self.offer.ex_masks,
            xmm_input: self.offer.xmm_input,
        });
        partition.set_l2_offered(self.l2_offered);
        partition.restore_counters(&self.counters);
        if let (Some(saved), Some(msrs)) = (self.msrs, msrs) {
            msrs.restore(saved.guest_os_id, saved.hypercall);
        }
        partition.flush_all_at_next_entry();
        Ok(())
    }
}
