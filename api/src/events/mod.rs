//! The event monitor (`--event-monitor path=FILE|fd=N`), in Cloud
//! Hypervisor's format: each event a pretty-printed JSON object
//! `{"timestamp":{"secs","nanos"},"source","event","properties"}` followed by
//! a blank line, the timestamp measured from monitor start.
//!
//! Callers (vCPU threads) only `try_send` into a bounded queue; a dedicated
//! thread does the writing. A full queue drops the event and counts it; the
//! count goes out with the next `flush-summary` as `dropped_events`.

mod event;
mod rate_limit;
mod reader;
mod summary;

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use event::{EVENT_SOURCE, Event, EventKind, FlushStats, Properties};
pub use rate_limit::RateLimiter;
pub use reader::{EventStreamError, parse_event_stream};
pub use summary::SummaryTicker;

use hvflush_config::option::{Endpoint, EventMonitorConfig};

/// Errors of the event monitor.
#[derive(Debug, thiserror::Error)]
pub enum EventMonitorError {
    /// The event file could not be opened.
    #[error("Cannot open event monitor file {}", path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The inherited fd is not open.
    #[error("Event monitor file descriptor {fd} is not open")]
    BadFd {
        /// The fd.
        fd: RawFd,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The inherited fd is open for reading only.
    #[error("Event monitor file descriptor {0} is not writable")]
    NotWritable(RawFd),
    /// The writer thread could not be spawned.
    #[error("Cannot spawn the event monitor thread")]
    Thread(#[source] io::Error),
    /// The writer thread is gone (after shutdown, or it panicked).
    #[error("Event monitor is stopped")]
    Stopped,
    /// The writer did not catch up in time (a reader that does not read).
    #[error("Event monitor did not drain within {0:?}")]
    Timeout(Duration),
    /// Writing or syncing the file failed.
    #[error("Cannot write the event file")]
    Write(#[source] io::Error),
}

/// Tuning of the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorOptions {
    /// Events the queue holds before dropping.
    pub queue_capacity: usize,
    /// At most this many rate-limited events of one kind per `rate_window`.
    pub rate_limit: u32,
    /// The rate-limit window.
    pub rate_window: Duration,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            rate_limit: 10,
            rate_window: Duration::from_secs(1),
        }
    }
}

enum Message {
    Event(Duration, Event),
    Flush(SyncSender<Result<(), EventMonitorError>>),
    Stop,
}

#[derive(Default)]
struct Counters {
    dropped_since_summary: AtomicU64,
    dropped_total: AtomicU64,
    written: AtomicU64,
}

