//! Hyper-V TLB-flush enlightenments: the TLFS ABI, hypercall decoding and the
//! flush engine (queues, routing, completion, counters).
#![deny(missing_docs)]
