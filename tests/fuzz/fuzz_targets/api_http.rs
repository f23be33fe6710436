//! Raw HTTP request bytes into the REST API: the server's own connection
//! code (`hvflush_api::server::serve_connection`, what the socket's accept
//! loop runs per connection, with the default `ServerLimits`) over an
//! in-memory stream, in front of the reference VMM's real `FlushService`
//! (`VmmFlushService` over an engine `Partition`, decided for a KVM host
//! without in-kernel Hyper-V, as on CI).
//!
//! Invariants: no panic; the exchange ends without any of the server's
//! deadlines firing (the client sent everything and closed: nothing is
//! worth waiting for; tokio's clock is paused, so a wait shows as time
//! passing, not as a slow input); every answer has a status the server can
//! give (the router's, documented in api/openapi.yaml for that path and
//! method, or hyper's 400/414/431 for requests it cannot parse); the
//! router's error bodies are a non-empty error chain; a 200 body matches
//! its documented schema; and a `PUT` is accepted (2xx) only with a JSON
//! object as its body.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hvflush_api::ServerLimits;
use hvflush_api::server::serve_connection;
use hvflush_config::HypervFlushConfig;
use hvflush_tests::openapi::{documented, load_spec, resolve, validate};
use hyperv_flush::engine::{Partition, PartitionConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmm_integration::decision;
use vmm_integration::facts::{
    CpuVendor, HostFacts, KvmFacts, KvmHypervCaps, KvmUserspaceCaps, NestedFacts,
};
use vmm_integration::service::VmmFlushService;

static SPEC: LazyLock<Value> = LazyLock::new(load_spec);

/// A KVM host without in-kernel Hyper-V: the CI hosts.
fn userspace_host() -> HostFacts {
    HostFacts::kvm(KvmFacts {
        vendor: CpuVendor::Intel,
        hyperv: KvmHypervCaps::default(),
        supported_hv_cpuid: None,
        nested: NestedFacts::default(),
        userspace: KvmUserspaceCaps {
            user_space_msr: true,
            msr_filter: true,
            sync_regs: true,
            immediate_exit: true,
            pv_tlb_flush: true,
            steal_time: true,
        },
    })
}

fn service() -> Arc<VmmFlushService> {
    let config = HypervFlushConfig::default();
    let host = userspace_host();
    let decision = decision::decide(&config, &host).expect("userspace host");
    let mut pc = PartitionConfig::new(2);
    pc.offer = decision.engine_offer();
    let partition = Arc::new(Partition::new(pc).expect("2 vCPUs"));
    Arc::new(VmmFlushService::new(
        partition, decision, host, config, None,
    ))
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
}

/// The request as a client meant it: method, path (no query), body.
struct Sent<'a> {
    method: String,
    path: String,
    /// The body when it is delimited by a Content-Length the bytes hold.
    body: Option<&'a [u8]>,
}

fn parse_request(data: &[u8]) -> Option<Sent<'_>> {
    // hyper's HTTP/1 server reads up to 100 headers (its default; 431
    // beyond), so the reader must take as many.
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(data).ok()? else {
        return None;
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    let body = match (
        header("content-length").as_slice(),
        header("transfer-encoding").len(),
    ) {
        ([n], 0) => std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .and_then(|n| data.get(len..len.checked_add(n)?)),
        ([], 0) => Some(&data[len..len]),
        _ => None,
    };
    // As http::Uri reads it: the path ends at a query or a fragment.
    let path = req.path?.split(['?', '#']).next()?.to_owned();
    Some(Sent {
        method: req.method?.to_owned(),
        path,
        body,
    })
}

fn exchange(data: &[u8]) -> (Vec<u8>, Duration) {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(16 * 1024);
            let start = tokio::time::Instant::now();
            let serve = serve_connection(server, service(), ServerLimits::default());
            let talk = async {
                // The server may answer (and close) before reading it all.
                let _ = client.write_all(data).await;
                let _ = client.shutdown().await;
                let mut response = Vec::new();
                let _ = client.read_to_end(&mut response).await;
                response
            };
            let ((), response) = tokio::join!(serve, talk);
            (response, start.elapsed())
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let (response, waited) = exchange(data);
    assert!(
        waited < ServerLimits::default().header_timeout,
        "the server waited {waited:?} for a client that had sent everything"
    );
    if response.is_empty() {
        // hyper closes without an answer when no request started.
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(&response) else {
        panic!(
            "malformed response {:?}",
            String::from_utf8_lossy(&response)
        );
    };
    let status = parsed.code.expect("status code");
    let json = parsed
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-type") && h.value == b"application/json");
    let body = &response[head..];
    let from_router = json || status == 204;
    if !from_router {
        assert!(
            matches!(status, 400 | 414 | 431),
            "hyper answered {status} to {:?}",
            String::from_utf8_lossy(data)
        );
        return;
    }
    let sent = parse_request(data).expect("the router answered a request httparse reads");
    // The spec's paths are relative to its server URL, /api/v1.
    let path = match sent.path.strip_prefix("/api/v1") {
        Some(p) if p.starts_with('/') => p,
        _ => "(not under /api/v1)",
    };
    // Methods are case-sensitive (RFC 9110 §9.1): `pUT` is not PUT.
    let method = match sent.method.as_str() {
        m @ ("GET" | "PUT" | "POST" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => {
            m.to_ascii_lowercase()
        }
        _ => "x-other".to_owned(),
    };
    let responses = documented(&SPEC, path, &method);
    let Some(doc) = responses.get(&status.to_string()) else {
        panic!("{status} is not documented for {method} {path}");
    };
    let value: Option<Value> = (!body.is_empty())
        .then(|| serde_json::from_slice(body).unwrap_or_else(|e| panic!("body is not JSON: {e}")));
    if method == "head" {
        // A response to HEAD has no body (RFC 9110 §9.3.2); hyper drops it.
        assert!(body.is_empty(), "{status} to HEAD with a body");
    } else if status >= 400 {
        let chain = value
            .as_ref()
            .and_then(Value::as_array)
            .expect("an error chain");
        assert!(!chain.is_empty() && chain.iter().all(Value::is_string));
    }
    let doc = resolve(&SPEC, doc);
    if let (Some(schema), Some(v)) = (doc.pointer("/content/application~1json/schema"), &value) {
        validate(&SPEC, schema, v, "body").unwrap_or_else(|e| panic!("{status}: {e}"));
    }
    if let (true, Some(body)) = (method == "put" && (200..300).contains(&status), sent.body) {
        let v: Value = serde_json::from_slice(body).expect("an accepted body is JSON");
        assert!(
            v.is_object(),
            "PUT accepted a body that is not an object: {v}"
        );
    }
});
