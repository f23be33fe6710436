//! A blocking client of the REST API over its Unix socket (hyper's HTTP/1
//! client on a private tokio runtime). Used by `hvflush-remote`, the VMM's
//! tests and this crate's tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::model::{CountersReport, FlushInfo, PingResponse, UpdateOutcome};
use crate::service::{COUNTERS_PATH, FLUSH_PATH, PING_PATH};
use hvflush_config::HypervFlushUpdate;

/// Largest response body the client reads.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Errors of an API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The runtime could not be created.
    #[error("Cannot create the client runtime")]
    Runtime(#[source] std::io::Error),
    /// The socket could not be reached.
    #[error("Cannot connect to API socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be built (bad method or path).
    #[error("Cannot build the request")]
    Request(#[source] hyper::http::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the API server failed")]
    Http(#[source] hyper::Error),
    /// The body of the response could not be read.
    #[error("Cannot read the response body")]
    ResponseBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No answer in time.
    #[error("Timed out waiting for the API server")]
    Timeout,
    /// The server refused the request; `chain` is its error chain.
    #[error("Server answered {status}: {}", chain.join(": "))]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's error messages, outermost first.
        chain: Vec<String>,
    },
    /// A success status with a body that is not what the API documents.
    #[error("Unexpected response body (status {status})")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// A response as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Allow` header, if any.
    pub allow: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A client of one API socket.
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

impl ApiClient {
    /// A client for the socket at `socket` (nothing is connected yet).
    pub fn new(socket: impl AsRef<Path>) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Self {
            socket: socket.as_ref().to_owned(),
            timeout: Duration::from_secs(30),
            runtime,
        })
    }

    /// Sets the time allowed for one whole call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET /api/v1/vmm.ping`.
    pub fn ping(&self) -> Result<PingResponse, ClientError> {
        self.get_json(PING_PATH)
    }

    /// `GET /api/v1/vm.hyperv-flush`.
    pub fn info(&self) -> Result<FlushInfo, ClientError> {
        self.get_json(FLUSH_PATH)
    }

    /// `GET /api/v1/vm.hyperv-flush-counters`.
    pub fn counters(&self) -> Result<CountersReport, ClientError> {
        self.get_json(COUNTERS_PATH)
    }

    /// `PUT /api/v1/vm.hyperv-flush`.
    pub fn update(&self, update: &HypervFlushUpdate) -> Result<UpdateOutcome, ClientError> {
        let body = serde_json::to_vec(update)
            .map_err(|source| ClientError::Decode { status: 0, source })?;
        let response = self.request(Method::PUT, FLUSH_PATH, Some(body))?;
        match response.status {
            204 => Ok(UpdateOutcome::Applied),
            200 => decode(&response).map(UpdateOutcome::PendingUntilReboot),
            _ => Err(server_error(&response)),
        }
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.request(Method::GET, path, None)?;
        match response.status {
            200 => decode(&response),
            _ => Err(server_error(&response)),
        }
    }

    /// Sends any request and returns the response whatever its status.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let exchange = exchange(&self.socket, method, path, body);
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| ClientError::Timeout)?
        })
    }
}

fn decode<T: DeserializeOwned>(response: &RawResponse) -> Result<T, ClientError> {
    serde_json::from_slice(&response.body).map_err(|source| ClientError::Decode {
        status: response.status,
        source,
    })
}

/// The error for a non-success response: the server's chain when the body
/// is one, else the raw body text.
fn server_error(response: &RawResponse) -> ClientError {
    let chain = serde_json::from_slice::<Vec<String>>(&response.body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(&response.body).trim().to_owned();
        if text.is_empty() {
            Vec::new()
        } else {
            vec![text]
        }
    });
    ClientError::Server {
        status: response.status,
        chain,
    }
}

async fn exchange(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<RawResponse, ClientError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ClientError::Http)?;
    // The connection future drives the socket; it ends with the exchange.
    let driver = tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "localhost");
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(ClientError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(ClientError::Http)?;
    let status = response.status();
    let allow = response
        .headers()
        .get(hyper::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(ClientError::ResponseBody)?
        .to_bytes();
    driver.abort();
    Ok(RawResponse {
        status: status.as_u16(),
        allow,
        body: body.to_vec(),
    })
}
