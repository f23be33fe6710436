//! `hvflush-vmm`: the reference VMM of hyperv-flush.
//!
//! `run` boots a built-in workload or a guest image on a KVM VM and serves
//! the Hyper-V flush hypercalls; `probe` reports what this host can do;
//! `bench` measures the flush path against a bare trap; `guest-image` writes a
//! workload as a PVH ELF for other VMMs.

mod hvflush_vmm {
    pub mod bench;
    pub mod cli;
    pub mod guest_image;
}

use std::process::ExitCode;

use clap::Parser;
use hvflush_vmm::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => hvflush_vmm::cli::run(args),
        Command::Probe(args) => hvflush_vmm::cli::probe(args),
        Command::Bench(args) => hvflush_vmm::bench::bench(args),
        Command::GuestImage(args) => hvflush_vmm::guest_image::guest_image(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("hvflush-vmm: {message}");
            ExitCode::FAILURE
        }
    }
}
