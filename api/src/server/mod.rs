//! The REST API server on the VMM's Unix socket.
//!
//! Why hyper 1.x directly, not a framework: four fixed routes need no
//! router, and hyper's connection builder exposes exactly the knobs the
//! hostile-client rules need (header read timeout, no keep-alive, buffer
//! cap), with the fewest dependencies. It runs on a tokio current-thread
//! runtime on its own thread, one task per connection, so a slow client
//! only holds its own task and never a vCPU thread.

mod listener;
mod routes;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use listener::ListenerError;

use hvflush_config::{ApiSocketConfig, Endpoint};

use crate::service::FlushService;
use listener::SocketFile;

/// Limits that keep a hostile or broken client from costing more than
/// its own connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest accepted request body; more is answered with 413.
    pub max_body_bytes: usize,
    /// Time allowed to send the request headers.
    pub header_timeout: Duration,
    /// Time allowed to send the request body.
    pub body_timeout: Duration,
    /// Longest life of one connection (one request: no keep-alive).
    pub connection_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_connections: 32,
        }
    }
}

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The socket could not be set up.
    #[error("Cannot set up the API socket")]
    Listener(#[source] ListenerError),
    /// The tokio runtime could not be built.
    #[error("Cannot create the API runtime")]
    Runtime(#[source] std::io::Error),
    /// The socket could not be registered with the runtime.
    #[error("Cannot register the API socket with the runtime")]
    Register(#[source] std::io::Error),
    /// The thread could not be spawned.
    #[error("Cannot spawn the API thread")]
    Thread(#[source] std::io::Error),
}

/// A running API server. Dropping it shuts it down too.
pub struct ApiServer {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    socket_file: Option<SocketFile>,
}

impl ApiServer {
    /// Binds (or adopts) the socket and starts serving `service` on a
    /// thread named `hvflush-api`, with [`ServerLimits::default`].
    pub fn start(
        config: &ApiSocketConfig,
        service: Arc<dyn FlushService>,
    ) -> Result<Self, ApiServerError> {
        Self::start_with_limits(config, service, ServerLimits::default())
    }

    /// [`start`](Self::start) with explicit limits.
    pub fn start_with_limits(
        config: &ApiSocketConfig,
        service: Arc<dyn FlushService>,
        limits: ServerLimits,
    ) -> Result<Self, ApiServerError> {
        let (std_listener, socket_file) = match &config.0 {
            Endpoint::Path(path) => {
                let (l, f) = listener::bind(path).map_err(ApiServerError::Listener)?;
                (l, Some(f))
            }
            Endpoint::Fd(fd) => (
                listener::adopt_fd(*fd).map_err(ApiServerError::Listener)?,
                None,
            ),
        };
        let cleanup = |e| {
            if let Some(f) = &socket_file {
                f.remove();
            }
            e
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| cleanup(ApiServerError::Runtime(e)))?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::UnixListener::from_std(std_listener)
                .map_err(|e| cleanup(ApiServerError::Register(e)))?
        };
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("hvflush-api".to_owned())
            .spawn(move || runtime.block_on(serve(listener, service, limits, stop_rx)))
            .map_err(|e| cleanup(ApiServerError::Thread(e)))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            socket_file,
        })
    }

    /// The socket path, when the server bound one.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_file.as_ref().map(|f| f.path.as_path())
    }

    /// Stops accepting, lets in-flight requests finish (up to a second),
    /// joins the thread and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // The receiver is gone only if the thread already ended.
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            // A panic on the API thread has been reported on stderr already.
            let _ = thread.join();
        }
        if let Some(file) = self.socket_file.take() {
            file.remove();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Time in-flight connections get to finish at shutdown.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Pause after a failed accept (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the one request of one connection over `io`, with every rule
/// the socket server applies (header and whole-connection deadlines, no
/// keep-alive, half-close, the header buffer cap, the body limits of the
/// routes). The accept loop runs it per connection; a VMM with its own
/// accept loop, or a test or fuzzer with an in-memory stream
/// (`tokio::io::duplex`), can call it directly. Needs a tokio runtime with
/// time enabled; returns when the exchange ends or the connection
/// deadline passes. Client errors (reset, timeout) end it silently.
pub async fn serve_connection<I>(io: I, service: Arc<dyn FlushService>, limits: ServerLimits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = service_fn(move |req| routes::handle(req, service.clone(), limits));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // One request per connection, as Cloud Hypervisor's clients do; an
        // idle client cannot hold a slot.
        .keep_alive(false)
        // A client may shut its write side and still read the answer.
        .half_close(true)
        // Caps what a client can make us buffer for headers.
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), handler);
    // Errors are the client's (reset, timeout): nothing to report.
    let _ = tokio::time::timeout(limits.connection_timeout, connection).await;
}

async fn serve(
    listener: tokio::net::UnixListener,
    service: Arc<dyn FlushService>,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, service, limits).await;
        });
    }
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}
