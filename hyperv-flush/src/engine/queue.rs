//! A per-vCPU, per-level flush queue: 16 ranges, overflow collapses to a
//! full flush (Linux KVM `kvm_vcpu_hv_tlb_flush_fifo`).

use crate::abi::GvaRange;

/// Capacity in ranges (Linux `KVM_HV_TLB_FLUSH_FIFO_SIZE`).
pub const QUEUE_CAPACITY: usize = 16;

/// Pending work of one queue, taken by the target before guest entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
// Inline on purpose: requests live on the stack, the hot path never allocates.
#[allow(clippy::large_enum_variant)]
pub enum QueuedFlush {
    /// Nothing to do.
    #[default]
    None,
    /// Flush every translation of this level.
    All,
    /// Flush these ranges.
    Ranges {
        /// The ranges (first `len` are valid).
        ranges: [GvaRange; QUEUE_CAPACITY],
        /// Valid entries.
        len: u8,
    },
}

impl QueuedFlush {
    /// The ranges to flush (empty for `None` and `All`).
    pub fn ranges(&self) -> &[GvaRange] {
        match self {
            Self::Ranges { ranges, len } => &ranges[..usize::from(*len)],
            _ => &[],
        }
    }

    /// Whether there is anything to flush.
    pub fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// Result of an enqueue, for counters and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The ranges were queued.
    Ranges,
    /// A full flush was queued (requested, or already pending).
    All,
    /// The ranges did not fit: collapsed into a full flush.
    Overflow,
}

/// The queue itself (protected by the owning slot's mutex).
#[derive(Debug, Default)]
pub(crate) struct FlushQueue {
    pending: QueuedFlush,
}

impl FlushQueue {
    /// Queues `new` ranges, or a full flush when they do not fit.
    #[inline]
    pub(crate) fn push_ranges(&mut self, new: &[GvaRange]) -> Enqueued {
        match &mut self.pending {
            QueuedFlush::All => Enqueued::All,
            QueuedFlush::None if new.len() <= QUEUE_CAPACITY => {
                let mut ranges = [GvaRange::default(); QUEUE_CAPACITY];
                ranges[..new.len()].copy_from_slice(new);
                self.pending = QueuedFlush::Ranges {
                    ranges,
                    len: new.len() as u8,
                };
                Enqueued::Ranges
            }
            QueuedFlush::Ranges { ranges, len }
                if usize::from(*len) + new.len() <= QUEUE_CAPACITY =>
            {
                let at = usize::from(*len);
                ranges[at..at + new.len()].copy_from_slice(new);
                *len += new.len() as u8;
                Enqueued::Ranges
            }
            _ => {
                self.pending = QueuedFlush::All;
                Enqueued::Overflow
            }
        }
    }

    /// Takes everything pending.
    pub(crate) fn take(&mut self) -> QueuedFlush {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u64) -> GvaRange {
        GvaRange {
            start: i << 12,
            pages: 1,
        }
    }

    #[test]
    fn ranges_accumulate_until_capacity_then_collapse() {
        let mut q = FlushQueue::default();
        let ten: Vec<_> = (0..10).map(r).collect();
        assert_eq!(q.push_ranges(&ten), Enqueued::Ranges);
        assert_eq!(q.push_ranges(&ten[..6]), Enqueued::Ranges);
        assert_eq!(q.push_ranges(&ten[..1]), Enqueued::Overflow);
        assert_eq!(q.take(), QueuedFlush::All);
        assert_eq!(q.take(), QueuedFlush::None);
    }

    #[test]
    fn overflowed_queue_absorbs_later_ranges() {
        let mut q = FlushQueue::default();
        let many: Vec<_> = (0..17).map(r).collect();
        assert_eq!(q.push_ranges(&many), Enqueued::Overflow);
        assert_eq!(q.push_ranges(&[r(2)]), Enqueued::All);
        assert_eq!(q.take(), QueuedFlush::All);
    }

    #[test]
    fn empty_range_list_still_marks_work() {
        // A List call whose entries were all non-canonical still counts
        // as a (no-op) flush request: the target re-enters normally.
        let mut q = FlushQueue::default();
        assert_eq!(q.push_ranges(&[]), Enqueued::Ranges);
        assert!(q.take().is_some());
    }
}
