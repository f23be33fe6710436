//! A mock `FlushService` and helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hvflush_api::model::{
    CallPath, CountersReport, Feature, FeatureState, FlushInfo, HypercallInput, LatencyReport,
    ServicePath, UpdateError, UpdateOutcome,
};
use hvflush_api::{ApiServer, FlushService, ServerLimits};
use hvflush_config::ApiSocketConfig;
use hvflush_config::{FlushMode, HypervFlushConfig, HypervFlushUpdate, L2Mode};
#[allow(unused_imports)]
pub use hvflush_tests::raw_http::{Raw, parse_raw, raw_exchange, request};

/// Why the mock refuses `l2=on` (as a KVM host without in-kernel Hyper-V would).
pub const L2_REASON: &str = "KVM lacks KVM_CAP_HYPERV_TLBFLUSH (L2 direct flush needs it)";
/// Why the mock refuses `mode=off` at run time.
pub const OFF_REASON: &str = "Mode `off` can only be chosen at boot";

/// A userspace-mode VMM in miniature: `l1` toggles at once, `mode` and
/// `vendor` changes wait for a reboot, `l2=on` is impossible.
pub struct MockService {
    pub state: Mutex<MockState>,
}

pub struct MockState {
    pub config: HypervFlushConfig,
    pub pending: Option<HypervFlushConfig>,
    pub updates: u64,
}

impl MockService {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(MockState {
                config: HypervFlushConfig::default(),
                pending: None,
                updates: 0,
            }),
        })
    }
}

fn feature(enabled: bool, effective: bool, pending: bool, reasons: &[&str]) -> FeatureState {
    FeatureState {
        enabled,
        effective,
        path: if effective {
            ServicePath::Userspace
        } else {
            ServicePath::None
        },
        pending_until_reboot: pending,
        reasons: reasons.iter().map(|s| s.to_string()).collect(),
    }
}

fn info_of(state: &MockState) -> FlushInfo {
    let c = &state.config;
    let pending = state.pending.as_ref();
    let changed = |f: fn(&HypervFlushConfig) -> bool| pending.is_some_and(|p| f(p) != f(c));
    let mut features = BTreeMap::new();
    features.insert(Feature::L1, feature(c.l1, c.l1, false, &[]));
    features.insert(
        Feature::L2,
        feature(c.l2 == L2Mode::On, false, false, &[L2_REASON]),
    );
    features.insert(
        Feature::ExMasks,
        feature(c.ex_masks, c.ex_masks && c.l1, changed(|p| p.ex_masks), &[]),
    );
    features.insert(
        Feature::XmmInput,
        feature(
            c.xmm_input,
            c.xmm_input && c.l1,
            changed(|p| p.xmm_input),
            &[],
        ),
    );
    features.insert(
        Feature::ExtendedRanges,
        feature(
            c.extended_ranges,
            c.extended_ranges && c.l1,
            changed(|p| p.extended_ranges),
            &[],
        ),
    );
    FlushInfo {
        backend: "kvm".to_owned(),
        effective_mode: FlushMode::Userspace,
        config: c.clone(),
        pending_config: state.pending.clone(),
        features,
    }
}

impl FlushService for MockService {
    fn info(&self) -> FlushInfo {
        info_of(&self.state.lock().unwrap())
    }

    fn update(&self, u: HypervFlushUpdate) -> Result<UpdateOutcome, UpdateError> {
        let mut state = self.state.lock().unwrap();
        if u.l2 == Some(L2Mode::On) {
            return Err(UpdateError::NotPossible {
                reasons: vec![L2_REASON.to_owned()],
            });
        }
        if u.mode == Some(FlushMode::Off) {
            return Err(UpdateError::Invalid {
                reasons: vec![OFF_REASON.to_owned()],
            });
        }
        state.updates += 1;
        // l1 applies at once; everything else is CPUID-visible: next boot.
        let now = HypervFlushUpdate {
            l1: u.l1,
            ..Default::default()
        };
        let later = HypervFlushUpdate { l1: None, ..u };
        state.config = now.apply_to(&state.config).unwrap();
        if later.is_empty() {
            return Ok(UpdateOutcome::Applied);
        }
        let base = state
            .pending
            .clone()
            .unwrap_or_else(|| state.config.clone());
        let next = later.apply_to(&base).unwrap();
        if next == state.config {
            state.pending = None;
            return Ok(UpdateOutcome::Applied);
        }
        state.pending = Some(next);
        Ok(UpdateOutcome::PendingUntilReboot(info_of(&state)))
    }

    fn counters(&self) -> CountersReport {
        let mut c = CountersReport::default();
        let path = CallPath::ALL[1];
        c.add_hypercalls(path, HypercallInput::Memory, 40);
        c.add_hypercalls(path, HypercallInput::Fast, 2);
        c.add_status(0, "HV_STATUS_SUCCESS", 40);
        c.add_status(6, "HV_STATUS_ACCESS_DENIED", 2);
        c.engine.targets = 120;
        c.engine.flushes_requested = 120;
        c.engine.flushes_executed = 118;
        c.engine.flush_all_fallbacks = 3;
        c.engine.kicks = 77;
        c.latency = LatencyReport {
            samples: 42,
            p50_ns: Some(15_000),
            p99_ns: Some(40_000),
        };
        c
    }
}

/// A running server on a socket in a temporary directory.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub service: Arc<MockService>,
    pub server: Option<ApiServer>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(ServerLimits::default())
    }

    pub fn start_with(limits: ServerLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let service = MockService::new();
        let config = ApiSocketConfig::parse(&format!("path={}", socket.display())).unwrap();
        let server = ApiServer::start_with_limits(&config, service.clone(), limits).unwrap();
        Self {
            dir,
            socket,
            service,
            server: Some(server),
        }
    }
}

