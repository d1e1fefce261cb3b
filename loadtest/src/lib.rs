//! Load testing for Lasso: a load generator (`lasso-loadgen`), a mock JSON-RPC provider (`lasso-mockprovider`) and a
//! runner (`lasso-bench`) that measures Lasso side by side with the mock provider itself, nginx and blutgang.
//!
//! The binaries are thin command lines over these modules:
//! - [`rng`], [`hist`]: a small deterministic RNG and HDR-histogram latency summaries;
//! - [`http`], [`ws`]: the HTTP/1.1 and RFC 6455 wire formats both sides speak;
//! - [`chain`], [`mock`]: the simulated chain and the mock provider server (HTTP + WS + control endpoint);
//! - [`client`], [`mix`], [`loadgen`]: client connections, method mixes and the open/closed-loop load engine;
//! - [`scenario`], [`bench`], [`report`], [`sys`]: scenario files, the side-by-side runner and its reports;
//! - [`floor`]: the minimal forwarder on Lasso's stack that the runner measures as the runtime's limit;
//! - [`soak`]: the target's resident memory across 200,000 sequential and 10,000 idle connections;
//! - [`indexer`]: a replayed indexer pull (`lasso-indexer-pull`: blocks, receipts and logs of a range).

pub mod bench;
pub mod chain;
pub mod client;
pub mod floor;
pub mod hist;
pub mod http;
pub mod indexer;
pub mod loadgen;
pub mod mix;
pub mod mock;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod soak;
pub mod sys;
pub mod ws;
