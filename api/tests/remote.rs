//! `hvflush-remote` as a user runs it: exit codes, `--json`, error chains.

mod common;

use std::process::{Command, Output};

use common::TestServer;
use hvflush_api::model::{CountersReport, FlushInfo, PingResponse};

fn remote(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hvflush-remote"))
        .arg("--api-socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_output_is_the_servers_json() {
    let server = TestServer::start();
    let out = remote(&server.socket, &["--json", "ping"]);
    assert!(out.status.success());
    let ping: PingResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ping.pid, std::process::id());
    let out = remote(&server.socket, &["--json", "info"]);
    let info: FlushInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info.config.l1);
    let out = remote(&server.socket, &["--json", "counters"]);
    let counters: CountersReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counters.engine.kicks, 77);
    // Applied: no body, nothing printed.
    let out = remote(
        &server.socket,
        &["--json", "set", "l1=off,extended_ranges=on"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(!server.service.state.lock().unwrap().config.l1);
    // Pending: the new state.
    let out = remote(&server.socket, &["--json", "set", "mode=offload"]);
    let info: FlushInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info.pending_config.unwrap().mode,
        hvflush_config::FlushMode::Offload
    );
}

#[test]
fn failures_print_the_chain_and_exit_non_zero() {
    let server = TestServer::start();
    let out = remote(&server.socket, &["set", "mode=off"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        format!(
            "Error: Server answered 400\n  caused by: Invalid update\n  caused by: {}\n",
            common::OFF_REASON
        )
    );
    assert!(out.stdout.is_empty());

    let out = remote(&server.socket, &["set", "l1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: Option `l1` is not of the form key=value\n"
    );

    let missing = server.dir.path().join("nothing.sock");
    let out = remote(&missing, &["ping"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "Error: Cannot connect to API socket {}\n  caused by: ",
            missing.display()
        )),
        "{err}"
    );

    // clap rejects a missing subcommand with its usage text.
    let out = remote(&server.socket, &[]);
    assert!(!out.status.success());
}

#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    let server = TestServer::start();
    let exe = env!("CARGO_BIN_EXE_hvflush-remote");
    for args in [
        vec!["--json", "--api-socket", "S", "counters"],
        vec!["--api-socket", "S", "counters", "--json"],
        vec!["counters", "--json", "--api-socket", "S"],
        vec!["info", "--api-socket", "S", "--json"],
    ] {
        let socket = server.socket.to_str().unwrap();
        let args: Vec<&str> = args
            .into_iter()
            .map(|a| if a == "S" { socket } else { a })
            .collect();
        let out = Command::new(exe).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON: {e}"));
        assert!(json.is_object(), "{args:?}");
    }
    // Without a socket: a usage error (exit 2), naming the option.
    let out = Command::new(exe).arg("ping").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-socket"));
}
