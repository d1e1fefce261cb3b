//! What the data plane counts and tells: per-worker counters ([`stats`]) and the bounded, lossy bus of routing
//! decisions that the SSE stream reads ([`events`]).

pub mod events;
pub mod stats;
