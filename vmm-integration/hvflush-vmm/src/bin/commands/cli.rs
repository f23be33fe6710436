//! Command-line interface of `hvflush-vmm run` and `probe`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hvflush_api::events::MonitorOptions;
use hvflush_api::{ApiServer, EventMonitor, error_line};
use hvflush_config::{ApiSocketConfig, EventMonitorConfig, HypervFlushConfig};
use hvflush_vmm::config_file::merge_config;
use hvflush_vmm::guest::Workload;
use hvflush_vmm::vmm::{
    BootMode, GuestProgram, Machine, MachineError, RunOptions, RunReport, Snapshot, SnapshotAt,
};
use hyperv_flush::engine::{FlushObserver, NoopObserver};
use vmm_integration::events::{EventObserver, EventReporting};
use vmm_integration::probe::{probe_host, render_probe_human};

/// Hyper-V TLB-flush enlightenments on KVM: the reference VMM.
#[derive(Parser, Debug)]
#[command(name = "hvflush-vmm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a workload or guest image and serve its flush hypercalls.
    Run(RunArgs),
    /// Report the host's capabilities and what mode=auto would choose.
    Probe(ProbeArgs),
    /// Measure the flush path against a bare trap (writes JSON).
    Bench(crate::commands::bench::BenchArgs),
    /// Resume a VM from a snapshot written by `run --snapshot-after`.
    Restore(RestoreArgs),
    /// Write a workload as a PVH ELF (for Cloud Hypervisor's --kernel) and
    /// optionally its parameter block (for --initramfs).
    GuestImage(crate::commands::guest_image::GuestImageArgs),
    /// Run a long storm (16 vCPUs, 10 minutes by default) and watch the
    /// VMM: resident memory, counters, unresponsive vCPUs, trace-verified
    /// flushes.
    Soak(crate::commands::soak::SoakArgs),
}

#[derive(Args, Debug, Clone)]
pub struct FlushArgs {
    /// Hyper-V flush options, e.g. mode=auto,l1=on,l2=auto,ex_masks=on,
    /// xmm_input=on,extended_ranges=on,vendor=microsoft,hypercall_port=0x99.
    #[arg(long = "hyperv-flush", value_name = "OPTIONS", help = HypervFlushConfig::syntax())]
    pub hyperv_flush: Option<String>,
    /// VM config JSON file; its "hyperv_flush" section is read, and
    /// --hyperv-flush keys override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl FlushArgs {
    pub fn config(&self) -> Result<HypervFlushConfig, String> {
        merge_config(self.config.as_deref(), self.hyperv_flush.as_deref())
            .map_err(|e| error_line(&e))
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Number of vCPUs (1-64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// Guest RAM in MiB (64-4096).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(64..=4096))]
    pub memory: u64,
    #[command(flatten)]
    pub flush: FlushArgs,
    /// Built-in workload.
    #[arg(long, default_value = "smoke", conflicts_with = "guest_image")]
    pub workload: Workload,
    /// A guest image instead of a workload: a PVH ELF (booted like the
    /// workloads: BSP at the PVH entry, APs by INIT/SIPI) or a flat binary
    /// (every vCPU in long mode at its first byte), see docs/guest-abi.md.
    #[arg(long, value_name = "FILE")]
    pub guest_image: Option<PathBuf>,
    /// How a built-in workload boots: pvh (its PVH image; the boot code
    /// starts the APs with INIT/SIPI) or flat (every vCPU RUNNABLE in long mode).
    #[arg(
        long,
        value_name = "pvh|flat",
        default_value = "pvh",
        conflicts_with = "guest_image"
    )]
    pub boot: BootMode,
    /// Act like a VMM that ignores the exit port 0xF4 (Cloud Hypervisor):
    /// resume the vCPU, and end the VM when the guest powers off (port 0x600).
    #[arg(long)]
    pub ignore_exit_port: bool,
    /// Ask the guest to stop after this many seconds (storm, restart).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub duration: u64,
    /// Fail the run if it has not ended after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// VP index = vCPU index × K (exercises sets across banks).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vp_index_stride: u32,
    /// Stop every vCPU after this many seconds, write a snapshot to
    /// --snapshot-dir and end the run (`restore --source DIR` resumes it).
    #[arg(long, value_name = "SECS", requires = "snapshot_dir")]
    pub snapshot_after: Option<f64>,
    /// Where --snapshot-after writes the snapshot.
    #[arg(long, value_name = "DIR", requires = "snapshot_after")]
    pub snapshot_dir: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// How a run is reported and served (shared by `run` and `restore`).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Print one JSON object instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Do not echo the guest console to stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Serve the REST API (docs/api.md) on this Unix socket.
    #[arg(long, value_name = "path=PATH|fd=N", help = ApiSocketConfig::SYNTAX,
          value_parser = |s: &str| ApiSocketConfig::parse(s).map_err(|e| error_line(&e)))]
    pub api_socket: Option<ApiSocketConfig>,
    /// Write flush-path events (docs/api.md, "Events") here.
    #[arg(long, value_name = "path=FILE|fd=N", help = EventMonitorConfig::SYNTAX,
          value_parser = |s: &str| EventMonitorConfig::parse(s).map_err(|e| error_line(&e)))]
    pub event_monitor: Option<EventMonitorConfig>,
    /// Seconds between `flush-summary` events (with --event-monitor).
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub summary_interval: u64,
}

