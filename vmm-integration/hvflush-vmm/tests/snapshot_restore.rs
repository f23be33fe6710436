//! `run --snapshot-after` and `restore --source` as processes: a storm
//! snapshotted by one process finishes in another, with its counters
//! going on; a truncated, corrupted or foreign snapshot is refused before
//! any VM starts, with the file and the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hvflush_tests::have_kvm;
use serde_json::Value;

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvflush-vmm"))
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hvflush-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn restore(dir: &Path) -> Output {
    vmm()
        .args(["restore", "--quiet", "--json", "--source"])
        .arg(dir)
        .output()
        .expect("hvflush-vmm runs")
}

/// What is done to a copy of the snapshot, and the reason it is refused with.
type Corruption = (&'static str, fn(&Path), &'static str);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_snapshotted_storm_finishes_in_another_process_and_bad_snapshots_are_refused() {
    if !have_kvm() {
        return;
    }
    let dir = temp("snap");
    let before = common::snapshot_storm(&dir);
    let saved = &before["counters"];

    // Refused with the reason, before any VM starts: each corruption of a copy.
    let cases: [Corruption; 5] = [
        (
            "memory.bin truncated",
            |d| {
                let f = d.join("memory.bin");
                let len = std::fs::metadata(&f).unwrap().len();
                std::fs::File::options()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            },
            "memory.bin holds",
        ),
        (
            "kvm.json corrupted",
            |d| std::fs::write(d.join("kvm.json"), b"{\"vm\": [1, 2").unwrap(),
            "kvm.json is truncated or corrupted",
        ),
        (
            "another format version",
            |d| {
                let f = d.join("meta.json");
                let text = std::fs::read_to_string(&f).unwrap();
                std::fs::write(&f, text.replacen("\"version\":1", "\"version\":7", 1)).unwrap();
            },
            "Snapshot version 7 is not supported",
        ),
        (
            "flush state truncated",
            |d| {
                let f = d.join("hyperv-flush.json");
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
            },
            "Hyper-V flush state is truncated or corrupted",
        ),
        (
            "meta.json missing",
            |d| std::fs::remove_file(d.join("meta.json")).unwrap(),
            "Cannot access snapshot file",
        ),
    ];
    for (what, corrupt, reason) in cases {
        let bad = temp("bad-snap");
        copy_dir(&dir, &bad);
        corrupt(&bad);
        let out = restore(&bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: restored anyway");
        assert!(stderr.contains(reason), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: a VM ran");
        std::fs::remove_dir_all(&bad).ok();
    }

    // The real one goes on, and its counters continue from the saved ones.
    let out = restore(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = json(&out);
    assert_eq!(after["passed"], true, "{after}");
    for key in ["flushes_taken", "flushes_executed", "targets"] {
        let (b, a) = (
            saved[key].as_u64().unwrap(),
            after["counters"][key].as_u64().unwrap(),
        );
        assert!(a > b, "{key}: {b} before the snapshot, {a} at the end");
    }
    let calls = |r: &Value| r["hypercalls"]["total"].as_u64().unwrap();
    assert!(calls(&after) > calls(&before));
    std::fs::remove_dir_all(&dir).ok();
}
