//! The REST server against a mock service: the malformed-request table,
//! hostile clients, and the socket's life cycle.

mod common;

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::{L2_REASON, TestServer, raw_exchange, table};
use hvflush_api::client::ApiClient;
use hvflush_api::server::ListenerError;
use hvflush_api::{ApiServer, ApiServerError, ServerLimits};
use hvflush_config::ApiSocketConfig;

#[test]
fn malformed_request_table() {
    let server = TestServer::start();
    let client = ApiClient::new(&server.socket).unwrap();
    for case in table() {
        let raw = raw_exchange(&server.socket, &case.bytes, case.half_close)
            .unwrap_or_else(|| panic!("{}: no response", case.name));
        assert_eq!(
            raw.status,
            case.status,
            "{}: {:?}",
            case.name,
            String::from_utf8_lossy(&raw.body)
        );
        let body = String::from_utf8_lossy(&raw.body);
        for needle in case.body_has {
            assert!(
                body.contains(needle),
                "{}: `{needle}` not in {body}",
                case.name
            );
        }
        if case.status >= 400 {
            // Error bodies are the JSON array of the error chain.
            let chain: Vec<String> = serde_json::from_slice(&raw.body)
                .unwrap_or_else(|e| panic!("{}: not a chain: {e}: {body}", case.name));
            assert!(!chain.is_empty(), "{}", case.name);
        }
        if case.status == 405 {
            assert!(
                raw.headers.iter().any(|(k, _)| k == "allow"),
                "{}: no Allow",
                case.name
            );
        }
        // The server keeps serving after each case.
        client
            .ping()
            .unwrap_or_else(|e| panic!("after {}: {e}", case.name));
    }
}

#[test]
fn runtime_toggle_round_trip_through_client() {
    let server = TestServer::start();
    let client = ApiClient::new(&server.socket).unwrap();
    let off = hvflush_config::HypervFlushUpdate::parse("l1=off").unwrap();
    assert_eq!(
        client.update(&off).unwrap(),
        hvflush_api::model::UpdateOutcome::Applied
    );
    let info = client.info().unwrap();
    assert!(!info.config.l1);
    assert!(!info.features[&hvflush_api::model::Feature::L1].effective);
    let on = hvflush_config::HypervFlushUpdate::parse("l1=on").unwrap();
    client.update(&on).unwrap();
    assert!(client.info().unwrap().config.l1);
    let err = client
        .update(&hvflush_config::HypervFlushUpdate::parse("l2=on").unwrap())
        .unwrap_err();
    match err {
        hvflush_api::ClientError::Server { status, chain } => {
            assert_eq!(status, 409);
            assert_eq!(
                chain,
                vec!["Update not possible here".to_owned(), L2_REASON.to_owned()]
            );
        }
        other => panic!("unexpected {other}"),
    }
    let counters = client.counters().unwrap();
    assert_eq!(counters.total_hypercalls(), 42);
    assert_eq!(counters.statuses["0x0006"].name, "HV_STATUS_ACCESS_DENIED");
}

#[test]
fn concurrent_clients_are_all_served() {
    let server = TestServer::start();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let socket = server.socket.clone();
            std::thread::spawn(move || {
                let client = ApiClient::new(&socket).unwrap();
                for _ in 0..10 {
                    if i % 2 == 0 {
                        client.counters().unwrap();
                    } else {
                        client
                            .update(&hvflush_config::HypervFlushUpdate::parse("l1=on").unwrap())
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.service.state.lock().unwrap().updates, 40);
}

#[test]
fn stalled_and_vanishing_clients_block_nobody() {
    let server = TestServer::start();
    let client = ApiClient::new(&server.socket).unwrap();
    // Half a request line, then silence: held open while others are served.
    let mut stalled = UnixStream::connect(&server.socket).unwrap();
    stalled
        .write_all(b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost")
        .unwrap();
    // Headers complete, body promised and never sent.
    let mut no_body = UnixStream::connect(&server.socket).unwrap();
    no_body
        .write_all(
            b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{",
        )
        .unwrap();
    client.ping().unwrap();
    client.info().unwrap();
    // Disconnecting mid-request.
    for prefix in [
        &b"GE"[..],
        b"GET /api/v1/vmm.ping HTTP/1.1\r\n",
        b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"l1\"",
    ] {
        let mut s = UnixStream::connect(&server.socket).unwrap();
        s.write_all(prefix).unwrap();
        drop(s);
        client.ping().unwrap();
    }
    drop(stalled);
    drop(no_body);
    client.counters().unwrap();
}

#[test]
fn slow_clients_are_cut_off() {
    let limits = ServerLimits {
        header_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_millis(200),
        connection_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let server = TestServer::start_with(limits);
    // The server closes (or answers) without waiting for us forever: the
    // read below ends because the server ends the connection.
    let r = raw_exchange(
        &server.socket,
        b"GET /api/v1/vmm.ping HTTP/1.1\r\nHo",
        false,
    );
    assert!(r.is_none_or(|r| r.status >= 400));
    let r = raw_exchange(
        &server.socket,
        b"PUT /api/v1/vm.hyperv-flush HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{",
        false,
    )
    .expect("answer");
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Timed out reading request body"));
    ApiClient::new(&server.socket).unwrap().ping().unwrap();
}

#[test]
fn socket_is_private_and_removed_at_shutdown() {
    let mut server = TestServer::start();
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        server.server.as_ref().unwrap().socket_path(),
        Some(server.socket.as_path())
    );
    server.server.take().unwrap().shutdown();
    assert!(!server.socket.exists());
}

fn config(path: &std::path::Path) -> ApiSocketConfig {
    ApiSocketConfig::parse(&format!("path={}", path.display())).unwrap()
}

#[test]
fn live_socket_refused_stale_socket_replaced() {
    let server = TestServer::start();
    let err = ApiServer::start(&config(&server.socket), common::MockService::new())
        .err()
        .expect("live socket must be refused");
    assert!(
        matches!(err, ApiServerError::Listener(ListenerError::InUse(_))),
        "{err:?}"
    );
    // The refused attempt left the live server alone.
    ApiClient::new(&server.socket).unwrap().ping().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let replacement = ApiServer::start(&config(&stale), common::MockService::new()).unwrap();
    ApiClient::new(&stale).unwrap().ping().unwrap();
    replacement.shutdown();

    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = ApiServer::start(&config(&file), common::MockService::new())
        .err()
        .expect("a regular file must be refused");
    assert!(matches!(
        err,
        ApiServerError::Listener(ListenerError::NotASocket(_))
    ));
    assert!(file.exists());
}

#[test]
fn inherited_fd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
    let cfg = ApiSocketConfig::parse(&format!("fd={fd}")).unwrap();
    let server = ApiServer::start(&cfg, common::MockService::new()).unwrap();
    assert_eq!(server.socket_path(), None);
    ApiClient::new(&path).unwrap().ping().unwrap();
    server.shutdown();

    // A regular file's fd is not a socket; it is left open for its owner.
    let file = std::fs::File::create(dir.path().join("f")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let err = ApiServer::start(
        &ApiSocketConfig::parse(&format!("fd={fd}")).unwrap(),
        common::MockService::new(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, ApiServerError::Listener(ListenerError::BadFd { .. })),
        "{err:?}"
    );
    drop(file);
}
