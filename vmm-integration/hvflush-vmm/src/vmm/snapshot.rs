//! Snapshots of a running reference VM: what `run --snapshot-after`
//! writes and `restore --source` reads. A directory of
//!
//! * `meta.json`: the format version and the options the VM was built with
//!   (the restored VM is built the same way, then loaded);
//! * `memory.bin`: guest RAM;
//! * `kvm.json`: the VM's in-kernel devices and every vCPU's KVM state;
//! * `hyperv-flush.json`: the component's [`FlushState`].
//!
//! Everything is read and checked before a VM is created, so a truncated,
//! corrupted or foreign snapshot is refused with nothing started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hvflush_config::HypervFlushConfig;
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_integration::state::{FlushState, StateError};

use super::kvm_state::{VcpuState, VmState};
use super::options::{BootMode, GuestProgram, RunOptions};
use crate::guest::Workload;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("Cannot access snapshot file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not parse.
    #[error("Snapshot file {} is truncated or corrupted", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// Another format version.
    #[error(
        "Snapshot version {found} is not supported (this build reads version {SNAPSHOT_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// The files do not describe one VM.
    #[error("Snapshot is inconsistent: {0}")]
    Inconsistent(String),
    /// The component's state is refused.
    #[error("Hyper-V flush state refused")]
    Flush(#[source] StateError),
    /// Guest memory could not be copied.
    #[error("Cannot copy guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// How the VM was built, and what is left of its run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    version: u32,
    vcpus: u32,
    memory_mib: u64,
    flush: HypervFlushConfig,
    /// A built-in workload's name.
    workload: String,
    flat_boot: bool,
    vp_index_stride: u32,
    /// Of `--duration`, what was left when the snapshot was taken.
    duration_left_ms: Option<u64>,
    timeout_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvmFile {
    vm: VmState,
    vcpus: Vec<VcpuState>,
}

/// A snapshot read back and checked (not yet loaded).
pub struct Snapshot {
    meta: Meta,
    kvm: KvmFile,
    flush: FlushState,
    memory: Vec<u8>,
}

const META: &str = "meta.json";
const MEMORY: &str = "memory.bin";
const KVM: &str = "kvm.json";
const FLUSH: &str = "hyperv-flush.json";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|source| SnapshotError::Io { path, source })
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, SnapshotError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| SnapshotError::Io { path, source })
}

fn parse<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T, SnapshotError> {
    let bytes = read(dir, name)?;
    serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Corrupt {
        path: dir.join(name),
        source,
    })
}

/// Where the vCPU threads leave their state when a snapshot is taken.
pub(crate) struct Capture {
    /// Set (before the stop) when the stop is for a snapshot.
    pub(crate) requested: std::sync::atomic::AtomicBool,
    /// The MSRs to save (`KVM_GET_MSR_INDEX_LIST`).
    pub(crate) msr_list: Vec<u32>,
    states: std::sync::Mutex<Vec<Option<Result<VcpuState, String>>>>,
}

impl Capture {
    pub(crate) fn new(vcpus: usize, msr_list: Vec<u32>) -> Self {
        Self {
            requested: std::sync::atomic::AtomicBool::new(false),
            msr_list,
            states: std::sync::Mutex::new((0..vcpus).map(|_| None).collect()),
        }
    }

    /// vCPU thread `index`, stopped: its state (or why it has none).
    pub(crate) fn put(&self, index: usize, state: Result<VcpuState, String>) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = states.get_mut(index) {
            *slot = Some(state);
        }
    }

    /// Every vCPU's state, once all threads have ended.
    pub(crate) fn take(&self) -> Result<Vec<VcpuState>, SnapshotError> {
        let states = std::mem::take(&mut *self.states.lock().unwrap_or_else(|e| e.into_inner()));
        states
            .into_iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(Ok(state)) => Ok(state),
                Some(Err(e)) => Err(SnapshotError::Inconsistent(format!("vCPU {i}: {e}"))),
                None => Err(SnapshotError::Inconsistent(format!(
                    "vCPU {i} had ended before the snapshot"
                ))),
            })
            .collect()
    }
}

/// What [`write_snapshot`] saves.
pub struct SnapshotParts<'a> {
    /// The options the VM was built with.
    pub options: &'a RunOptions,
    /// How long it had run.
    pub elapsed: Duration,
    /// Guest RAM.
    pub mem: &'a GuestMemoryMmap,
    /// The in-kernel devices.
    pub vm: VmState,
    /// Every vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The component's state.
    pub flush: FlushState,
}

