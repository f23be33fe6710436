//! Every status the router gives the malformed-request table is one
//! `api/openapi.yaml` documents for that request (the router answers these
//! before any service is asked, so the mock service is enough here; the
//! spec against the real service is `hvflush-vmm`'s `tests/openapi.rs`).

mod common;

use common::{TestServer, raw_exchange};
use hvflush_tests::openapi::{documented, load_spec};

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
