//! The VM: a minimal KVM machine that boots a guest image on N vCPUs and
//! serves the Hyper-V flush hypercalls through `vmm-integration`'s public
//! surface only (`kvm::userspace`, `kvm::offload`, `decision`, `cpuid`,
//! `service`, `events`). Other VMMs copy from here.

mod console;
mod kvm_state;
mod machine;
mod options;
mod report;
mod snapshot;
mod vcpu_thread;

pub use machine::{Machine, MachineError};
pub use options::{BootMode, GuestProgram, RunOptions, SnapshotAt};
pub use report::{Marker, RunReport, VcpuOutcome};
pub use snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotError};
pub use vcpu_thread::BENCH_TRAP_PORT;

/// The guest address space the flush path reads through: atomic, as in
/// Cloud Hypervisor, so memory hotplug would be seen.
pub type VmAddressSpace = vm_memory::GuestMemoryAtomic<vm_memory::GuestMemoryMmap>;

/// Builds the VM described by `options`, runs it to completion and reports.
pub fn run(options: &RunOptions) -> Result<RunReport, MachineError> {
    Machine::create(options)?.run()
}
