//! `hvflush-vmm bench`.

use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Calls per phase.
    #[arg(long, default_value_t = 2000)]
    pub iterations: u64,
}

pub fn bench(_args: BenchArgs) -> Result<ExitCode, String> {
    Err("bench: not built yet".into())
}