impl Counters {
    fn drop_one(&self) {
        self.dropped_since_summary.fetch_add(1, Ordering::Relaxed);
        self.dropped_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running event monitor. Share it with `Arc`; every method takes `&self`.
/// Dropping it without [`shutdown`](Self::shutdown) lets the writer thread
/// drain the queue and end on its own, unwaited.
pub struct EventMonitor {
    start: Instant,
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
    limiters: Vec<RateLimiter>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EventMonitor {
    /// Opens the file (`path=`: created or truncated) or adopts the
    /// inherited fd (`fd=`), and starts the writer thread.
    pub fn open(
        config: &EventMonitorConfig,
        options: MonitorOptions,
    ) -> Result<Self, EventMonitorError> {
        let file = match &config.0 {
            Endpoint::Path(path) => {
                File::create(path).map_err(|source| EventMonitorError::Open {
                    path: path.clone(),
                    source,
                })?
            }
            Endpoint::Fd(fd) => adopt_fd(*fd)?,
        };
        Self::from_file(file, options)
    }

    /// Starts a monitor writing to `file`.
    pub fn from_file(file: File, options: MonitorOptions) -> Result<Self, EventMonitorError> {
        let (tx, rx) = sync_channel(options.queue_capacity);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("hvflush-events".to_owned())
            .spawn(move || write_loop(file, rx, &thread_counters))
            .map_err(EventMonitorError::Thread)?;
        Ok(Self {
            start: Instant::now(),
            tx,
            counters,
            limiters: EventKind::ALL
                .iter()
                .map(|_| RateLimiter::new(options.rate_limit, options.rate_window))
                .collect(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `event` without ever blocking. Rate-limited kinds beyond their
    /// rate are suppressed (the next one that goes out carries a
    /// `suppressed` count); a full queue drops the event and counts it.
    /// Returns whether the event was queued.
    pub fn emit(&self, event: Event) -> bool {
        self.emit_with(event.kind(), || event)
    }

    /// Like [`Self::emit`], building the event only once the rate limiter
    /// of `kind` let it through: a guest that triggers a rate-limited kind
    /// at will makes the suppressed ones cost no allocation. `build` must
    /// return an event of `kind`.
    pub fn emit_with(&self, kind: EventKind, build: impl FnOnce() -> Event) -> bool {
        let now = Instant::now();
        let suppressed = if kind.is_rate_limited() {
            match self.limiters[kind.index()].check(now) {
                Some(suppressed) => Some(suppressed),
                None => return false,
            }
        } else {
            None
        };
        let mut event = build();
        debug_assert_eq!(event.kind(), kind, "emit_with built another kind");
        if let Some(n) = suppressed {
            event.insert("suppressed", n.to_string());
        }
        let elapsed = now.saturating_duration_since(self.start);
        match self.tx.try_send(Message::Event(elapsed, event)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.drop_one();
                false
            }
        }
    }

    /// Events dropped since start (queue full or write failure).
    pub fn dropped_total(&self) -> u64 {
        self.counters.dropped_total.load(Ordering::Relaxed)
    }

    /// Events written since start.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Waits until every event queued before this call is written and the
    /// file synced, for at most [`DRAIN_TIMEOUT`]. Blocks: not for vCPU
    /// threads.
    pub fn flush(&self) -> Result<(), EventMonitorError> {
        self.flush_by(Instant::now() + DRAIN_TIMEOUT)
    }

    fn flush_by(&self, deadline: Instant) -> Result<(), EventMonitorError> {
        let (ack, done) = sync_channel(1);
        self.send_by(Message::Flush(ack), deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(EventMonitorError::Timeout(DRAIN_TIMEOUT)),
            Err(RecvTimeoutError::Disconnected) => Err(EventMonitorError::Stopped),
        }
    }

    /// Queues `message`, waiting for room until `deadline`.
    fn send_by(&self, mut message: Message, deadline: Instant) -> Result<(), EventMonitorError> {
        loop {
            match self.tx.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(EventMonitorError::Stopped),
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return Err(EventMonitorError::Timeout(DRAIN_TIMEOUT));
                    }
                    message = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Writes `final_event` (normally [`Event::shutdown`]), drains the
    /// queue, syncs the file and stops the writer thread, within
    /// [`DRAIN_TIMEOUT`] (a writer stuck on a reader that never reads is
    /// left behind). Later `emit`s are counted as dropped. Blocks.
    pub fn shutdown(&self, final_event: Event) -> Result<(), EventMonitorError> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let elapsed = self.start.elapsed();
        self.send_by(Message::Event(elapsed, final_event), deadline)?;
        self.flush_by(deadline)?;
        // The queue is empty now, so Stop fits unless another thread raced
        // an event in; then the writer stops when the monitor is dropped.
        if self.tx.try_send(Message::Stop).is_ok() {
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(thread) = thread {
                // A panic on the writer thread has been reported already.
                let _ = thread.join();
            }
        }
        Ok(())
    }
}

/// Longest `flush()`/`shutdown()` wait for the writer.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn adopt_fd(fd: RawFd) -> Result<File, EventMonitorError> {
    // SAFETY: F_GETFL only reads the fd's flags; it fails with EBADF for a
    // closed fd, which is checked before taking ownership.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(EventMonitorError::BadFd {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(EventMonitorError::NotWritable(fd));
    }
    // SAFETY: the fd is open and writable (checked above) and was handed to
    // this process for the event monitor (`--event-monitor fd=N`), so
    // nothing else owns it.
    let file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    Ok(ManuallyDrop::into_inner(file))
}

/// The wire form of one event.
#[derive(Serialize)]
struct Wire<'a> {
    timestamp: Duration,
    source: &'static str,
    event: &'static str,
    properties: Option<&'a Properties>,
}

fn write_event(out: &mut impl Write, elapsed: Duration, event: &Event) -> io::Result<()> {
    let wire = Wire {
        timestamp: elapsed,
        source: EVENT_SOURCE,
        event: event.kind().as_str(),
        properties: event.properties(),
    };
    let mut text = serde_json::to_vec_pretty(&wire).map_err(io::Error::other)?;
    text.extend_from_slice(b"\n\n");
    out.write_all(&text)
}

fn sync(file: &File) -> Result<(), EventMonitorError> {
    match file.sync_all() {
        // Pipes, FIFOs and ttys cannot be synced; written is all there is.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other.map_err(EventMonitorError::Write),
    }
}

/// Writes each event with one `write_all` straight to the file (no user
/// buffer), so a live reader sees it at once and a crash loses nothing
/// that was written.
fn write_loop(mut file: File, rx: Receiver<Message>, counters: &Counters) {
    let mut reported_error = false;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Event(elapsed, mut event) => {
                match event.kind() {
                    EventKind::FlushSummary => {
                        let n = counters.dropped_since_summary.swap(0, Ordering::Relaxed);
                        event.insert("dropped_events", n.to_string());
                    }
                    EventKind::Shutdown => {
                        let n = counters.dropped_total.load(Ordering::Relaxed);
                        event.insert("dropped_events", n.to_string());
                    }
                    _ => {}
                }
                match write_event(&mut file, elapsed, &event) {
                    Ok(()) => {
                        counters.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counters.drop_one();
                        if !reported_error {
                            eprintln!("hvflush-events: cannot write event: {e}");
                            reported_error = true;
                        }
                    }
                }
            }
            Message::Flush(ack) => {
                // The requester may have given up; nothing to do then.
                let _ = ack.send(sync(&file));
            }
            Message::Stop => break,
        }
    }
}
