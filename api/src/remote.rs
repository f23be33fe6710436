//! `hvflush-remote`: drives the hyperv-flush REST API of a running VMM.
//! The binary is [`main`]; tests run the same code in-process.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, error::ErrorKind};
use hvflush_config::HypervFlushUpdate;

use crate::client::{ApiClient, ClientError};
use crate::error_chain;
use crate::model::{CountersReport, FlushInfo, UpdateOutcome};

/// The command line.
#[derive(Parser)]
#[command(
    version,
    about = "Query and change the Hyper-V TLB flush service of a running VMM"
)]
pub struct Cli {
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
    Set {
        #[arg(value_name = "KEY=VAL[,KEY=VAL...]", help = set_help())]
        settings: String,
    },
}

/// `set`'s argument help: the keys, from their one definition.
fn set_help() -> String {
    let keys: Vec<&str> = hvflush_config::ConfigKey::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    format!(
        "The keys to change, e.g. `l1=off` (keys: {})",
        keys.join(", ")
    )
}

impl Cli {
    /// The `--api-socket` given, if any.
    pub fn api_socket(&self) -> Option<&std::path::Path> {
        self.api_socket.as_deref()
    }
}

/// Runs `hvflush-remote` with the process arguments; what `main` returns.
pub fn main() -> ExitCode {
    run_cli(Cli::parse())
}

/// Runs a parsed command line: prints its output, or the error chain
/// (outermost first) to stderr.
pub fn run_cli(cli: Cli) -> ExitCode {
    let Some(socket) = cli.api_socket.as_deref() else {
        // clap cannot require a global option; refuse it the way clap would.
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --api-socket <PATH>",
            )
            .exit()
    };
    match output(&cli, socket) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            eprint!("{text}");
            ExitCode::FAILURE
        }
    }
}

/// What the command prints: `Ok(stdout)` or `Err(stderr)`, each line
/// ending in a newline; the error chain reads `Error: ...` then one
/// `  caused by: ...` per cause.
pub fn output(cli: &Cli, socket: &std::path::Path) -> Result<String, String> {
    match run(cli, socket) {
        Ok(text) if text.is_empty() => Ok(text),
        Ok(text) => Ok(format!("{text}\n")),
        Err(chain) => Err(chain
            .iter()
            .enumerate()
            .map(|(i, line)| match i {
                0 => format!("Error: {line}\n"),
                _ => format!("  caused by: {line}\n"),
            })
            .collect()),
    }
}

/// The error chain of `e`, with the server's own chain when it sent one.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    if let Some(ClientError::Server { status, chain }) = e.downcast_ref::<ClientError>() {
        let mut lines = vec![format!("Server answered {status}")];
        lines.extend(chain.iter().cloned());
        return lines;
    }
    error_chain(e)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The command's output, or its error chain.
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

/// `hvflush-remote counters` as text: the calls per path, the statuses, then
/// one `label: value` line per engine counter.
pub fn format_counters(c: &CountersReport) -> String {
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
    for (_, label, value) in c.engine.values() {
        out.push_str(&format!("{label}: {value}\n"));
    }
    let ns = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ns"));
    out.push_str(&format!(
        "latency p50: {}\nlatency p99: {} ({} samples)\nevents dropped: {}",
        ns(c.latency.p50_ns),
        ns(c.latency.p99_ns),
        c.latency.samples,
        c.events_dropped
    ));
    out
}
