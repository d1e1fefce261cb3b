//! What the data plane counts and tells: per-worker counters ([`stats`]) and the bounded, lossy bus of routing
//! decisions that the SSE stream reads ([`events`]), and OpenTelemetry traces of requests ([`trace`]) with their
//! OTLP exporter thread ([`otlp`]).

pub mod events;
pub mod otlp;
pub mod stats;
pub mod trace;
