//! Checks the running server (mock service) against `api/openapi.yaml`:
//! every documented status is reached, nothing undocumented comes back,
//! and every body has the documented shape.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, raw_exchange, request};
use serde_json::Value;

fn load_spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                spec,
                spec.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => node,
    }
}

/// Checks `value` against the subset of OpenAPI 3.0 schema used by the spec;
/// returns the first mismatch.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!("{at}: null"))
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    let in_range = |n: f64| {
        schema["minimum"].as_f64().is_none_or(|m| n >= m)
            && schema["maximum"].as_f64().is_none_or(|m| n <= m)
    };
    match schema["type"].as_str() {
        Some("string") if value.is_string() => Ok(()),
        Some("boolean") if value.is_boolean() => Ok(()),
        Some("integer") if value.is_i64() || value.is_u64() => {
            if in_range(value.as_f64().unwrap()) {
                Ok(())
            } else {
                Err(format!("{at}: {value} out of range"))
            }
        }
        Some("array") => {
            let items = value.as_array().ok_or(format!("{at}: not an array"))?;
            if items.len() < schema["minItems"].as_u64().unwrap_or(0) as usize {
                return Err(format!("{at}: too few items"));
            }
            for (i, item) in items.iter().enumerate() {
                validate(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Some("object") => {
            let obj = value.as_object().ok_or(format!("{at}: not an object"))?;
            let props = schema.get("properties").and_then(Value::as_object);
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !obj.contains_key(key) {
                    return Err(format!("{at}: `{key}` missing"));
                }
            }
            for (key, v) in obj {
                let path = format!("{at}.{key}");
                match props.and_then(|p| p.get(key)) {
                    Some(s) => validate(spec, s, v, &path)?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => return Err(format!("{path}: undocumented")),
                        Some(s) if s.is_object() => validate(spec, s, v, &path)?,
                        _ => {}
                    },
                }
            }
            Ok(())
        }
        other => Err(format!("{at}: {value} is not of type {other:?}")),
    }
}

/// The documented responses of one path and method (`x-other-methods` for
/// a method the path does not list, `x-unknown-paths` for an unknown path).
fn documented<'a>(spec: &'a Value, path: &str, method: &str) -> &'a serde_json::Map<String, Value> {
    let Some(item) = spec["paths"].get(path) else {
        return spec["x-unknown-paths"]["responses"].as_object().unwrap();
    };
    match item.get(method) {
        Some(op) => op["responses"].as_object().unwrap(),
        None => item["x-other-methods"]["responses"].as_object().unwrap(),
    }
}

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
        p("put", "/vm.hyperv-flush", br#"{"mode": "Off"}"#, 400),
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
    let server = TestServer::start();
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
fn malformed_table_statuses_are_documented() {
    let spec = load_spec();
    let server = TestServer::start();
    for case in common::table() {
        let line = String::from_utf8_lossy(
            &case.bytes[..case.bytes.iter().position(|b| *b == b'\r').unwrap()],
        )
        .into_owned();
        let mut words = line.split(' ');
        let method = words.next().unwrap().to_ascii_lowercase();
        let url = words.next().unwrap();
        let path = url
            .split('?')
            .next()
            .unwrap()
            .strip_prefix("/api/v1")
            .unwrap_or(url);
        let raw = raw_exchange(&server.socket, &case.bytes, case.half_close).unwrap();
        let responses = documented(&spec, path, &method);
        assert!(
            responses.contains_key(&raw.status.to_string()),
            "{}: {} undocumented for {method} {path}",
            case.name,
            raw.status
        );
    }
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
    let full = hvflush_api::HypervFlushUpdate::from(&hvflush_api::HypervFlushConfig::default());
    let json = serde_json::to_value(&full).unwrap();
    let actual: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, actual);
    validate(&spec, schema, &json, "update").unwrap();
    let config_schema = &spec["components"]["schemas"]["HypervFlushConfig"];
    validate(
        &spec,
        config_schema,
        &serde_json::to_value(hvflush_api::HypervFlushConfig::default()).unwrap(),
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
