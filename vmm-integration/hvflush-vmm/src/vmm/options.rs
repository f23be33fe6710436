//! What to run: the options of `hvflush-vmm run` as a plain struct.

use std::path::PathBuf;
use std::time::Duration;

use hvflush_config::HypervFlushConfig;

use crate::guest::Workload;

/// The guest program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestProgram {
    /// A built-in workload.
    Builtin(Workload),
    /// A file: a PVH ELF (ELF magic) or a flat binary following `docs/guest-abi.md`.
    Image(PathBuf),
}

/// How a built-in workload is started (`docs/guest-abi.md` §3, §10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootMode {
    /// As a PVH ELF: only the BSP gets register state, its boot code starts
    /// the other vCPUs with INIT/SIPI, like an OS on hardware.
    #[default]
    Pvh,
    /// The flat ABI: every vCPU RUNNABLE in long mode at the image's first byte.
    Flat,
}

impl std::str::FromStr for BootMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pvh" => Ok(BootMode::Pvh),
            "flat" => Ok(BootMode::Flat),
            other => Err(format!(
                "Unknown boot mode {other:?} (expected pvh or flat)"
            )),
        }
    }
}

/// When and where to snapshot the running VM (`run --snapshot-after`):
/// every vCPU is stopped, the snapshot written, and the run ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotAt {
    /// Time since the vCPUs started.
    pub after: Duration,
    /// The snapshot directory (created).
    pub dir: PathBuf,
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// vCPUs (1..=64).
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// The flush configuration.
    pub flush: HypervFlushConfig,
    /// The guest program.
    pub program: GuestProgram,
    /// How a built-in workload boots (files: PVH if ELF, else flat).
    pub boot: BootMode,
    /// Behave like a VMM that does not know port 0xF4 (Cloud Hypervisor):
    /// record the exit code, resume the vCPU, and end the VM when the guest
    /// powers off through port 0x600.
    pub ignore_exit_port: bool,
    /// After this long, ask the guest to stop (control page `stop`).
    pub duration: Option<Duration>,
    /// Fail the run if it has not ended after this long.
    pub timeout: Duration,
    /// VP index = vCPU index × stride.
    pub vp_index_stride: u32,
    /// Bench: calls per phase (control page `iterations`).
    pub iterations: u64,
    /// Bench: workload parameter (control page `param`).
    pub param: u64,
    /// Echo guest console output to stderr.
    pub echo_console: bool,
    /// Ask the guest to stop (control page `stop`) once any vCPU writes
    /// this bench marker (the bench's spinning targets end this way).
    pub stop_on_marker: Option<u32>,
    /// Bench only: vCPU 0's thread runs without the flush hooks from the
    /// first of these markers to the second. Sound only while nothing can
    /// target vCPU 0 (the bench's idle-target run).
    pub bench_hooks_off: Option<(u32, u32)>,
    /// Snapshot the VM at some point of the run.
    pub snapshot: Option<SnapshotAt>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            vcpus: 2,
            memory_mib: 64,
            flush: HypervFlushConfig::default(),
            program: GuestProgram::Builtin(Workload::Smoke),
            boot: BootMode::Pvh,
            ignore_exit_port: false,
            duration: None,
            timeout: Duration::from_secs(120),
            vp_index_stride: 1,
            iterations: 0,
            param: 0,
            echo_console: true,
            stop_on_marker: None,
            bench_hooks_off: None,
            snapshot: None,
        }
    }
}
