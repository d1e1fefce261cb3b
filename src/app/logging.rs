//! Structured logging with `tracing`: human-readable lines by default, JSON lines with `LOG_FORMAT=json`, level from
//! `RUST_LOG` (default `info`). Colours only on a terminal, so captured logs stay parseable.
//!
//! Text lines escape every control character of every field and message (`\n`, `\r`, ESC, C1 controls, Unicode line
//! separators), so client-controlled text (a method name, a path, an error quoting either) can neither forge a log
//! line nor drive a terminal. JSON lines are escaped by JSON itself.
//!
//! Lines never block the thread that logs them: each is appended to one process-wide queue, bounded in bytes
//! (`LOG_QUEUE_MAX_BYTES`), and a writer thread (`lasso-log`) moves it to stdout: woken by the first line into an
//! empty queue, it writes everything queued in one go, and lines logged meanwhile go out together in the next. A
//! worker never blocks on stdout; when stdout does not keep up (a full pipe, a stalled log shipper), lines past the
//! bound are dropped and counted in a warning once stdout moves again, and requests go on being served. The queue is written out before the process exits ([`flush`]), also on a panic.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::defaults::LOG_QUEUE_MAX_BYTES;

use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::env::json_logs(&crate::config::env::process);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QueueWriter)
        .with_thread_names(true);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        let fields = tracing_subscriber::fmt::format::debug_fn(
            |w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
                let text = format!("{value:?}");
                if field.name() == "message" {
                    write!(w, "{}", Escaped(&text))
                } else {
                    write!(w, "{}={}", field.name(), Escaped(&text))
                }
            },
        )
        .delimited(" ");
        builder
            .fmt_fields(fields)
            .with_ansi(std::io::stdout().is_terminal())
            .init();
    }
    start_writer();
}

/// Log lines waiting for stdout.
struct Queue {
    /// Whole lines, oldest first; at most `LOG_QUEUE_MAX_BYTES`.
    lines: Mutex<Vec<u8>>,
    /// Signalled when the first line lands in an empty queue.
    ready: Condvar,
    /// Lines dropped because the queue was full, not yet reported.
    dropped: AtomicU64,
    /// Held while writing to stdout, so the writer thread and [`flush`] keep the lines in order.
    out: Mutex<()>,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| Queue {
        lines: Mutex::new(Vec::with_capacity(64 << 10)),
        ready: Condvar::new(),
        dropped: AtomicU64::new(0),
        out: Mutex::new(()),
    })
}

/// The `tracing` writer: the formatter hands it one whole line per event.
struct QueueWriter;

impl std::io::Write for QueueWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let q = queue();
        let mut lines = q.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() + line.len() > LOG_QUEUE_MAX_BYTES {
            q.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let was_empty = lines.is_empty();
            lines.extend_from_slice(line);
            drop(lines);
            if was_empty {
                q.ready.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the thread that moves queued lines to stdout, and makes a panic write them out before the process ends.
fn start_writer() {
    let spawned = std::thread::Builder::new()
        .name("lasso-log".into())
        .spawn(|| {
            let q = queue();
            let mut spare = Vec::with_capacity(64 << 10);
            loop {
                {
                    let lines = q.lines.lock().unwrap_or_else(|p| p.into_inner());
                    let _lines = q
                        .ready
                        .wait_while(lines, |l| l.is_empty())
                        .unwrap_or_else(|p| p.into_inner());
                }
                let out = q.out.lock().unwrap_or_else(|p| p.into_inner());
                write_out(q, &mut spare);
                drop(out);
            }
        });
    if spawned.is_err() {
        eprintln!("lasso: cannot start the log writer thread; log lines stay queued until exit");
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_within(Duration::from_millis(100));
        previous(info);
    }));
}

/// Takes the queued lines and writes them to stdout (blocking while stdout does), then reports dropped lines.
fn write_out(q: &Queue, spare: &mut Vec<u8>) {
    spare.clear();
    std::mem::swap(
        &mut *q.lines.lock().unwrap_or_else(|p| p.into_inner()),
        spare,
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(spare);
    let _ = stdout.flush();
    drop(stdout);
    let dropped = q.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "log lines dropped: standard output did not keep up (the log queue is bounded so that requests never wait for it)"
        );
    }
}

/// Writes every queued line to stdout now; call before the process exits. Gives up after a few seconds when stdout
/// does not take them (the writer thread blocked on a stalled pipe), so a stalled log reader cannot hold the exit.
pub fn flush() {
    flush_within(Duration::from_secs(3));
}

fn flush_within(limit: Duration) {
    let q = queue();
    let deadline = Instant::now() + limit;
    loop {
        match q.out.try_lock() {
            Ok(_out) => {
                write_out(q, &mut Vec::new());
                // The dropped-lines warning, if any, was queued by the line above.
                write_out(q, &mut Vec::new());
                return;
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let _out = p.into_inner();
                write_out(q, &mut Vec::new());
                return;
            }
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
        }
    }
}

/// Text with its control characters written as escapes, on one line.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_stay_on_one_line() {
        let forged = "eth_x\n2026-01-01T00:00:00Z  INFO lasso: \x1b[31mfake\r\u{85}\u{2028}";
        let out = Escaped(forged).to_string();
        assert!(!out.chars().any(|c| c.is_control()), "{out}");
        assert_eq!(
            out,
            "eth_x\\n2026-01-01T00:00:00Z  INFO lasso: \\u{1b}[31mfake\\r\\u{85}\\u{2028}"
        );
    }
}
