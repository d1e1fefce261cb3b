//! OpenTelemetry traces of client requests (`telemetry.traces`, off unless an endpoint is set): one server span per
//! request and a client span per upstream attempt (provider, method, first / retry / hedge, outcome). The W3C
//! `traceparent` of the client is honoured (its trace id kept, its sampled flag decides); without one, a request is
//! sampled by its trace id against `sample_ratio`. Every attempt sends the provider a `traceparent` with the trace id
//! and the attempt's own span id. Finished traces go to the exporter thread (`telemetry::otlp`) over a
//! bounded queue by the caller; nothing here blocks or performs I/O.

use std::cell::{Cell, RefCell};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::TraceSettings;

/// Length of a version-00 `traceparent` value: `00-` 32 hex `-` 16 hex `-` 2 hex.
pub const TRACEPARENT_LEN: usize = 55;
/// Attempt spans kept per request (a batch fans out); the rest are counted as dropped.
const MAX_ATTEMPT_SPANS: usize = 64;

/// A `traceparent` header line value, ready to send.
pub type Traceparent = [u8; TRACEPARENT_LEN];

/// A W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

impl TraceContext {
    /// Parses a `traceparent` value (W3C Trace Context level 1): version 00 exactly, or a later version's first four
    /// fields; all-zero ids and version ff are invalid.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let v = value.trim().as_bytes();
        if v.len() < TRACEPARENT_LEN || (v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-') {
            return None;
        }
        let version = decode_hex::<1>(&v[0..2])?[0];
        if version == 0xff || (version == 0 && v.len() != TRACEPARENT_LEN) {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let trace_id = decode_hex::<16>(&v[3..35])?;
        let span_id = decode_hex::<8>(&v[36..52])?;
        let flags = decode_hex::<1>(&v[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// This context as a version-00 `traceparent` value.
    pub fn header(&self) -> Traceparent {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        encode_hex(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        encode_hex(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        nanos ^ (std::ptr::addr_of!(local) as u64).rotate_left(32) ^ u64::from(std::process::id())
    });
}

/// splitmix64 on a per-thread state: ids that are unique, not secret.
fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn span_id() -> [u8; 8] {
    loop {
        let id = random_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The trace id's sampling decision (as OpenTelemetry's TraceIdRatioBased: its last 8 bytes against the ratio).
fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8])) >> 1;
    (low as f64) < ratio * (1u64 << 63) as f64
}

/// How an attempt came to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// The first provider of the call.
    First,
    /// Another provider after a failed attempt.
    Retry,
    /// A second provider racing a slow first one.
    Hedge,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::First => "first",
            AttemptKind::Retry => "retry",
            AttemptKind::Hedge => "hedge",
        }
    }
}

/// Span attribute values.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One finished span, ready to encode.
#[derive(Debug, Clone)]
pub struct Span {
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    /// OTLP span kind: 2 server, 3 client.
    pub kind: u8,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// An error status with this message; `None` = unset (fine).
    pub error: Option<String>,
}

/// A finished request trace: the server span and its attempts.
#[derive(Debug, Clone)]
pub struct FinishedTrace {
    pub trace_id: [u8; 16],
    pub spans: Vec<Span>,
    /// Attempt spans left out (past the per-request limit).
    pub dropped: u32,
}

/// One attempt's child context: its span id and the `traceparent` the provider receives.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    pub span_id: [u8; 8],
    pub header: Traceparent,
    started: Instant,
}

/// The trace of one request being served. Created only when tracing is on and the request is either sampled or
/// carries a client context to pass on; attempts are recorded only when sampled.
pub struct RequestTrace {
    ctx: TraceContext,
    parent: Option<[u8; 8]>,
    start: Instant,
    start_unix_ns: u64,
    attempts: RefCell<Vec<Span>>,
    dropped: Cell<u32>,
}

impl RequestTrace {
    /// Starts a request's trace from the client's `traceparent` (if any), or `None` when there is nothing to
    /// record or pass on.
    pub fn begin(settings: &TraceSettings, traceparent: Option<&str>) -> Option<RequestTrace> {
        let client = traceparent.and_then(TraceContext::parse);
        let ctx = match client {
            Some(c) => TraceContext {
                trace_id: c.trace_id,
                span_id: span_id(),
                sampled: c.sampled,
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&random_u64().to_be_bytes());
                trace_id[8..].copy_from_slice(&random_u64().to_be_bytes());
                if !sampled_by_ratio(&trace_id, settings.sample_ratio) {
                    return None;
                }
                TraceContext {
                    trace_id,
                    span_id: span_id(),
                    sampled: true,
                }
            }
        };
        Some(RequestTrace {
            ctx,
            parent: client.map(|c| c.span_id),
            start: Instant::now(),
            start_unix_ns: unix_ns(),
            attempts: RefCell::new(Vec::new()),
            dropped: Cell::new(0),
        })
    }

    pub fn context(&self) -> TraceContext {
        self.ctx
    }

    pub fn sampled(&self) -> bool {
        self.ctx.sampled
    }

    fn at(&self, i: Instant) -> u64 {
        self.start_unix_ns + i.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// A new child context for one attempt, started now.
    pub fn child(&self) -> Child {
        let ctx = TraceContext {
            span_id: span_id(),
            ..self.ctx
        };
        Child {
            span_id: ctx.span_id,
            header: ctx.header(),
            started: Instant::now(),
        }
    }

    /// Records one attempt's span (when sampled): `outcome` is `ok`, a failure class or `cancelled`.
    pub fn attempt(
        &self,
        child: &Child,
        name: &str,
        attributes: Vec<(&'static str, Value)>,
        error: Option<String>,
    ) {
        if !self.ctx.sampled {
            return;
        }
        let mut attempts = self.attempts.borrow_mut();
        if attempts.len() >= MAX_ATTEMPT_SPANS {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        attempts.push(Span {
            span_id: child.span_id,
            parent_span_id: Some(self.ctx.span_id),
            name: name.to_string(),
            kind: 3,
            start_unix_ns: self.at(child.started),
            end_unix_ns: self.at(Instant::now()),
            attributes,
            error,
        });
    }

    /// Ends the request's span: the finished trace for the exporter (`None` when not sampled).
    pub fn finish(
        self,
        name: String,
        attributes: Vec<(&'static str, Value)>,
        error: Option<String>,
    ) -> Option<FinishedTrace> {
        if !self.ctx.sampled {
            return None;
        }
        let mut spans = Vec::with_capacity(1 + self.attempts.borrow().len());
        spans.push(Span {
            span_id: self.ctx.span_id,
            parent_span_id: self.parent,
            name,
            kind: 2,
            start_unix_ns: self.start_unix_ns,
            end_unix_ns: self.at(Instant::now()),
            attributes,
            error,
        });
        spans.append(&mut self.attempts.borrow_mut());
        Some(FinishedTrace {
            trace_id: self.ctx.trace_id,
            spans,
            dropped: self.dropped.get(),
        })
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_invalid_values() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(v).unwrap();
        assert!(ctx.sampled);
        assert_eq!(&ctx.header()[..], v.as_bytes());
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A later version may append fields.
        assert!(TraceContext::parse(&format!("01{}-extra", &v[2..])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ratio_sampling_follows_the_ratio() {
        let mut n = 0;
        for _ in 0..10_000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&random_u64().to_be_bytes());
            n += usize::from(sampled_by_ratio(&id, 0.25));
        }
        assert!((2000..3000).contains(&n), "{n}");
        assert!(sampled_by_ratio(&[1; 16], 1.0));
        assert!(!sampled_by_ratio(&[1; 16], 0.0));
    }
}
