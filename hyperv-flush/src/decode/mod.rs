//! Hypercall decoding and validation: from registers and guest memory to a
//! typed [`FlushRequest`], or the TLFS status the guest must get.
//!
//! Every rule is a row of `docs/conformance.md`; the precedence is
//! access → reserved control bits → unknown code → rep rules → non-Ex
//! header size → memory alignment/page span → unreadable memory → Ex
//! header size → fast-input overflow.

mod input;
mod io;
mod processors;
mod request;

pub(crate) use request::decode_into;

pub use io::HypercallRegisters;
pub use processors::ProcessorSet;
pub use request::{FlushCall, FlushRequest, GvaList, MAX_QUEUED_RANGES, Offer, decode};
