//! Every built-in workload, and an external image, on a real KVM guest
//! through the VMM library, on the userspace path whatever the host offers.
//! Skips (see `hvflush_tests::skip`) without /dev/kvm.

mod common;

use std::time::Duration;

use hvflush_config::{FlushMode, HypervFlushConfig};
use hvflush_tests::have_kvm as kvm_available;
use hvflush_vmm::guest::{Workload, image};
use hvflush_vmm::vmm::{self, GuestProgram, RunOptions, RunReport};
use hyperv_flush::abi::HvStatus;
use hyperv_flush::decode::FlushCall;
use hyperv_flush::engine::{HypercallKind, InputKind, Level};

fn run(options: RunOptions) -> RunReport {
    let report = vmm::run(&options).expect("the VM runs");
    eprint!("{}", report.to_table());
    report
}

fn options(workload: Workload, vcpus: u32) -> RunOptions {
    RunOptions {
        vcpus,
        // The path under test: `auto` would pick offload on a host whose
        // KVM has in-kernel Hyper-V.
        flush: HypervFlushConfig {
            mode: FlushMode::Userspace,
            ..HypervFlushConfig::default()
        },
        program: GuestProgram::Builtin(workload),
        echo_console: false,
        timeout: Duration::from_secs(120),
        ..Default::default()
    }
}

#[test]
fn smoke_serves_every_call_kind() {
    if !kvm_available() {
        return;
    }
    let report = run(options(Workload::Smoke, 4));
    assert!(report.passed(), "{:?}", report.failure());
    let c = &report.counters;
    assert_eq!(c.with_status(HvStatus::SUCCESS), c.total_hypercalls());
    common::assert_every_l1_kind_called(&report, 4);
    assert_eq!(c.flushes_requested, c.targets);
    assert!(c.flushes_executed > 0);
    assert_eq!(report.mode, "userspace");
}

/// The gate totals the guest printed: (#UD for refused calls, #GP,
/// -KVM_ENOSYS answers, ring-3 calls the host CPU refused).
fn guest_gate_totals(report: &RunReport) -> (u64, u64, u64, u64) {
    let line = report.console[0]
        .iter()
        .find_map(|l| l.strip_prefix("conformance: gates "))
        .unwrap_or_else(|| panic!("no gate line: {:?}", report.console[0]))
        .to_string();
    let value = |key: &str| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key).expect(key);
        let hex = words.next().expect("value").trim_start_matches("0x");
        u64::from_str_radix(hex, 16).expect("hex")
    };
    (
        value("ud"),
        value("gp"),
        value("enosys"),
        value("ring3-host-gp"),
    )
}

// conformance: R35 R36 R37
#[test]
fn conformance_cases_pass_in_the_guest() {
    if !kvm_available() {
        return;
    }
    for vcpus in [1, 2, 4] {
        let report = run(options(Workload::Conformance, vcpus));
        assert!(report.passed(), "{vcpus} vCPUs: {:?}", report.failure());
        let c = &report.counters;
        for status in [
            HvStatus::INVALID_HYPERCALL_CODE,
            HvStatus::INVALID_HYPERCALL_INPUT,
            HvStatus::INVALID_ALIGNMENT,
        ] {
            assert!(c.with_status(status) > 0, "no {} case ran", status.name());
        }
        assert!(
            c.flush_all_fallbacks > 0,
            "a List of more than 15 entries ran"
        );
        // The guest's own totals: its IDT caught each fault.
        let (ud, gp, enosys, ring3_host_gp) = guest_gate_totals(&report);
        // The compatibility-mode call at least; the ring-3 call too where
        // the host lets ring 3 reach the port.
        assert!(ud >= 1, "{vcpus} vCPUs: no #UD caught");
        assert_eq!(ud + ring3_host_gp, 2, "both refused calls faulted");
        // 10 MSRs read and written, and ring 3 with IOPL 0 at the port.
        assert_eq!(gp, 20 + 1 + ring3_host_gp);
        assert_eq!(enosys, 1);
        // ... and they are exactly what the VMM refused.
        assert_eq!(c.invalid_opcode_injections, ud);
        assert_eq!(c.calls_without_guest_os_id, enosys);
    }
}

