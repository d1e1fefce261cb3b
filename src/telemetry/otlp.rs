//! OTLP/HTTP export of finished request traces (protobuf, `POST` to `telemetry.traces.endpoint`) from one thread of
//! its own. Workers hand traces over with a non-blocking `try_send` on a bounded queue (`queue_traces`): when it is
//! full the trace is dropped and counted, never waited for. The exporter batches what is queued (up to
//! [`MAX_BATCH`] traces or [`FLUSH_INTERVAL`]), encodes an `ExportTraceServiceRequest` by hand (the few messages of
//! opentelemetry-proto's `trace/v1` it needs; no SDK), and posts it over a short-lived blocking connection bounded
//! by `export_timeout_ms`. A failed export is counted and its spans dropped (no retry queue to grow). Counters are
//! rendered by `/metrics`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use crate::config::TraceSettings;
use crate::telemetry::trace::{FinishedTrace, Span, Value};

/// Traces per export request.
const MAX_BATCH: usize = 512;
/// Longest a queued trace waits for its batch.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Largest collector answer read (the answer is only checked for its status).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

static QUEUE: OnceLock<Sender<FinishedTrace>> = OnceLock::new();
static SETTINGS: Mutex<Option<TraceSettings>> = Mutex::new(None);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Span counters since start: (exported, dropped, failed export requests).
pub fn counters() -> (u64, u64, u64) {
    (
        EXPORTED.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

fn count_dropped(spans: u64) {
    DROPPED.fetch_add(spans, Ordering::Relaxed);
}

/// Applies a configuration generation's trace settings: the exporter thread starts with the first generation that
/// sets an endpoint (its queue keeps that generation's `queue_traces`); later generations change where and how it
/// exports.
pub fn configure(settings: &TraceSettings) {
    *SETTINGS.lock().unwrap_or_else(|p| p.into_inner()) = Some(settings.clone());
    if !settings.enabled() || QUEUE.get().is_some() {
        return;
    }
    let (tx, rx) = bounded(settings.queue_traces);
    if QUEUE.set(tx).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("lasso-otlp".into())
        .spawn(move || run(rx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the trace exporter thread: traces are dropped");
    }
}

/// Queues a finished trace for export; drops it (counted) when the queue is full or tracing never started.
pub fn submit(trace: FinishedTrace) {
    if trace.dropped > 0 {
        count_dropped(u64::from(trace.dropped));
    }
    let spans = trace.spans.len() as u64;
    let Some(tx) = QUEUE.get() else {
        count_dropped(spans);
        return;
    };
    match tx.try_send(trace) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => count_dropped(spans),
    }
}

fn run(rx: Receiver<FinishedTrace>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let until = Instant::now() + FLUSH_INTERVAL;
        while batch.len() < MAX_BATCH {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(t) => batch.push(t),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let settings = SETTINGS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let spans: u64 = batch.iter().map(|t| t.spans.len() as u64).sum();
        match settings.filter(TraceSettings::enabled) {
            None => count_dropped(spans),
            Some(settings) => {
                let body = encode_request(&settings.service_name, &batch);
                match post(&settings, &body) {
                    Ok(()) => {
                        EXPORTED.fetch_add(spans, Ordering::Relaxed);
                    }
                    Err(e) => {
                        FAILED.fetch_add(1, Ordering::Relaxed);
                        count_dropped(spans);
                        tracing::warn!(error = %e, spans, "trace export failed");
                    }
                }
            }
        }
        batch.clear();
    }
}

/// One blocking `POST` of an encoded request; `Ok` on a 2xx answer.
fn post(settings: &TraceSettings, body: &[u8]) -> Result<(), String> {
    let endpoint = settings.endpoint.as_ref().ok_or("no endpoint")?;
    let deadline = Instant::now() + settings.export_timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addr = endpoint
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", endpoint.authority))?
        .next()
        .ok_or_else(|| format!("resolve {}: no address", endpoint.authority))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, left()).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lasso/{}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n",
        endpoint.path,
        endpoint.host,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (name, value) in &settings.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream
        .set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() > MAX_ANSWER_BYTES || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
        if Instant::now() >= deadline {
            return Err("timed out".into());
        }
    }
    let status = answer
        .strip_prefix(b"HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("no HTTP answer")?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("collector answered HTTP {status}"))
    }
}

