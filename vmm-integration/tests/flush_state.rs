//! `FlushState`: saved with the VM paused, restored into a new VM before
//! its vCPUs run; refused, with nothing applied, when truncated, corrupted,
//! of another version, for another vCPU count, for a path this host does
//! not serve, or when the restored RAM lost the hypercall page.

mod common;

use common::userspace_host;
use hvflush_config::HypervFlushConfig;
use hyperv_flush::decode::Offer;
use hyperv_flush::engine::{Partition, PartitionConfig, QueuedFlush};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_integration::decision::{self, FlushPath};
use vmm_integration::kvm::userspace::{HypervMsrs, MsrOutcome, hypercall_stub};
use vmm_integration::state::{FlushState, STATE_VERSION, StateError};

const GUEST_OS_ID: u32 = 0x4000_0000;
const HYPERCALL: u32 = 0x4000_0001;
const PAGE: u64 = 0x5000;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

/// A userspace VM of 4 vCPUs that ran: hypercall page on, VP indices set,
/// l1 toggled off at run time, some counters.
fn running_vm(mem: &GuestMemoryMmap) -> (Partition, HypervMsrs, FlushState) {
    let config = HypervFlushConfig::parse("mode=userspace").unwrap();
    let decision = decision::decide(&config, &userspace_host()).unwrap();
    let p = Partition::new(PartitionConfig::new(4)).unwrap();
    for v in 0..4 {
        p.set_vp_index(v, 10 * v as u32).unwrap();
    }
    p.set_offer(Offer {
        remote_flush: false,
        ..decision.engine_offer()
    });
    let msrs = HypervMsrs::new(0x99);
    assert_eq!(msrs.write(GUEST_OS_ID, 0x8100, mem), MsrOutcome::Done(0));
    assert_eq!(msrs.write(HYPERCALL, PAGE | 1, mem), MsrOutcome::Done(0));
    p.flush_all_at_next_entry();
    p.before_entry(2).unwrap();
    p.after_exit(2).unwrap();
    let state = FlushState::capture(&p, &config, &decision, Some(&msrs));
    (p, msrs, state)
}

fn fresh() -> (Partition, HypervMsrs) {
    (
        Partition::new(PartitionConfig::new(4)).unwrap(),
        HypervMsrs::new(0x99),
    )
}

#[test]
fn a_restored_vm_goes_on_where_it_was_and_flushes_everything_once() {
    let m = mem();
    let (old, _, state) = running_vm(&m);
    let bytes = state.to_bytes();
    let back = FlushState::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.version, STATE_VERSION);

    let (p, msrs) = fresh();
    back.restore(&userspace_host(), &m, &p, Some(&msrs))
        .unwrap();
    assert_eq!(msrs.hypercall_msr(), PAGE | 1, "HYPERCALL MSR preserved");
    assert_eq!(msrs.guest_os_id(), 0x8100);
    assert_eq!(p.vp_index(3), Some(30));
    assert!(!p.offer().remote_flush, "runtime l1=off preserved");
    assert_eq!(p.counters().flushes_taken, old.counters().flushes_taken);
    for v in 0..4 {
        let pending = p.before_entry(v).unwrap();
        assert_eq!(
            (pending.l1, pending.l2),
            (QueuedFlush::All, QueuedFlush::All)
        );
        p.after_exit(v).unwrap();
    }
}

fn refused(bytes: &[u8]) -> StateError {
    FlushState::from_bytes(bytes).unwrap_err()
}

