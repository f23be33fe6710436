//! Runs the `console` examples of `docs/api.md` (curl and hvflush-remote)
//! against a server with the mock service, in order, and compares the
//! output lines the document shows (`*` matches any text within a line).

mod common;

use std::path::Path;
use std::process::Command;

use common::TestServer;

/// The socket path the document uses; replaced by the test's socket.
const DOC_SOCKET: &str = "/run/hvflush/api.sock";

struct Example {
    command: String,
    expected: Vec<String>,
}

fn examples(doc: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Example {
                command: cmd.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(last) = out.last_mut() {
            last.expected.push(line.to_owned());
        }
    }
    out
}

/// Glob match where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = match text.strip_prefix(parts[0]) {
        Some(r) => r,
        None => return false,
    };
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn documented_examples_run() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let examples = examples(&doc);
    assert!(examples.iter().any(|e| e.command.starts_with("curl ")));
    assert!(
        examples
            .iter()
            .any(|e| e.command.starts_with("hvflush-remote "))
    );
    let server = TestServer::start();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hvflush-remote"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for example in examples {
        let command = example
            .command
            .replace(DOC_SOCKET, server.socket.to_str().unwrap());
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{command} 2>&1"))
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
        let lines: Vec<&str> = text.lines().collect();
        let fails = example
            .expected
            .first()
            .is_some_and(|l| l.starts_with("Error:"));
        assert_eq!(
            !output.status.success(),
            fails,
            "{}: exit {:?}\n{text}",
            example.command,
            output.status
        );
        assert!(
            lines.len() >= example.expected.len(),
            "{}: short output:\n{text}",
            example.command
        );
        for (want, got) in example.expected.iter().zip(&lines) {
            assert!(
                glob(want, got),
                "{}:\n want {want:?}\n  got {got:?}\n{text}",
                example.command
            );
        }
    }
}
