//! Log lines (the access log's and every other) gathered in memory and written to stdout
//! by one thread, a batch at a time: a busy gateway makes one `write` every few
//! milliseconds instead of one per request, and wakes the writer once per batch.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer waits, once a line arrives, for more to go in the same write.
const GATHER: Duration = Duration::from_millis(20);
/// Lines waiting beyond this make the data path wait for the writer: nothing is dropped.
const MAX_PENDING: usize = 32 * 1024 * 1024;
/// How long the process waits at exit for the last lines to be written: a stalled stdout
/// must not keep it from exiting.
const EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer sleeps on `arrived` until a line comes.
    writer_idle: bool,
    /// Threads wait on `drained` for the writer to take the pending lines.
    blocked: usize,
    closing: bool,
    /// The writer has written everything and stopped.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where log lines go; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writer when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread over `out`.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, Guard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            drained: Condvar::new(),
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-log".into())
            .spawn(move || run(&writer, out))?;
        Ok((
            LogWriter {
                shared: Arc::clone(&shared),
            },
            Guard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Queues whole lines (one or more, newline included).
    pub fn write_lines(&self, lines: &[u8]) {
        let mut state = self.shared.lock();
        while state.pending.len() >= MAX_PENDING && !state.closing {
            state.blocked += 1;
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.blocked -= 1;
        }
        state.pending.extend_from_slice(lines);
        if std::mem::take(&mut state.writer_idle) {
            self.shared.arrived.notify_one();
        }
    }
}

fn run(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let closing = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closing {
                state.writer_idle = true;
                state = shared
                    .arrived
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.writer_idle = false;
            state.closing
        };
        if !closing {
            std::thread::sleep(GATHER);
        }
        let closing = {
            let mut state = shared.lock();
            std::mem::swap(&mut state.pending, &mut batch);
            if state.blocked > 0 {
                shared.drained.notify_all();
            }
            state.closing
        };
        // Nowhere to report a failed log write but the log itself.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closing {
            let mut state = shared.lock();
            if state.pending.is_empty() {
                state.finished = true;
                shared.drained.notify_all();
                return;
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let finished = {
            let mut state = self.shared.lock();
            state.closing = true;
            self.shared.arrived.notify_one();
            self.shared.drained.notify_all();
            let (state, _) = self
                .shared
                .drained
                .wait_timeout_while(state, EXIT_WAIT, |s| !s.finished)
                .unwrap_or_else(PoisonError::into_inner);
            state.finished
        };
        match self.thread.take() {
            Some(thread) if finished => {
                let _ = thread.join();
            }
            // Still blocked on stdout: the process exits without it.
            _ => {}
        }
    }
}

/// One log event for `tracing`: its formatted text, written with one call.
pub struct EventWriter(LogWriter);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_lines(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the writer writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_once_and_whole() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::start(sink.clone()).expect("writer thread");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        writer.write_lines(format!("thread {t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writing thread");
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("text");
        let mut lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 8_000);
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 8_000, "a line was written twice or cut");
        for t in 0..4 {
            let own: Vec<usize> = written
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .filter_map(|n| n.parse().ok())
                .collect();
            assert_eq!(
                own,
                (0..2_000).collect::<Vec<_>>(),
                "thread {t} out of order"
            );
        }
    }

    /// Blocks every write, like a stdout pipe nobody reads.
    struct Stalled(Mutex<std::sync::mpsc::Receiver<()>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.lock().map(|r| r.recv());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_stdout_does_not_keep_the_process_from_exiting() {
        let (_never, blocked) = std::sync::mpsc::channel();
        let (writer, guard) = LogWriter::start(Stalled(Mutex::new(blocked))).expect("writer");
        writer.write_lines(b"a line nobody reads\n");
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
        dropped
            .recv_timeout(Duration::from_secs(60))
            .expect("the guard gave up on the stalled writer");
    }
}