#[test]
fn truncated_corrupted_and_foreign_states_are_refused() {
    let m = mem();
    let (_, _, state) = running_vm(&m);
    let bytes = state.to_bytes();
    assert!(matches!(
        refused(&bytes[..bytes.len() / 2]),
        StateError::Corrupt(_)
    ));
    let corrupt = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"vp_indices\"", "\"vp_indexes\"");
    assert!(matches!(
        refused(corrupt.as_bytes()),
        StateError::Corrupt(_)
    ));
    let newer = String::from_utf8(bytes).unwrap().replacen(
        &format!("\"version\": {STATE_VERSION}"),
        "\"version\": 99",
        1,
    );
    let e = refused(newer.as_bytes());
    assert_eq!(
        e.to_string(),
        format!(
            "Hyper-V flush state version 99 is not supported (this build reads version {STATE_VERSION})"
        )
    );
    assert!(matches!(refused(b""), StateError::Corrupt(_)));
}

/// A refused restore leaves the new VM exactly as it was.
fn assert_untouched(p: &Partition, msrs: &HypervMsrs) {
    assert_eq!(msrs.hypercall_msr(), 0);
    assert_eq!(p.vp_index(1), Some(1));
    assert!(!p.has_pending(0));
    assert_eq!(p.counters().flushes_taken, 0);
}

#[test]
fn an_offload_state_is_refused_on_a_host_without_in_kernel_hyperv() {
    let m = mem();
    let (_, _, mut state) = running_vm(&m);
    // Taken where KVM served the flushes itself.
    state.config = HypervFlushConfig::default();
    state.decision.selected_mode = FlushPath::Offload;
    state.decision.l1.path = FlushPath::Offload;
    let (p, msrs) = fresh();
    let e = state
        .restore(&userspace_host(), &m, &p, Some(&msrs))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "The saved VM uses the Offload flush path; this host would serve Userspace, which the guest's CPUID does not describe"
    );
    assert_untouched(&p, &msrs);
    // mode=offload itself cannot be decided here: the refusal says why.
    state.config = HypervFlushConfig::parse("mode=offload").unwrap();
    let e = state
        .restore(&userspace_host(), &m, &p, Some(&msrs))
        .unwrap_err();
    assert!(matches!(e, StateError::HostCannotServe { .. }), "{e}");
    assert!(
        hvflush_api::error_line(&e).contains("mode=offload refused"),
        "{e}"
    );
    assert_untouched(&p, &msrs);
}

#[test]
fn another_vcpu_count_or_a_lost_hypercall_page_is_refused() {
    let m = mem();
    let (_, _, state) = running_vm(&m);
    let small = Partition::new(PartitionConfig::new(2)).unwrap();
    let e = state
        .restore(&userspace_host(), &m, &small, None)
        .unwrap_err();
    assert_eq!(e.to_string(), "The state has 4 vCPUs, the VM 2");
    let other = mem();
    let (p, msrs) = fresh();
    let e = state
        .restore(&userspace_host(), &other, &p, Some(&msrs))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "The hypercall page at 0x5000 in the restored memory does not hold the hypercall stub"
    );
    assert_untouched(&p, &msrs);
    other
        .write_slice(&hypercall_stub(0x99), GuestAddress(PAGE))
        .unwrap();
    state
        .restore(&userspace_host(), &other, &p, Some(&msrs))
        .unwrap();
}

#[test]
fn a_state_kept_as_a_json_value_is_version_checked_too() {
    let m = mem();
    let (_, _, state) = running_vm(&m);
    let mut value: serde_json::Value = serde_json::from_slice(&state.to_bytes()).unwrap();
    assert_eq!(FlushState::from_value(value.clone()).unwrap(), state);
    value["version"] = serde_json::json!(2);
    assert!(matches!(
        FlushState::from_value(value),
        Err(StateError::Version { found: 2 })
    ));
}

#[test]
fn other_features_on_the_same_path_are_named_as_such() {
    let m = mem();
    let (_, _, mut state) = running_vm(&m);
    state.decision.features.ex_masks = !state.decision.features.ex_masks;
    let (p, msrs) = fresh();
    let e = state
        .restore(&userspace_host(), &m, &p, Some(&msrs))
        .unwrap_err();
    assert!(matches!(e, StateError::FeaturesDiffer { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("The saved VM was offered the flush features"),
        "{e}"
    );
}
