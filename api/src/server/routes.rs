//! Request routing and the endpoint handlers. Every failure becomes a
//! status and a JSON array of the error chain, as in Cloud Hypervisor.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use hvflush_config::{ConfigError, HypervFlushUpdate};

use super::ServerLimits;
use crate::model::{PingResponse, UpdateError, UpdateOutcome};
use crate::service::{COUNTERS_PATH, FLUSH_PATH, FlushService, PING_PATH};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("Unknown path {0}")]
    NotFound(String),
    #[error("Method {method} not allowed on {path}")]
    MethodNotAllowed {
        method: Method,
        path: &'static str,
        allow: &'static str,
    },
    #[error("Request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("Cannot read request body")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("Timed out reading request body")]
    BodyTimeout,
    #[error("Invalid request body")]
    BadJson(#[source] serde_json::Error),
    #[error("Invalid `{field}` in request body")]
    BadField {
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Invalid hyperv_flush update")]
    InvalidUpdate(#[source] ConfigError),
    #[error(transparent)]
    Update(UpdateError),
}

impl RequestError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_)
            | Self::BodyTimeout
            | Self::BadJson(_)
            | Self::BadField { .. }
            | Self::InvalidUpdate(_) => StatusCode::BAD_REQUEST,
            Self::Update(UpdateError::Invalid { .. }) => StatusCode::BAD_REQUEST,
            Self::Update(UpdateError::NotPossible { .. }) => StatusCode::CONFLICT,
        }
    }

    /// The messages of this error and its sources, outermost first.
    fn chain(&self) -> Vec<String> {
        if let Self::Update(e) = self {
            return e.chain();
        }
        crate::error_chain(self)
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json_response(self.status(), &self.chain());
        if let Self::MethodNotAllowed { allow, .. } = self {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    // Our model types always serialise; the fallback keeps this panic-free.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"[]".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn no_content() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Serves one request; never fails at the HTTP level.
pub(crate) async fn handle(
    req: Request<Incoming>,
    service: Arc<dyn FlushService>,
    limits: ServerLimits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(route(req, service.as_ref(), limits)
        .await
        .unwrap_or_else(RequestError::into_response))
}

async fn route(
    req: Request<Incoming>,
    service: &dyn FlushService,
    limits: ServerLimits,
) -> Result<Response<Full<Bytes>>, RequestError> {
    let not_allowed = |path, allow| RequestError::MethodNotAllowed {
        method: req.method().clone(),
        path,
        allow,
    };
    match (req.uri().path(), req.method()) {
        (PING_PATH, &Method::GET) => Ok(json_response(
            StatusCode::OK,
            &PingResponse {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
            },
        )),
        (PING_PATH, _) => Err(not_allowed(PING_PATH, "GET")),
        (FLUSH_PATH, &Method::GET) => Ok(json_response(StatusCode::OK, &service.info())),
        (FLUSH_PATH, &Method::PUT) => {
            let update = read_update(req, limits).await?;
            update.validate().map_err(RequestError::InvalidUpdate)?;
            match service.update(update).map_err(RequestError::Update)? {
                UpdateOutcome::Applied => Ok(no_content()),
                UpdateOutcome::PendingUntilReboot(info) => Ok(json_response(StatusCode::OK, &info)),
            }
        }
        (FLUSH_PATH, _) => Err(not_allowed(FLUSH_PATH, "GET, PUT")),
        (COUNTERS_PATH, &Method::GET) => Ok(json_response(StatusCode::OK, &service.counters())),
        (COUNTERS_PATH, _) => Err(not_allowed(COUNTERS_PATH, "GET")),
        (other, _) => Err(RequestError::NotFound(truncate(other))),
    }
}

/// Echoes at most 128 bytes of a client-given path in an error.
fn truncate(path: &str) -> String {
    let mut end = path.len().min(128);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

/// Reads the body (capped, with a deadline) and parses it as an update.
async fn read_update(
    req: Request<Incoming>,
    limits: ServerLimits,
) -> Result<HypervFlushUpdate, RequestError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refuse before reading a byte when the client announces too much.
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(RequestError::TooLarge(limits.max_body_bytes));
    }
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    let collected = tokio::time::timeout(limits.body_timeout, body.collect())
        .await
        .map_err(|_| RequestError::BodyTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(RequestError::TooLarge(limits.max_body_bytes));
        }
        Err(e) => return Err(RequestError::BodyRead(e)),
    };
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let update: HypervFlushUpdate = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        // "." is serde_path_to_error's name for the document itself, "?"
        // for a key that did not parse.
        match e.path().to_string() {
            field if field == "." || field == "?" => RequestError::BadJson(e.into_inner()),
            field => RequestError::BadField {
                field: truncate(&field),
                source: e.into_inner(),
            },
        }
    })?;
    de.end().map_err(RequestError::BadJson)?;
    Ok(update)
}
