//! Register access for hypercall decoding, so the parser runs without a
//! hypervisor (tests feed synthetic registers).

/// The registers a hypercall reads (TLFS §3.7, x64 calling convention).
pub trait HypercallRegisters {
    /// RCX: the control word.
    fn control(&self) -> u64;
    /// RDX: the input GPA (memory input) or the first fast input qword.
    ///
    /// For a caller in guest mode (L2), backends return the input GPA
    /// already translated to an L1 GPA, or an unmapped GPA if translation
    /// failed (the read then fails with `INVALID_HYPERCALL_INPUT`, as KVM's
    /// `translate_nested_gpa` failure does).
    fn input(&self) -> u64;
    /// R8: the output GPA or the second fast input qword.
    fn output(&self) -> u64;
    /// XMM0-XMM5, read only for fast calls. Backends fetch them lazily here
    /// (one ioctl), never for memory-input calls.
    fn xmm(&mut self) -> [u128; 6];
}
