//! What the data plane counts and tells: per-worker counters ([`stats`]) and the bounded, lossy bus of routing
//! decisions that the SSE stream reads ([`events`]; one decision's shape and JSON: [`routing_event`]), the per-worker rate limits of per-request warnings
//! ([`log_limit`]), and OpenTelemetry traces of requests ([`trace`]) with their OTLP exporter thread ([`otlp`]).

pub mod events;
pub mod log_limit;
pub mod otlp;
pub mod routing_event;
pub mod stats;
pub mod trace;
