//! The reference VMM behind `hvflush-vmm`: a minimal KVM VM that boots a
//! PVH guest image on N vCPUs like hardware (only the BSP gets register
//! state; the image starts the others with INIT/SIPI) and serves the
//! Hyper-V flush hypercalls through `vmm-integration`'s public surface
//! only. The built-in guest workloads live in [`guest`].
#![deny(missing_docs)]

pub mod config_file;
pub mod guest;
pub mod vmm;