/// One row of the malformed-request table.
pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub half_close: bool,
    pub status: u16,
    /// Substrings the error chain (or body) must contain.
    pub body_has: &'static [&'static str],
}

fn case(
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    body_has: &'static [&'static str],
) -> Case {
    Case {
        name,
        bytes,
        half_close: false,
        status,
        body_has,
    }
}

/// Requests and the status each must get, good and malformed.
pub fn table() -> Vec<Case> {
    let big = vec![b' '; 64 * 1024 + 1];
    let mut chunked_big =
        b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..80 {
        chunked_big.extend_from_slice(b"400\r\n");
        chunked_big.extend_from_slice(&[b' '; 0x400]);
        chunked_big.extend_from_slice(b"\r\n");
    }
    chunked_big.extend_from_slice(b"0\r\n\r\n");
    let mut short =
        b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"l1\":"
            .to_vec();
    short.extend_from_slice(b" true");
    vec![
        case(
            "ping",
            request("GET", "/api/v1/vmm.ping", b""),
            200,
            &["version"],
        ),
        case(
            "info",
            request("GET", "/api/v1/vm.hyperv-flush", b""),
            200,
            &["features"],
        ),
        case(
            "counters",
            request("GET", "/api/v1/vm.hyperv-flush-counters", b""),
            200,
            &["l1-list"],
        ),
        case(
            "applied",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"l1": false}"#),
            204,
            &[],
        ),
        case(
            "empty update",
            request("PUT", "/api/v1/vm.hyperv-flush", b"{}"),
            204,
            &[],
        ),
        case(
            "pending",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"ex_masks": false}"#),
            200,
            &["pending_config"],
        ),
        case(
            "not possible",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"l2": "On"}"#),
            409,
            &["Update not possible here", L2_REASON],
        ),
        case(
            "refused by service",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"mode": "Off"}"#),
            400,
            &["Invalid update", OFF_REASON],
        ),
        case(
            "bad json",
            request("PUT", "/api/v1/vm.hyperv-flush", b"{l1:"),
            400,
            &["Invalid request body", "key must be a string"],
        ),
        case(
            "truncated json",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"l1": tr"#),
            400,
            &["Invalid `l1` in request body", "EOF while parsing"],
        ),
        case(
            "empty body",
            request("PUT", "/api/v1/vm.hyperv-flush", b""),
            400,
            &["EOF while parsing"],
        ),
        case(
            "trailing data",
            request("PUT", "/api/v1/vm.hyperv-flush", b"{} []"),
            400,
            &["trailing characters"],
        ),
        case(
            "array body",
            request("PUT", "/api/v1/vm.hyperv-flush", b"[null, null]"),
            400,
            &[
                "Invalid request body",
                "invalid type: sequence, expected a JSON object",
            ],
        ),
        case(
            "null value",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"xmm_input": null}"#),
            400,
            &[
                "Invalid `xmm_input` in request body",
                "invalid type: null, expected a boolean",
            ],
        ),
        case(
            "empty array body",
            request("PUT", "/api/v1/vm.hyperv-flush", b"[]"),
            400,
            &["Invalid request body", "expected a JSON object"],
        ),
        case(
            "unknown field",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"l3": true}"#),
            400,
            &["unknown field `l3`", "expected one of"],
        ),
        case(
            "wrong type",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"l1": "on"}"#),
            400,
            &["`l1`", "expected a boolean"],
        ),
        case(
            "unknown variant",
            request("PUT", "/api/v1/vm.hyperv-flush", br#"{"mode": "Fast"}"#),
            400,
            &["`mode`", "unknown variant `Fast`", "`Userspace`"],
        ),
        case(
            "reserved port",
            request(
                "PUT",
                "/api/v1/vm.hyperv-flush",
                br#"{"hypercall_port": 112}"#,
            ),
            400,
            &[
                "Invalid hyperv_flush update",
                "`hypercall_port`",
                "RTC/CMOS",
                "allowed",
            ],
        ),
        case(
            "port too large",
            request(
                "PUT",
                "/api/v1/vm.hyperv-flush",
                br#"{"hypercall_port": 256}"#,
            ),
            400,
            &["Above 0xff"],
        ),
        case(
            "port out of u16",
            request(
                "PUT",
                "/api/v1/vm.hyperv-flush",
                br#"{"hypercall_port": 70000}"#,
            ),
            400,
            &["`hypercall_port`"],
        ),
        case(
            "oversized body",
            request("PUT", "/api/v1/vm.hyperv-flush", &big),
            413,
            &["larger than 65536 bytes"],
        ),
        case(
            "oversized chunked body",
            chunked_big,
            413,
            &["larger than 65536 bytes"],
        ),
        Case {
            name: "truncated body",
            bytes: short,
            half_close: true,
            status: 400,
            body_has: &["Cannot read request body"],
        },
        case(
            "wrong method on config",
            request("DELETE", "/api/v1/vm.hyperv-flush", b""),
            405,
            &["Method DELETE not allowed"],
        ),
        case(
            "wrong method on ping",
            request("POST", "/api/v1/vmm.ping", b"{}"),
            405,
            &["Method POST not allowed"],
        ),
        case(
            "wrong method on counters",
            request("PUT", "/api/v1/vm.hyperv-flush-counters", b"{}"),
            405,
            &["not allowed"],
        ),
        case(
            "unknown path",
            request("GET", "/api/v1/vm.nope", b""),
            404,
            &["Unknown path /api/v1/vm.nope"],
        ),
        case("root", request("GET", "/", b""), 404, &["Unknown path /"]),
        case(
            "query string ignored",
            request("GET", "/api/v1/vmm.ping?x=1", b""),
            200,
            &["version"],
        ),
    ]
}
