//! Lasso: a thread-per-core blockchain JSON-RPC aggregator. One monoio (io_uring) event loop per core, each with its
//! own listener, upstream pools and counters; JSON-RPC inspected lazily with sonic-rs; provider bodies passed through
//! as bytes with ids spliced.

pub mod admin;
pub mod api;
pub mod breaker;
pub mod classify;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod events;
pub mod handler;
pub mod http;
pub mod jsonrpc;
pub mod logging;
pub mod merger;
pub mod meta;
pub mod methods;
pub mod monitor;
pub mod prometheus;
pub mod proxy;
pub mod recorder;
pub mod routes;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod subscriptions;
pub mod sync;
pub mod table;
pub mod upstream;
pub mod worker;
pub mod ws;
