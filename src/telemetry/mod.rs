//! What the data plane counts and tells: per-worker counters ([`stats`]) and the bounded, lossy bus of routing
//! decisions that the SSE stream reads ([`events`]), and the per-worker rate limits of per-request warnings
//! ([`log_limit`]).

pub mod events;
pub mod log_limit;
pub mod stats;
