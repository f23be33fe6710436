//! Backends (KVM, MSHV), vCPU-loop hooks and the reference VMM.
#![deny(missing_docs)]
