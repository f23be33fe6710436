//! A guest's stream of rejected hypercalls allocates nothing, with the
//! event observer attached: the `invalid-input` event is built only when
//! the rate limiter lets it through (a counting global allocator in this
//! test binary proves it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use hvflush_api::events::{Event, EventMonitor, FlushStats, MonitorOptions};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::HypercallRegisters;
use hyperv_flush::engine::{Level, Partition, PartitionConfig, VcpuKicker};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_integration::vmm::EventObserver;

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, SeqCst);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; counting has no side effect on
// the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr`/`layout` come from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr`/`layout` come from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(SeqCst) - before
}

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
