//! Every status the router gives the malformed-request table is one
//! `api/openapi.yaml` documents for that request (the router answers these
//! before any service is asked, so the mock service is enough here; the
//! spec against the real service is `hvflush-vmm`'s `tests/openapi.rs`).

mod common;

use common::{TestServer, raw_exchange};
use hvflush_config::{free_port_ranges, validate_hypercall_port};
use hvflush_tests::openapi::{documented, load_spec, validate};
use serde_json::{Value, json};

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

/// The spec states the server's hypercall-port rule exactly (schemathesis
/// generates "valid" bodies from it and expects them accepted): the
/// `HypercallPort` schema takes a port iff the server does, and its
/// description lists the same free ranges as the server's errors.
#[test]
fn hypercall_port_schema_is_the_servers_rule() {
    let spec = load_spec();
    let schema = &spec["components"]["schemas"]["HypercallPort"];
    for port in 0..=300u16 {
        let spec_ok = validate(&spec, schema, &json!(port), "port").is_ok();
        assert_eq!(
            spec_ok,
            validate_hypercall_port(port).is_ok(),
            "port {port:#x}"
        );
    }
    assert!(validate(&spec, schema, &json!("0x99"), "port").is_err());
    let description = schema["description"].as_str().unwrap().replace('\n', " ");
    let listed = free_port_ranges().replace(", 0xea-0xef", " and 0xea-0xef");
    assert!(description.contains(&listed), "{description}");
    for update in ["HypervFlushUpdate", "HypervFlushConfig"] {
        assert_eq!(
            spec["components"]["schemas"][update]["properties"]["hypercall_port"]["$ref"],
            Value::from("#/components/schemas/HypercallPort")
        );
    }
}