/// Writes a snapshot of a VM whose vCPUs are all stopped into `dir`.
pub fn write_snapshot(dir: &Path, parts: SnapshotParts<'_>) -> Result<(), SnapshotError> {
    let o = parts.options;
    let GuestProgram::Builtin(workload) = &o.program else {
        return Err(SnapshotError::Inconsistent(
            "only built-in workloads can be snapshotted".into(),
        ));
    };
    std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let meta = Meta {
        version: SNAPSHOT_VERSION,
        vcpus: o.vcpus,
        memory_mib: o.memory_mib,
        flush: o.flush.clone(),
        workload: workload.name().to_owned(),
        flat_boot: o.boot == BootMode::Flat,
        vp_index_stride: o.vp_index_stride,
        duration_left_ms: o
            .duration
            .map(|d| d.saturating_sub(parts.elapsed).as_millis() as u64),
        timeout_ms: o.timeout.saturating_sub(parts.elapsed).as_millis() as u64,
    };
    let mut memory = vec![0u8; parts.mem.iter().map(|r| r.len() as usize).sum()];
    let mut at = 0;
    for region in parts.mem.iter() {
        let len = region.len() as usize;
        parts
            .mem
            .read_slice(&mut memory[at..at + len], region.start_addr())
            .map_err(SnapshotError::Memory)?;
        at += len;
    }
    let kvm = KvmFile {
        vm: parts.vm,
        vcpus: parts.vcpus,
    };
    write(dir, MEMORY, &memory)?;
    write(dir, KVM, &to_json(&kvm))?;
    write(dir, FLUSH, &parts.flush.to_bytes())?;
    // Last: a directory without it is not a snapshot.
    write(dir, META, &to_json(&meta))
}

/// Plain data always serializes.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Snapshot {
    /// Reads and checks every file of `dir`.
    pub fn read(dir: &Path) -> Result<Self, SnapshotError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let VersionOnly { version } = parse(dir, META)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found: version });
        }
        let meta: Meta = parse(dir, META)?;
        let kvm: KvmFile = parse(dir, KVM)?;
        let flush = FlushState::from_bytes(&read(dir, FLUSH)?).map_err(SnapshotError::Flush)?;
        let memory = read(dir, MEMORY)?;
        let want = meta.memory_mib << 20;
        if memory.len() as u64 != want {
            return Err(SnapshotError::Inconsistent(format!(
                "{MEMORY} holds {} bytes, the VM has {want}",
                memory.len()
            )));
        }
        if kvm.vcpus.len() != meta.vcpus as usize || flush.vp_indices.len() != meta.vcpus as usize {
            return Err(SnapshotError::Inconsistent(format!(
                "{} vCPUs in {META}, {} in {KVM}, {} in {FLUSH}",
                meta.vcpus,
                kvm.vcpus.len(),
                flush.vp_indices.len()
            )));
        }
        meta.workload
            .parse::<Workload>()
            .map_err(|e| SnapshotError::Inconsistent(e.to_string()))?;
        Ok(Self {
            meta,
            kvm,
            flush,
            memory,
        })
    }

    /// The options to build the VM with before loading the snapshot.
    pub fn run_options(&self) -> RunOptions {
        let m = &self.meta;
        RunOptions {
            vcpus: m.vcpus,
            memory_mib: m.memory_mib,
            flush: m.flush.clone(),
            // Checked by `read`.
            program: GuestProgram::Builtin(m.workload.parse().unwrap_or(Workload::Smoke)),
            boot: if m.flat_boot {
                BootMode::Flat
            } else {
                BootMode::Pvh
            },
            vp_index_stride: m.vp_index_stride,
            duration: m.duration_left_ms.map(Duration::from_millis),
            timeout: Duration::from_millis(m.timeout_ms),
            ..RunOptions::default()
        }
    }

    /// Guest RAM, into a VM built with [`Self::run_options`].
    pub fn load_memory(&self, mem: &GuestMemoryMmap) -> Result<(), SnapshotError> {
        let mut at = 0;
        for region in mem.iter() {
            let len = region.len() as usize;
            let bytes = self
                .memory
                .get(at..at + len)
                .ok_or_else(|| SnapshotError::Inconsistent("guest memory layout differs".into()))?;
            mem.write_slice(bytes, region.start_addr())
                .map_err(SnapshotError::Memory)?;
            at += len;
        }
        Ok(())
    }

    /// The in-kernel devices.
    pub fn vm_state(&self) -> &VmState {
        &self.kvm.vm
    }

    /// vCPU `index`'s KVM state.
    pub fn vcpu_state(&self, index: usize) -> Option<&VcpuState> {
        self.kvm.vcpus.get(index)
    }

    /// The component's state.
    pub fn flush_state(&self) -> &FlushState {
        &self.flush
    }
}
