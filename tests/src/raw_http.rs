//! Raw HTTP/1.1 over a Unix socket, for tests that must send what no
//! client library would (malformed requests, half-closed connections).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A parsed raw HTTP response.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends raw bytes and reads until the server closes (it never keeps a
/// connection alive). `None` when the server closed without answering.
pub fn raw_exchange(socket: &Path, bytes: &[u8], half_close: bool) -> Option<Raw> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut response = Vec::new();
    // A reset after the answer is fine: keep what arrived.
    let _ = stream.read_to_end(&mut response);
    parse_raw(&response)
}

/// Splits an HTTP/1.1 response (Content-Length bodies only).
pub fn parse_raw(response: &[u8]) -> Option<Raw> {
    let text_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..text_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Raw {
        status,
        headers,
        body: response[text_end + 4..].to_vec(),
    })
}

/// A request with a body and Content-Length.
pub fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}
