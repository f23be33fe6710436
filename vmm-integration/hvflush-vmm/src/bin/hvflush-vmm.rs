//! `hvflush-vmm`: the reference VMM of hyperv-flush.
//!
//! `run` boots a built-in workload or a guest image on a KVM VM and serves
//! the Hyper-V flush hypercalls; `probe` reports what this host can do;
//! `bench` measures the flush path against a bare trap; `guest-image` writes a
//! workload as a PVH ELF for other VMMs; `soak` runs a long storm and
//! watches the VMM's memory, counters and flushes.

mod commands {
    pub mod bench;
    pub mod cli;
    pub mod guest_image;
    pub mod plot;
    pub mod soak;
    pub mod soak_trace;
}

use std::process::ExitCode;

use clap::Parser;
use commands::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::cli::run(args),
        Command::Probe(args) => commands::cli::probe(args),
        Command::Bench(args) => commands::bench::bench(args),
        Command::Restore(args) => commands::cli::restore(args),
        Command::GuestImage(args) => commands::guest_image::guest_image(args),
        Command::Soak(args) => commands::soak::soak(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("hvflush-vmm: {message}");
            ExitCode::FAILURE
        }
    }
}
