//! A guest's stream of rejected hypercalls allocates nothing, with the
//! event observer attached: the `invalid-input` event is built only when
//! the rate limiter lets it through (a counting global allocator in this
//! test binary proves it).

#[path = "../../hyperv-flush/tests/support/counting_alloc.rs"]
mod counting_alloc;

use std::sync::Arc;

use counting_alloc::allocations_in;

use hvflush_api::events::{Event, EventMonitor, FlushStats, MonitorOptions};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::HypercallRegisters;
use hyperv_flush::engine::{Level, Partition, PartitionConfig, VcpuKicker};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_integration::events::EventObserver;

/// A List call with reserved control bits set: rejected with 3.
struct Rejected;

impl HypercallRegisters for Rejected {
    fn control(&self) -> u64 {
        0x0003 | 1 << 32 | 1 << 63
    }
    fn input(&self) -> u64 {
        0x1000
    }
    fn output(&self) -> u64 {
        0
    }
    fn xmm(&mut self) -> [u128; 6] {
        [0; 6]
    }
}

struct NoKicks;

impl VcpuKicker for NoKicks {
    fn kick(&self, _vcpu: usize) {}
}

#[test]
fn rejected_calls_beyond_the_event_rate_allocate_nothing() {
    let path = std::env::temp_dir().join(format!("hvflush-noalloc-{}.json", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let monitor = Arc::new(EventMonitor::from_file(file, MonitorOptions::default()).unwrap());
    let observer = Arc::new(EventObserver::new(Arc::clone(&monitor)));
    let p = Partition::new(PartitionConfig::new(2))
        .unwrap()
        .with_observer(observer);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let call = || {
        let out = p
            .handle_hypercall(0, Level::L1, &mut Rejected, &mem, &NoKicks)
            .unwrap();
        assert_eq!(out.status, HvStatus::INVALID_HYPERCALL_INPUT);
    };
    // The first ones of the window go out as events (and allocate).
    let warm = allocations_in(|| (0..20).for_each(|_| call()));
    assert!(
        warm > 0,
        "the counting works, and the first events were built"
    );
    // The rate limit (10 per second) is spent: the rest are suppressed
    // before anything is built.
    let n = allocations_in(|| (0..1000).for_each(|_| call()));
    assert_eq!(n, 0, "rejected calls allocated {n} times");
    monitor
        .shutdown(Event::shutdown(&FlushStats::default()))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(text.matches("\"invalid-input\"").count(), 10);
}
