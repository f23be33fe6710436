//! The periodic `flush-summary`: a thread that, every interval, takes the
//! VMM's counter totals and emits the counts since the previous summary.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Event, EventMonitor, FlushStats};
use crate::model::CountersReport;

enum Command {
    SummaryNow(Sender<()>),
    Stop,
}

/// Emits `flush-summary` every `interval` until stopped.
pub struct SummaryTicker {
    commands: Sender<Command>,
    thread: Option<JoinHandle<FlushStats>>,
}

impl SummaryTicker {
    /// Starts the thread (`hvflush-summary`). `counters` returns the totals
    /// since the VM started (the same as the counters endpoint).
    pub fn start<F>(
        monitor: Arc<EventMonitor>,
        interval: Duration,
        counters: F,
    ) -> std::io::Result<Self>
    where
        F: Fn() -> CountersReport + Send + 'static,
    {
        let (commands, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("hvflush-summary".to_owned())
            .spawn(move || {
                let mut last = FlushStats::default();
                let mut last_at = Instant::now();
                let mut summarise = |last: &mut FlushStats| {
                    let now = FlushStats::from(&counters());
                    let at = Instant::now();
                    monitor.emit(Event::flush_summary(at - last_at, &now.since(last)));
                    *last = now;
                    last_at = at;
                };
                loop {
                    match rx.recv_timeout(interval) {
                        Ok(Command::SummaryNow(done)) => {
                            summarise(&mut last);
                            // The caller may have stopped waiting.
                            let _ = done.send(());
                        }
                        Err(RecvTimeoutError::Timeout) => summarise(&mut last),
                        Ok(Command::Stop) => {
                            summarise(&mut last);
                            return last;
                        }
                        Err(RecvTimeoutError::Disconnected) => return last,
                    }
                }
            })?;
        Ok(Self {
            commands,
            thread: Some(thread),
        })
    }

    /// Emits a summary now, without waiting for the interval; returns once
    /// it is queued on the monitor.
    pub fn summary_now(&self) {
        let (done, wait) = channel();
        // The thread only ends through stop(), which consumes self.
        if self.commands.send(Command::SummaryNow(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Emits a final summary (counts since the previous one), stops the
    /// thread and returns the totals it last saw, for the `shutdown` event.
    pub fn stop(mut self) -> FlushStats {
        let _ = self.commands.send(Command::Stop);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for SummaryTicker {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.commands.send(Command::Stop);
            let _ = thread.join();
        }
    }
}