// Protobuf encoding of `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` (field numbers from
// opentelemetry-proto's trace/v1/trace.proto, common/v1/common.proto and resource/v1/resource.proto).

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn fixed64_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 0);
    varint(out, v);
}

/// A length-delimited sub-message written by `f`, in place: its length is put in front afterwards (one move of its
/// bytes, no buffer of its own).
fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, 2);
    let start = out.len();
    f(out);
    let mut len = (out.len() - start) as u64;
    let mut prefix = [0u8; 10];
    let mut n = 0;
    while len >= 0x80 {
        prefix[n] = (len as u8) | 0x80;
        len >>= 7;
        n += 1;
    }
    prefix[n] = len as u8;
    out.splice(start..start, prefix[..=n].iter().copied());
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1 | bool_value = 2 | int_value = 3 }`.
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, |kv| {
        bytes_field(kv, 1, key.as_bytes());
        message(kv, 2, |any| match value {
            Value::Str(s) => bytes_field(any, 1, s.as_bytes()),
            Value::Bool(b) => varint_field(any, 2, u64::from(*b)),
            Value::Int(i) => varint_field(any, 3, *i as u64),
        });
    });
}

/// `Span`: trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6, start 7, end 8, attributes 9, status 15
/// (`Status { message = 2; code = 3 }`, code 2 = error).
fn span(out: &mut Vec<u8>, trace_id: &[u8; 16], s: &Span) {
    message(out, 2, |m| {
        bytes_field(m, 1, trace_id);
        bytes_field(m, 2, &s.span_id);
        if let Some(parent) = &s.parent_span_id {
            bytes_field(m, 4, parent);
        }
        bytes_field(m, 5, s.name.as_bytes());
        varint_field(m, 6, u64::from(s.kind));
        fixed64_field(m, 7, s.start_unix_ns);
        fixed64_field(m, 8, s.end_unix_ns.max(s.start_unix_ns));
        for (k, v) in &s.attributes {
            key_value(m, 9, k, v);
        }
        if let Some(error) = &s.error {
            message(m, 15, |st| {
                bytes_field(st, 2, error.as_bytes());
                varint_field(st, 3, 2);
            });
        }
    });
}

/// `ExportTraceServiceRequest { resource_spans = 1 }` with one `ResourceSpans { resource = 1; scope_spans = 2 }`
/// (`Resource { attributes = 1 }` holding `service.name`), one `ScopeSpans { scope = 1; spans = 2 }`
/// (`InstrumentationScope { name = 1; version = 2 }`).
pub fn encode_request(service_name: &str, traces: &[FinishedTrace]) -> Vec<u8> {
    let mut out = Vec::new();
    message(&mut out, 1, |rs| {
        message(rs, 1, |resource| {
            key_value(
                resource,
                1,
                "service.name",
                &Value::Str(service_name.to_string()),
            );
            key_value(
                resource,
                1,
                "service.version",
                &Value::Str(env!("CARGO_PKG_VERSION").to_string()),
            );
        });
        message(rs, 2, |ss| {
            message(ss, 1, |scope| {
                bytes_field(scope, 1, b"lasso");
                bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for t in traces {
                for s in &t.spans {
                    span(ss, &t.trace_id, s);
                }
            }
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_a_known_span_encoding() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut out = Vec::new();
        span(
            &mut out,
            &[1; 16],
            &Span {
                span_id: [2; 8],
                parent_span_id: None,
                name: "x".into(),
                kind: 2,
                start_unix_ns: 1,
                end_unix_ns: 2,
                attributes: vec![("a", Value::Int(-1))],
                error: None,
            },
        );
        // field 2, length-delimited, then trace_id (field 1, 16 bytes) first.
        assert_eq!(out[0], 0x12);
        assert_eq!(&out[2..4], &[0x0a, 16]);
        assert!(out.windows(2).any(|w| w == [0x30, 2]), "kind = 2");
    }
}