/// `restore`: resume a VM from a snapshot directory.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The snapshot directory (`run --snapshot-after SECS --snapshot-dir DIR`).
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl RunArgs {
    pub fn options(&self) -> Result<RunOptions, String> {
        let program = match &self.guest_image {
            Some(path) => GuestProgram::Image(path.clone()),
            None => GuestProgram::Builtin(self.workload),
        };
        let until_stop = matches!(program, GuestProgram::Builtin(w) if w.runs_until_stop());
        Ok(RunOptions {
            vcpus: self.vcpus,
            memory_mib: self.memory,
            flush: self.flush.config()?,
            program,
            boot: self.boot,
            ignore_exit_port: self.ignore_exit_port,
            duration: until_stop.then(|| Duration::from_secs(self.duration)),
            timeout: Duration::from_secs(self.timeout),
            vp_index_stride: self.vp_index_stride,
            iterations: 0,
            param: 0,
            echo_console: !self.serve.quiet,
            stop_on_marker: None,
            bench_hooks_off: None,
            snapshot: match (self.snapshot_after, &self.snapshot_dir) {
                (Some(secs), Some(dir)) => Some(SnapshotAt {
                    after: Duration::try_from_secs_f64(secs)
                        .map_err(|e| format!("--snapshot-after {secs}: {e}"))?,
                    dir: dir.clone(),
                }),
                _ => None,
            },
        })
    }
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub flush: FlushArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Set by SIGINT/SIGTERM; the run loop stops the vCPUs when it sees it.
static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    TERMINATE.store(true, SeqCst);
}

pub fn install_termination_handlers() -> Result<(), String> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::register_signal_handler(signal, on_terminate)
            .map_err(|e| format!("cannot install the handler for signal {signal}: {e}"))?;
    }
    Ok(())
}

pub fn termination_flag() -> &'static AtomicBool {
    &TERMINATE
}

pub fn run(args: RunArgs) -> Result<ExitCode, String> {
    let options = args.options()?;
    install_termination_handlers()?;
    let report = run_served(&args.serve, |observer| {
        Machine::create_with_observer(&options, observer)
    })?;
    Ok(print_report(&args.serve, &report))
}

pub fn restore(args: RestoreArgs) -> Result<ExitCode, String> {
    // Read and checked whole before any VM exists.
    let snapshot = Snapshot::read(&args.source).map_err(|e| error_line(&e))?;
    let mut options = snapshot.run_options();
    options.echo_console = !args.serve.quiet;
    install_termination_handlers()?;
    let report = run_served(&args.serve, |observer| {
        Machine::restore(&snapshot, &options, observer)
    })?;
    Ok(print_report(&args.serve, &report))
}

fn print_report(serve: &ServeArgs, report: &RunReport) -> ExitCode {
    if serve.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the machine with the event monitor and the API server around it:
/// both start before the vCPUs; at the end (guest done, timeout or signal)
/// the API server stops (socket removed) and `shutdown` is written last.
fn run_served(
    args: &ServeArgs,
    build: impl FnOnce(Arc<dyn FlushObserver>) -> Result<Machine, MachineError>,
) -> Result<RunReport, String> {
    let monitor = match &args.event_monitor {
        Some(config) => Some(Arc::new(
            EventMonitor::open(config, MonitorOptions::default()).map_err(|e| error_line(&e))?,
        )),
        None => None,
    };
    let observer = monitor
        .as_ref()
        .map(|m| Arc::new(EventObserver::new(Arc::clone(m))));
    let observer: Arc<dyn FlushObserver> = match &observer {
        Some(o) => o.clone(),
        None => Arc::new(NoopObserver),
    };
    let machine = build(observer).map_err(|e| error_line(&e))?;
    let service = Arc::new(machine.flush_service(monitor.clone()));
    let reporting = match monitor {
        Some(m) => Some(
            EventReporting::start(
                m,
                Arc::clone(&service),
                Duration::from_secs(args.summary_interval),
            )
            .map_err(|e| format!("cannot start the flush-summary thread: {e}"))?,
        ),
        None => None,
    };
    let server = match &args.api_socket {
        Some(config) => match ApiServer::start(config, service) {
            Ok(server) => Some(server),
            Err(e) => {
                finish_events(reporting);
                return Err(error_line(&e));
            }
        },
        None => None,
    };
    let result = machine.run_until(termination_flag());
    if let Some(server) = server {
        server.shutdown();
    }
    finish_events(reporting);
    result.map_err(|e| error_line(&e))
}

fn finish_events(reporting: Option<EventReporting>) {
    if let Some(Err(e)) = reporting.map(EventReporting::finish) {
        eprintln!("hvflush-vmm: {}", error_line(&e));
    }
}

pub fn probe(args: ProbeArgs) -> Result<ExitCode, String> {
    let report = probe_host(&args.flush.config()?);
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render_probe_human(&report));
    }
    Ok(ExitCode::SUCCESS)
}
