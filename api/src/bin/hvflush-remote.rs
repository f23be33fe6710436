//! `hvflush-remote`: drives the hyperv-flush REST API of a running VMM.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, error::ErrorKind};
use hvflush_api::client::{ApiClient, ClientError};
use hvflush_api::config::HypervFlushUpdate;
use hvflush_api::model::{CountersReport, FlushInfo, UpdateOutcome};

#[derive(Parser)]
#[command(
    version,
    about = "Query and change the Hyper-V TLB flush service of a running VMM"
)]
struct Cli {
    /// The VMM's API socket (before or after the subcommand).
    #[arg(long, value_name = "PATH", global = true)]
    api_socket: Option<std::path::PathBuf>,
    /// Print the server's JSON instead of text (before or after the subcommand).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the VMM answers; print its version.
    Ping,
    /// Show the configuration and per-feature state.
    Info,
    /// Show the counters.
    Counters,
    /// Change the configuration: KEY=VAL[,KEY=VAL...]
    /// (mode, l1, l2, ex_masks, xmm_input, extended_ranges, vendor, hypercall_port).
    Set {
        /// The keys to change, e.g. `l1=off`.
        #[arg(value_name = "KEY=VAL[,KEY=VAL...]")]
        settings: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(socket) = cli.api_socket.as_deref() else {
        // clap cannot require a global option; refuse it the way clap would.
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --api-socket <PATH>",
            )
            .exit()
    };
    match run(&cli, socket) {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(chain) => {
            for (i, line) in chain.iter().enumerate() {
                if i == 0 {
                    eprintln!("Error: {line}");
                } else {
                    eprintln!("  caused by: {line}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// The error chain of `e`, with the server's own chain when it sent one.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    if let Some(ClientError::Server { status, chain }) = e.downcast_ref::<ClientError>() {
        let mut lines = vec![format!("Server answered {status}")];
        lines.extend(chain.iter().cloned());
        return lines;
    }
    let mut lines = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        lines.push(s.to_string());
        source = s.source();
    }
    lines
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn run(cli: &Cli, socket: &std::path::Path) -> Result<String, Vec<String>> {
    let client = ApiClient::new(socket).map_err(|e| chain(&e))?;
    match &cli.command {
        Command::Ping => {
            let ping = client.ping().map_err(|e| chain(&e))?;
            Ok(if cli.json {
                to_json(&ping)
            } else {
                format!("VMM version {} (pid {})", ping.version, ping.pid)
            })
        }
        Command::Info => {
            let info = client.info().map_err(|e| chain(&e))?;
            Ok(if cli.json {
                to_json(&info)
            } else {
                format_info(&info)
            })
        }
        Command::Counters => {
            let counters = client.counters().map_err(|e| chain(&e))?;
            Ok(if cli.json {
                to_json(&counters)
            } else {
                format_counters(&counters)
            })
        }
        Command::Set { settings } => {
            let update = HypervFlushUpdate::parse(settings).map_err(|e| chain(&e))?;
            match client.update(&update).map_err(|e| chain(&e))? {
                UpdateOutcome::Applied => Ok(if cli.json {
                    String::new()
                } else {
                    format!("Applied: {}", update.to_option_string())
                }),
                UpdateOutcome::PendingUntilReboot(info) => Ok(if cli.json {
                    to_json(&info)
                } else {
                    format!(
                        "Pending until reboot: {}\n{}",
                        update.to_option_string(),
                        format_info(&info)
                    )
                }),
            }
        }
    }
}

fn format_info(info: &FlushInfo) -> String {
    let mut out = format!(
        "backend: {}\nmode: {}\nconfig: {}\n",
        info.backend, info.effective_mode, info.config
    );
    if let Some(pending) = &info.pending_config {
        out.push_str(&format!("next boot: {pending}\n"));
    }
    out.push_str(&format!(
        "{:<16} {:<8} {:<10} {:<10} {:<8} reasons\n",
        "feature", "enabled", "effective", "path", "pending"
    ));
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for (feature, state) in &info.features {
        let line = format!(
            "{:<16} {:<8} {:<10} {:<10} {:<8} {}",
            feature.as_str(),
            yes_no(state.enabled),
            yes_no(state.effective),
            state.path.as_str(),
            yes_no(state.pending_until_reboot),
            state.reasons.join("; ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn format_counters(c: &CountersReport) -> String {
    let mut out = format!("{:<14} {:>12} {:>12}\n", "path", "memory", "fast");
    for (path, counts) in &c.hypercalls {
        out.push_str(&format!(
            "{:<14} {:>12} {:>12}\n",
            path.as_str(),
            counts.memory,
            counts.fast
        ));
    }
    for (code, status) in &c.statuses {
        out.push_str(&format!(
            "status {code} {:<28} {}\n",
            status.name, status.count
        ));
    }
    let ns = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ns"));
    out.push_str(&format!(
        "targets: {}\nflushes requested: {}\nflushes executed: {}\nexecutor repairs: {}\n\
         flush-all fallbacks: {}\nkicks: {}\nunresponsive vCPUs: {}\nlatency p50: {}\nlatency p99: {} ({} samples)\n\
         events dropped: {}",
        c.targets,
        c.flushes_requested,
        c.flushes_executed,
        c.executor_repairs,
        c.flush_all_fallbacks,
        c.kicks,
        c.unresponsive_vcpus,
        ns(c.latency.p50_ns),
        ns(c.latency.p99_ns),
        c.latency.samples,
        c.events_dropped
    ));
    out
}
