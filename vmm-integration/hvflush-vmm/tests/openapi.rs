//! Checks the reference VMM's REST API (the real service, on a running
//! storm guest) against `api/openapi.yaml`: every documented status is
//! reached, nothing undocumented comes back, and every body has the
//! documented shape.

mod common;

use std::collections::BTreeSet;

use common::{Vmm, setup};
use hvflush_tests::openapi::{documented, load_spec, resolve, validate};
use hvflush_tests::raw_http::{raw_exchange, request};
use serde_json::Value;

struct Probe {
    method: &'static str,
    path: &'static str,
    body: &'static [u8],
    status: u16,
}

fn probes() -> Vec<Probe> {
    let p = |method, path, body: &'static [u8], status| Probe {
        method,
        path,
        body,
        status,
    };
    vec![
        p("get", "/vmm.ping", b"", 200),
        p("post", "/vmm.ping", b"", 405),
        p("get", "/vm.hyperv-flush", b"", 200),
        p("put", "/vm.hyperv-flush", br#"{"l1": false}"#, 204),
        p("put", "/vm.hyperv-flush", br#"{"vendor": "Kvm"}"#, 200),
        p("get", "/vm.hyperv-flush", b"", 200),
        p("put", "/vm.hyperv-flush", br#"{"l1": 1}"#, 400),
        p("put", "/vm.hyperv-flush", br#"{"nope": 1}"#, 400),
        p(
            "put",
            "/vm.hyperv-flush",
            br#"{"hypercall_port": 128}"#,
            400,
        ),
        p("put", "/vm.hyperv-flush", br#"{"mode": "Off"}"#, 200),
        p("put", "/vm.hyperv-flush", br#"{"l2": "On"}"#, 409),
        p("put", "/vm.hyperv-flush", &[b'{'; 70_000], 413),
        p("patch", "/vm.hyperv-flush", b"{}", 405),
        p("delete", "/vm.hyperv-flush", b"", 405),
        p("get", "/vm.hyperv-flush-counters", b"", 200),
        p("put", "/vm.hyperv-flush-counters", b"{}", 405),
        p("get", "/vm.unknown", b"", 404),
        p("get", "/vmm.shutdown", b"", 404),
    ]
}

#[test]
fn server_matches_openapi_spec() {
    let spec = load_spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let base = spec["servers"][0]["url"].as_str().unwrap();
    let prefix = base.strip_prefix("http://localhost").unwrap();
    let Some(binary) = setup() else { return };
    let server = Vmm::start(&binary, "openapi", 120).unwrap_or_else(|e| panic!("{e}"));
    let mut reached: BTreeSet<(String, String, String)> = BTreeSet::new();
    for probe in probes() {
        let url = format!("{prefix}{}", probe.path);
        let raw = raw_exchange(
            &server.socket,
            &request(&probe.method.to_ascii_uppercase(), &url, probe.body),
            false,
        )
        .unwrap_or_else(|| panic!("{} {url}: no answer", probe.method));
        let what = format!("{} {url} -> {}", probe.method, raw.status);
        assert_eq!(
            raw.status,
            probe.status,
            "{what}: {}",
            String::from_utf8_lossy(&raw.body)
        );
        let responses = documented(&spec, probe.path, probe.method);
        let status = raw.status.to_string();
        let response = resolve(
            &spec,
            responses
                .get(&status)
                .unwrap_or_else(|| panic!("{what}: undocumented status")),
        );
        match response.pointer("/content/application~1json/schema") {
            Some(schema) => {
                let body: Value =
                    serde_json::from_slice(&raw.body).unwrap_or_else(|e| panic!("{what}: {e}"));
                validate(&spec, schema, &body, "body").unwrap_or_else(|e| panic!("{what}: {e}"));
                let ct = raw
                    .headers
                    .iter()
                    .find(|(k, _)| k == "content-type")
                    .map(|(_, v)| v.as_str());
                assert_eq!(ct, Some("application/json"), "{what}");
            }
            None => assert!(raw.body.is_empty(), "{what}: body not documented"),
        }
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for name in headers.keys() {
                let lower = name.to_ascii_lowercase();
                assert!(
                    raw.headers.iter().any(|(k, _)| *k == lower),
                    "{what}: no {name} header"
                );
            }
        }
        let key_path = if spec["paths"].get(probe.path).is_some() {
            probe.path
        } else {
            "?"
        };
        let key_method = if spec["paths"]
            .get(key_path)
            .and_then(|i| i.get(probe.method))
            .is_some()
        {
            probe.method
        } else {
            "?"
        };
        reached.insert((key_path.to_owned(), key_method.to_owned(), status));
    }
    // Every documented status was reached.
    let mut all: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let (m, responses) = if method == "x-other-methods" {
                ("?", &op["responses"])
            } else {
                (method.as_str(), &op["responses"])
            };
            for status in responses.as_object().unwrap().keys() {
                all.insert((path.clone(), m.to_owned(), status.clone()));
            }
        }
    }
    for status in spec["x-unknown-paths"]["responses"]
        .as_object()
        .unwrap()
        .keys()
    {
        all.insert(("?".to_owned(), "?".to_owned(), status.clone()));
    }
    let missing: Vec<_> = all.difference(&reached).collect();
    assert!(
        missing.is_empty(),
        "documented but never reached: {missing:?}"
    );
}

#[test]
fn request_body_schema_matches_the_update_type() {
    // Every key the spec documents for the update parses, and every key the
    // type has is documented: the two cannot drift.
    let spec = load_spec();
    let schema = &spec["components"]["schemas"]["HypervFlushUpdate"];
    let documented: BTreeSet<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let full =
        hvflush_config::HypervFlushUpdate::from(&hvflush_config::HypervFlushConfig::default());
    let json = serde_json::to_value(&full).unwrap();
    let actual: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, actual);
    validate(&spec, schema, &json, "update").unwrap();
    let config_schema = &spec["components"]["schemas"]["HypervFlushConfig"];
    validate(
        &spec,
        config_schema,
        &serde_json::to_value(hvflush_config::HypervFlushConfig::default()).unwrap(),
        "config",
    )
    .unwrap();
    // The checker itself rejects what it should.
    assert!(validate(&spec, schema, &serde_json::json!({"l1": "on"}), "x").is_err());
    assert!(validate(&spec, schema, &serde_json::json!({"l3": true}), "x").is_err());
    assert!(
        validate(
            &spec,
            schema,
            &serde_json::json!({"hypercall_port": 256}),
            "x"
        )
        .is_err()
    );
}

/// The spec's counters are the engine's counter set, all required.
#[test]
fn counters_schema_lists_every_engine_counter() {
    let spec = load_spec();
    let schema = &spec["components"]["schemas"]["CountersReport"];
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (name, _) in hvflush_api::EngineCounters::FIELDS {
        assert!(
            schema["properties"].get(*name).is_some(),
            "{name} not in the spec"
        );
        assert!(required.contains(name), "{name} not required");
    }
}
