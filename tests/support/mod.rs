//! Integration-test harness for Lasso: mock upstream providers, a fixture replayer, a process
//! wrapper around the real binary, and a raw HTTP/1.1 client. See docs/CONTRACT.md.
//!
//! Not every test file uses every item.
#![allow(dead_code, unused_imports)]

pub mod anvil;
pub mod eventually;
pub mod fixtures;
pub mod ganache;
pub mod http;
pub mod lasso;
pub mod mock;
pub mod redis;
pub mod sse;
pub mod ws;

use std::time::Duration;

pub use eventually::eventually;
pub use fixtures::{Fixture, load_fixtures};
pub use http::{
    Conn, Response, chunk_body, get, post, post_bytes, request, request_bytes, try_post,
};
pub use lasso::{Chain, Config, Lasso, LassoBuilder, Provider, run_lasso};
pub use mock::{Fault, MockProvider, Recorded, big_result};

use serde_json::{Value, json};

/// A replaying provider is a [`MockProvider`] in replay mode.
pub type ReplayProvider = MockProvider;

/// A JSON-RPC request body.
pub fn rpc(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string()
}

/// A JSON-RPC notification body (no id).
pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc":"2.0","method":method,"params":params}).to_string()
}

/// `error.code` of a JSON-RPC answer.
pub fn error_code(v: &Value) -> Option<i64> {
    v.get("error")?.get("code")?.as_i64()
}

/// Which mock served an echo-mode call (`result.provider`).
pub fn served_by(v: &Value) -> Option<String> {
    Some(v.get("result")?.get("provider")?.as_str()?.to_string())
}

/// A Lasso with a single chain `ethereum` (id 1, alias `eth`) on the given providers (priority =
/// position), strategy `priority`. Also makes each mock answer `eth_chainId` with `0x1`, as a real
/// node of that chain would (Lasso's health probes check it).
pub fn single_chain(providers: &[&MockProvider]) -> Config {
    let mut chain = Chain::new("ethereum", 1).alias("eth").strategy("priority");
    for (i, p) in providers.iter().enumerate() {
        p.set_chain_id("0x1");
        chain = chain.provider(Provider::new(p.name(), &p.url()).priority(i as i64 + 1));
    }
    Config::new().chain(chain)
}

pub const SEC: Duration = Duration::from_secs(1);

/// Resident memory of process `pid` in bytes (`VmRSS` from `/proc`), for the memory-bound attack tests.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}
