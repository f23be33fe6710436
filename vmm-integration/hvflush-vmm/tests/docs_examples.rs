//! Runs the `console` examples of `docs/api.md` (curl and hvflush-remote)
//! against the real reference VMM serving a storm guest, in order, and
//! compares the output lines the document shows (`*` matches any text
//! within a line).

mod common;

use std::process::Command;

use common::{Vmm, setup};

/// An expected-output line that stands for any number of lines.
const SKIP: &str = "...";

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
    // curl is installed by .ci/run; a missing tool is a broken setup.
    Command::new("curl")
        .arg("--version")
        .output()
        .expect("curl is installed");
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let examples = examples(&doc);
    assert!(examples.iter().any(|e| e.command.starts_with("curl ")));
    assert!(
        examples
            .iter()
            .any(|e| e.command.starts_with("hvflush-remote "))
    );
    let Some(binary) = setup() else { return };
    let vmm = Vmm::start(&binary, "docs", 120).unwrap_or_else(|e| panic!("{e}"));
    let socket = vmm.socket.to_str().expect("UTF-8 socket path").to_owned();
    // The examples show a guest that has made calls.
    let client = vmm.client();
    let deadline = std::time::Instant::now() + common::PROGRESS_WAIT;
    while client.counters().map_or(0, |c| c.total_hypercalls()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest made no call"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for example in examples {
        let command = example.command.replace(DOC_SOCKET, &socket);
        // hvflush-remote runs in-process (`hvflush_api::remote` is the
        // binary's code); curl through the shell.
        let (ok, text) = match command.strip_prefix("hvflush-remote ") {
            Some(args) => {
                let args: Vec<&str> = args.split_whitespace().collect();
                let (ok, out, err) = vmm.remote_argv(&args);
                (ok, out + &err)
            }
            None => {
                let output = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{command} 2>&1"))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
                (output.status.success(), text)
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        let fails = example
            .expected
            .first()
            .is_some_and(|l| l.starts_with("Error:"));
        assert_eq!(!ok, fails, "{}: exit status\n{text}", example.command);
        if let Err(want) = matches(&example.expected, &lines) {
            panic!("{}:\n want {want:?}\n{text}", example.command);
        }
    }
}

/// Whether `lines` start with `expected`, line by line (`*` globs within a
/// line; a line `...` skips any number of lines). `Err` is the first
/// expected line that did not match.
fn matches<'a>(expected: &'a [String], lines: &[&str]) -> Result<(), &'a str> {
    let mut at = 0;
    let mut want = expected.iter().peekable();
    while let Some(line) = want.next() {
        if line == SKIP {
            let Some(next) = want.peek() else {
                return Ok(());
            };
            let found = lines[at..].iter().position(|l| glob(next, l));
            at += found.ok_or(next.as_str())?;
            continue;
        }
        match lines.get(at) {
            Some(got) if glob(line, got) => at += 1,
            _ => return Err(line),
        }
    }
    Ok(())
}
