//! A real `hvflush-vmm run` process with its REST API socket and event
//! file, for the tests that drive the API end to end.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Parser as _;
use hvflush_api::client::ApiClient;
use hvflush_api::events::parse_event_stream;
use hvflush_api::remote;
use hvflush_tests::have_kvm;
use hyperv_flush::engine::{HypercallKind, Level};
use serde_json::Value;

/// How long the VMM gets to create the VM and bind the socket.
pub const STARTUP: Duration = Duration::from_secs(20);
/// How long a stopping VMM gets to exit.
pub const EXIT_WAIT: Duration = Duration::from_secs(20);
/// How long counters get to move (the guest is slow, not stuck).
pub const PROGRESS_WAIT: Duration = Duration::from_secs(15);

/// The VMM binary cargo built for this run, or `None` (skipped) without KVM.
pub fn setup() -> Option<PathBuf> {
    have_kvm().then(|| PathBuf::from(env!("CARGO_BIN_EXE_hvflush-vmm")))
}

/// A running `hvflush-vmm run`, killed (SIGKILL) and cleaned up on drop.
pub struct Vmm {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub events: PathBuf,
    pub status: Option<ExitStatus>,
}

impl Vmm {
    /// Starts storm on 2 vCPUs in userspace mode; `Err` says why it did not.
    pub fn start(vmm: &Path, name: &str, duration_secs: u32) -> Result<Self, String> {
        Self::start_storm(vmm, name, duration_secs, 2)
    }

    /// Starts storm on `vcpus` vCPUs in userspace mode.
    pub fn start_storm(
        vmm: &Path,
        name: &str,
        duration_secs: u32,
        vcpus: u32,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("hvflush-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("api.sock");
        let events = dir.join("events.json");
        let stdout = File::create(dir.join("stdout")).expect("stdout file");
        let stderr = File::create(dir.join("stderr")).expect("stderr file");
        let child = Command::new(vmm)
            .args([
                "run",
                "--workload",
                "storm",
                "--vcpus",
                &vcpus.to_string(),
                "--quiet",
                "--json",
            ])
            .args(["--hyperv-flush", "mode=userspace"])
            .args(["--duration", &duration_secs.to_string()])
            // The run's own deadline, past the guest's: a hang fails it.
            .args(["--timeout", &(duration_secs + 15).max(55).to_string()])
            .args(["--summary-interval", "1"])
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .arg("--event-monitor")
            .arg(format!("path={}", events.display()))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("hvflush-vmm starts");
        let mut vmm = Self {
            child,
            dir,
            socket,
            events,
            status: None,
        };
        vmm.wait_for_socket()?;
        Ok(vmm)
    }

    pub fn wait_for_socket(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                let stderr = self.stderr();
                // A host that cannot serve userspace mode is a reason to skip,
                // anything else a failure.
                if stderr.contains("refused") || stderr.contains("No flush path") {
                    return Err(format!("the VMM refuses mode=userspace: {}", stderr.trim()));
                }
                panic!("hvflush-vmm exited with {status} before serving: {stderr}");
            }
            sleep(Duration::from_millis(50));
        }
        panic!("no API socket after {STARTUP:?}: {}", self.stderr());
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.socket)
            .expect("client")
            .with_timeout(Duration::from_secs(10))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The `--json` run report.
    pub fn report(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("stdout")).expect("stdout");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report {text:?}: {e}"))
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "hvflush-vmm did not exit");
            sleep(Duration::from_millis(50));
        }
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// The event file: pretty-printed objects, each followed by a blank line.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events).expect("event file");
        assert!(
            text.ends_with("}\n\n"),
            "the last event ends with a blank line"
        );
        parse_event_stream(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }

    /// `hvflush-remote --api-socket SOCKET ARGS...`, run in-process
    /// (`hvflush_api::remote` is the binary's code): (success, stdout, stderr).
    pub fn remote(&self, args: &[&str]) -> (bool, String, String) {
        let socket = self.socket.to_str().expect("UTF-8 socket path");
        let mut argv = vec!["--api-socket", socket];
        argv.extend_from_slice(args);
        self.remote_argv(&argv)
    }

    /// `hvflush-remote ARGS...` (the socket among them), run in-process.
    pub fn remote_argv(&self, args: &[&str]) -> (bool, String, String) {
        let argv = ["hvflush-remote"].into_iter().chain(args.iter().copied());
        let cli = remote::Cli::try_parse_from(argv).expect("valid hvflush-remote arguments");
        let socket = cli.api_socket().expect("--api-socket given").to_owned();
        match remote::output(&cli, &socket) {
            Ok(out) => (true, out, String::new()),
            Err(err) => (false, String::new(), err),
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Smoke's promise: every vCPU makes every L1 call kind (4 calls, memory
/// and fast input) at least once.
pub fn assert_every_l1_kind_called(report: &hvflush_vmm::vmm::RunReport, vcpus: u64) {
    let c = &report.counters;
    for kind in HypercallKind::all().filter(|k| k.level == Level::L1) {
        assert!(c.path(kind) >= vcpus, "{kind:?}: {c:?}");
    }
}

/// A 4-vCPU storm snapshotted after 2 s; its report.
pub fn snapshot_storm(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hvflush-vmm"))
        .args([
            "run",
            "--workload",
            "storm",
            "--vcpus",
            "4",
            "--duration",
            "6",
        ])
        .args(["--hyperv-flush", "mode=userspace", "--quiet", "--json"])
        .args(["--snapshot-after", "2", "--snapshot-dir"])
        .arg(dir)
        .output()
        .expect("hvflush-vmm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["snapshot"].as_str(), dir.to_str());
    report
}
