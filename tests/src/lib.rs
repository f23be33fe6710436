//! Test support shared by the crates' tests: the host capabilities a test
//! needs, and skips that CI (`HVFLUSH_REQUIRE`) turns into failures.

pub mod openapi;
pub mod raw_http;

use std::fmt;
use std::io::Write as _;

/// A host capability some tests need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// A usable `/dev/kvm`.
    Kvm,
    /// tracefs with the KVM tracepoints, as root.
    Tracefs,
    /// KVM with in-kernel Hyper-V flush (`KVM_CAP_HYPERV_TLBFLUSH`): the
    /// offload tests. Our CI hosts lack it, so CI does not require it.
    KvmHyperv,
}

impl Capability {
    /// The name used in [`REQUIRE_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tracefs => "tracefs",
            Self::KvmHyperv => "kvm-hyperv",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Comma-separated capabilities a run must have (`kvm,tracefs`): a test
/// that would skip for one of them fails instead. `.ci/run` sets it, so CI
/// cannot go green on a host without them.
pub const REQUIRE_VAR: &str = "HVFLUSH_REQUIRE";

/// Whether [`REQUIRE_VAR`] lists `capability`.
pub fn required(capability: Capability) -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| {
        v.split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(capability.name()))
    })
}

/// Skips the calling test because `capability` is missing (`reason`), or
/// fails it when the run requires that capability. The line goes to the
/// process's stderr directly: libtest captures `eprintln!` of passing
/// tests, so a skip would otherwise read as a plain `ok`.
pub fn skip(capability: Capability, reason: &str) {
    assert!(
        !required(capability),
        "{capability} is required ({REQUIRE_VAR}) but missing: {reason}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED ({capability} missing): {reason}"
    );
}

/// Skips the calling test for a reason that is not a missing capability
/// (e.g. a host that has more than the test is about), visibly as [`skip`]
/// does; never a failure.
pub fn skip_because(reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// Whether KVM tests can run here; skips (see [`skip`]) when not.
pub fn have_kvm() -> bool {
    match kvm_usable() {
        Ok(()) => true,
        Err(reason) => {
            skip(Capability::Kvm, &reason);
            false
        }
    }
}

/// Whether /dev/kvm can be opened read-write; the reason if not.
pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm is not usable: {e}"))
}