#[test]
fn conformance_with_vp_indices_across_banks() {
    if !kvm_available() {
        return;
    }
    // VP indices 0, 40, 80, 120: sparse Ex sets span two banks.
    let mut opts = options(Workload::Conformance, 4);
    opts.vp_index_stride = 40;
    let report = run(opts);
    assert!(report.passed(), "{:?}", report.failure());
}

/// Without Ex masks every Ex case must be refused with ACCESS_DENIED, and
/// without XMM fast input every fast flush with INVALID_HYPERCALL_INPUT: the
/// guest checks each status against what CPUID offers it.
#[test]
fn conformance_follows_what_is_offered() {
    if !kvm_available() {
        return;
    }
    for (ex_masks, xmm_input) in [(false, true), (true, false), (false, false)] {
        let mut opts = options(Workload::Conformance, 3);
        opts.flush.ex_masks = ex_masks;
        opts.flush.xmm_input = xmm_input;
        opts.vp_index_stride = 40;
        let report = run(opts);
        assert!(
            report.passed(),
            "ex_masks={ex_masks} xmm_input={xmm_input}: {:?}",
            report.failure()
        );
    }
}

/// Smoke and storm make only the calls CPUID offers: without Ex masks and
/// XMM input, only memory-input Space and List reach the VMM.
#[test]
fn smoke_and_storm_skip_what_is_not_offered() {
    if !kvm_available() {
        return;
    }
    for workload in [Workload::Smoke, Workload::Storm] {
        let mut opts = options(workload, 3);
        opts.flush.ex_masks = false;
        opts.flush.xmm_input = false;
        opts.vp_index_stride = 64;
        if workload == Workload::Storm {
            opts.duration = Some(Duration::from_secs(2));
        }
        let report = run(opts);
        assert!(report.passed(), "{workload:?}: {:?}", report.failure());
        let c = &report.counters;
        let offered: u64 = HypercallKind::all()
            .filter(|k| {
                k.level == Level::L1
                    && k.input == InputKind::Memory
                    && matches!(k.call, FlushCall::Space | FlushCall::List)
            })
            .map(|k| c.path(k))
            .sum();
        assert!(offered > 0, "{workload:?} made no call");
        assert_eq!(offered, c.total_hypercalls(), "{workload:?}: {c:?}");
        assert_eq!(c.with_status(HvStatus::SUCCESS), c.total_hypercalls());
    }
}

#[test]
fn storm_runs_until_the_vmm_stops_it() {
    if !kvm_available() {
        return;
    }
    let mut opts = options(Workload::Storm, 4);
    opts.duration = Some(Duration::from_secs(2));
    let report = run(opts);
    assert!(report.passed(), "{:?}", report.failure());
    let c = &report.counters;
    assert_eq!(c.with_status(HvStatus::SUCCESS), c.total_hypercalls());
    assert!(c.kicks > 0, "running targets were kicked");
    assert_eq!(c.unresponsive_vcpus, 0);
    let json = report.to_json();
    for key in ["passed", "vcpus", "hypercalls", "counters"] {
        assert!(json.get(key).is_some(), "JSON lacks {key}");
    }
    assert!(json["hypercalls"]["by_call"].is_object());
    assert!(json["hypercalls"]["by_status"].is_object());
    for (name, _) in hvflush_api::EngineCounters::FIELDS {
        assert!(json["counters"][name].is_u64(), "{name}");
    }
}

#[test]
fn external_image_runs_like_a_builtin() {
    if !kvm_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hvflush-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("smoke.bin");
    std::fs::write(&path, image(Workload::Smoke)).unwrap();
    let mut opts = options(Workload::Smoke, 2);
    opts.program = GuestProgram::Image(path.clone());
    let report = run(opts);
    std::fs::remove_dir_all(&dir).ok();
    assert!(report.passed(), "{:?}", report.failure());
    assert!(report.program.ends_with("smoke.bin"));
}

