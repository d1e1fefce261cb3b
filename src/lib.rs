//! Lasso: a thread-per-core blockchain JSON-RPC aggregator. One monoio (io_uring) event loop per core, each with its
//! own listener, upstream pools and counters; JSON-RPC inspected lazily with sonic-rs; provider bodies passed through
//! as bytes with ids spliced.
//!
//! # The planes, lowest first
//! Each folder is a plane; a plane imports only planes listed above it here (checked by `tests/layout.rs`).
//!
//! | plane | owns |
//! |---|---|
//! | [`error`] | the client-facing error type and its JSON-RPC code table |
//! | [`evm`] | what Ethereum JSON-RPC methods mean |
//! | [`wire`] | codecs: HTTP/1.1, JSON-RPC inspection and id splicing, WebSocket frames and handshake |
//! | [`config`] | schema, defaults, validation, environment, store, change messages |
//! | [`access`] | client API keys: which requests may reach the pipeline |
//! | [`telemetry`] | counters and the routing-event bus |
//! | [`upstream`] | provider-facing HTTP and WebSocket clients, pools, DNS, coalescing |
//! | [`routing`] | recorder, merger, table, router, classification, breakers, snapshots |
//! | [`cache`] | in-flight multiplexing and the finality-aware response cache of one core |
//! | [`shard`] | the per-core context: config, routing state, pools, counters |
//! | [`rpc`] | the request lifecycle: target, pipeline, metadata |
//! | [`subscriptions`] | shared subscription feeds per worker |
//! | [`ops`] | status, metrics, admin, cluster |
//! | [`edge`] | connection loop, endpoint table, WebSocket sessions, SSE |
//! | [`app`] | supervisor, per-core run loop, monitor, logging |
//!
//! `docs/ARCHITECTURE.md` follows one HTTP request and one subscription through these planes, phase by phase.

pub mod error;
pub mod evm;
pub mod wire;
pub mod config;
pub mod access;
pub mod telemetry;
pub mod upstream;
pub mod routing;
pub mod cache;
pub mod shard;
pub mod rpc;
pub mod subscriptions;
pub mod ops;
pub mod edge;
pub mod app;
