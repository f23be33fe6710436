//! `hvflush-vmm guest-image`: a built-in workload as a PVH ELF that Cloud
//! Hypervisor boots with `--kernel FILE`, and its parameter block for
//! `--initramfs FILE` (PVH module 0, docs/guest-abi.md §10).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hvflush_api::error_line;
use hvflush_vmm::guest::layout::DEFAULT_MEMORY_SIZE;
use hvflush_vmm::guest::pvh::{PvhParams, build_image};
use hvflush_vmm::guest::{GuestLayout, Workload};

#[derive(Args, Debug)]
pub struct GuestImageArgs {
    /// Built-in workload.
    #[arg(long)]
    pub workload: Workload,
    /// Where to write the PVH ELF.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write the parameter block (vCPU count, usable limit, control
    /// page) here; without it the boot code counts the APs and reads the
    /// memory map.
    #[arg(long, value_name = "FILE")]
    pub params_output: Option<PathBuf>,
    /// vCPUs of the VM the parameter block is for (1-64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// Guest RAM in MiB of that VM (64-4096).
    #[arg(long, default_value_t = DEFAULT_MEMORY_SIZE >> 20,
          value_parser = clap::value_parser!(u64).range(64..=4096))]
    pub memory: u64,
}

pub fn guest_image(args: GuestImageArgs) -> Result<ExitCode, String> {
    let layout = GuestLayout::new(args.memory << 20, args.vcpus).map_err(|e| error_line(&e))?;
    let write = |path: &PathBuf, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&args.output, &build_image(args.workload))?;
    if let Some(path) = &args.params_output {
        write(path, &PvhParams::for_layout(&layout).to_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