#[test]
fn a_failing_guest_fails_the_run_with_its_vcpu_and_code() {
    if !kvm_available() {
        return;
    }
    // The guest checks for "Microsoft Hv": with mode=off it is absent, so
    // every vCPU must fail with a code instead of hanging or passing.
    let mut opts = options(Workload::Smoke, 2);
    opts.flush = hvflush_config::HypervFlushConfig::parse("mode=off").unwrap();
    let report = run(opts);
    assert!(!report.passed());
    assert!(report.failure().unwrap().contains("vCPU"));
}

#[test]
fn an_image_that_never_ends_times_out() {
    if !kvm_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hvflush-spin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spin.bin");
    // `jmp $` (EB FE): the smallest guest that never ends.
    std::fs::write(&path, [0xeb, 0xfe]).unwrap();
    let mut opts = options(Workload::Smoke, 2);
    opts.program = GuestProgram::Image(path);
    opts.timeout = Duration::from_secs(1);
    let report = run(opts);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!report.passed());
    assert!(report.failure().unwrap().contains("timeout"));
}

fn bench_run(vcpus: u32, running_targets: u64) -> RunReport {
    let mut opts = options(Workload::Bench, vcpus);
    // The trap phase (before any flush) gives idle vCPUs time to exit.
    opts.iterations = 200;
    opts.param = running_targets;
    opts.stop_on_marker = Some(hvflush_vmm::guest::layout::marker::HYPERCALL_END);
    run(opts)
}

#[test]
fn targets_outside_kvm_run_are_never_kicked() {
    if !kvm_available() {
        return;
    }
    // The other vCPUs exit at once: every flush targets vCPUs that are
    // outside KVM_RUN, which must be queued for, never kicked or waited on.
    let report = bench_run(3, 0);
    assert!(report.passed(), "{:?}", report.failure());
    let c = &report.counters;
    assert!(c.targets >= 400, "every call targeted the two idle vCPUs");
    assert_eq!(c.kicks, 0, "idle targets were kicked");
}

#[test]
fn running_targets_are_kicked_and_take_their_flush() {
    if !kvm_available() {
        return;
    }
    let report = bench_run(2, 1);
    assert!(report.passed(), "{:?}", report.failure());
    let c = &report.counters;
    // The target spins in the guest from before the first call (the boot
    // code releases every vCPU together): that call finds it in KVM_RUN and
    // must kick it. How many later calls do depends on the host scheduler
    // (a kicked target may still be outside when the next call comes, and
    // then takes the flush on its way in), so only the protocol is checked.
    assert!(c.kicks >= 1, "the spinning target was never kicked");
    assert!(c.flushes_taken >= 1, "the target never took its flush");
    assert!(c.flushes_executed <= c.flushes_taken);
    assert_eq!(c.unresponsive_vcpus, 0);
}

#[test]
fn kvm_counts_every_flush_the_userspace_path_executed() {
    if !kvm_available() {
        return;
    }
    let machine = vmm::Machine::create(&options(Workload::Smoke, 4)).expect("the VM builds");
    let kernel = std::sync::Arc::clone(machine.kernel_counters());
    let report = machine.run().expect("the VM runs");
    assert!(report.passed(), "{:?}", report.failure());
    let k = kernel.read();
    assert!(k.limitations.is_empty(), "{:?}", k.limitations);
    // KVM's `tlb_flush` statistic counts the flushes it performed for the
    // steal-time requests (and may count flushes of its own).
    let flushed = k.tlb_flushes.expect("KVM has the tlb_flush statistic");
    assert!(
        flushed >= report.counters.flushes_executed,
        "KVM flushed {flushed} times, the engine executed {}",
        report.counters.flushes_executed
    );
    // No flush hypercall reached the kernel: userspace served them all.
    assert_eq!(k.hypercalls, Some(0));
}
