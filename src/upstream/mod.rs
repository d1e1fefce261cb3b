//! The provider-facing HTTP/1.1 client of one worker: DNS resolved off the event loop ([`dns`]), plain and TLS
//! connections ([`conn`]), per-provider keep-alive pools with stale-connection detection ([`pool`]), and one request /
//! response exchange with gzip handling ([`client`]) whose buffers are charged to the worker's budget of buffered
//! answer bytes ([`budget`]), or, for a large answer the caller may stream, handed over after its first bytes with the
//! rest still arriving ([`stream`]). Its error type, [`UpstreamError`], says what
//! failed and whether the request may have reached the provider (which decides whether a write may be retried).

pub mod budget;
pub mod client;
pub mod coalesce;
pub mod coalesce_queue;
pub mod conn;
pub mod dns;
pub mod error;
pub mod pool;
pub mod stream;
pub mod ws;

pub use client::UpstreamClient;
pub use error::{FailureKind, UpstreamError, UpstreamResponse};
