//! The guest side of the reference VMM: the guest ABI's memory layout
//! ([`layout`]), putting a VM into the ABI start state ([`boot`]), and the
//! built-in guest workloads written in assembly ([`workloads`]).
//!
//! The contract is `docs/guest-abi.md`.

pub mod boot;
pub mod layout;
pub mod pvh;
pub mod rom;
pub mod workloads;

pub use boot::{
    BootError, ControlBlock, configure_pvh_bsp, configure_vcpu, create_guest_memory, load_image,
    read_image_file, register_guest_memory, request_stop, setup_memory, write_control_page,
};
pub use layout::{GuestLayout, LayoutError};
pub use pvh::{PvhError, PvhImage, PvhParams};
pub use rom::RomError;
pub use workloads::{UnknownWorkload, Workload, image};
