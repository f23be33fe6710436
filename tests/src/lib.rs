//! Shared helpers for the cross-crate integration tests.

use std::path::PathBuf;

/// Whether /dev/kvm can be opened read-write; the reason if not.
pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))
}

/// A workspace binary built next to the running test executable
/// (`cargo test --workspace` builds them), or why it cannot be found.
pub fn find_binary(name: &str) -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var(format!("CARGO_BIN_EXE_{name}")) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("no test executable path: {e}"))?;
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{name} is not built next to {} (run `cargo build -p vmm-integration -p hvflush-api`)",
                exe.display()
            )
        })
}
