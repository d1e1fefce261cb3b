//! Rate limits shared across nodes through Redis (`access.redis_url`): two Lasso nodes sharing one real
//! `redis-server` hold one key to one combined request rate; with Redis killed, both keep answering from their
//! local share (fail-open) and count it in `/metrics`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::redis::RedisServer;
use support::*;

const KEY: &str = "shared-limit-key-0000000000";
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
/// The key's limit, requests per second, held across both nodes.
const LIMIT: u64 = 20;

fn node(p: &MockProvider, redis_port: u16) -> Lasso {
    p.set_chain_id("0x1");
    let yaml = single_chain(&[p]).yaml();
    let yaml = format!(
        "{yaml}\naccess:\n  require_key: true\n  redis_url: \"redis://127.0.0.1:${{RPC_RL_REDIS_PORT}}\"\n  keys:\n    \
         - {{ id: shared, key: \"{KEY}\", limit: {{ requests_per_s: {LIMIT}, burst_s: 1 }} }}\n"
    );
    Lasso::builder(&yaml)
        .workers(1)
        .env("RPC_RL_REDIS_PORT", &redis_port.to_string())
        .start()
}

fn call(addr: SocketAddr) -> u16 {
    request(
        addr,
        "POST",
        "/rpc/ethereum",
        &[("Content-Type", "application/json"), ("X-Lasso-Key", KEY)],
        CALL.as_bytes(),
    )
    .status
}

/// Sends `rate` requests per second to `addr` for `secs` seconds (paced, not bursted); returns (200s, 429s).
fn drive(addr: SocketAddr, rate: u64, secs: u64) -> (u64, u64) {
    let start = Instant::now();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..rate * secs {
        let at = start + Duration::from_millis(i * 1000 / rate);
        // Pacing the load generator, not waiting for a state.
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        match call(addr) {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited)
}

fn fail_open_total(lasso: &Lasso) -> u64 {
    let text = get(lasso.addr(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("lasso_access_redis_fail_open_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Tolerance: over `SECS` seconds the requests fall into at most `SECS + 1` one-second windows, so the combined
/// successes are at most `LIMIT * (SECS + 1)`; at least `LIMIT * (SECS - 1)` (a worker may lose the rest of a
/// reserved batch per window). Without sharing, each node would grant its own `LIMIT` per second: about twice that.
#[test]
fn two_nodes_sharing_redis_hold_one_combined_limit_and_fail_open_without_it() {
    const SECS: u64 = 4;
    let mut redis = RedisServer::start(None);
    let (pa, pb) = (MockProvider::start("pa"), MockProvider::start("pb"));
    let (a, b) = (node(&pa, redis.port), node(&pb, redis.port));
    let (addr_a, addr_b) = (a.addr(), b.addr());
    let other = std::thread::spawn(move || drive(addr_b, LIMIT, SECS));
    let (ok_a, lim_a) = drive(addr_a, LIMIT, SECS);
    let (ok_b, lim_b) = other.join().unwrap();
    let ok = ok_a + ok_b;
    eprintln!(
        "node a: {ok_a} ok, {lim_a} limited; node b: {ok_b} ok, {lim_b} limited; combined {ok} ok"
    );
    assert!(
        (LIMIT * (SECS - 1)..=LIMIT * (SECS + 1)).contains(&ok),
        "{ok} successes for {LIMIT} req/s over {SECS} s (a: {ok_a}, b: {ok_b})"
    );
    assert!(
        lim_a + lim_b >= LIMIT * (SECS - 1),
        "refused: {}",
        lim_a + lim_b
    );
    assert_eq!(fail_open_total(&a) + fail_open_total(&b), 0);

    // Redis gone: both nodes keep answering from their local share, and count it.
    redis.kill();
    // (A worker that Redis already told the key was spent refuses it until the next second, without asking Redis.)
    for lasso in [&a, &b] {
        eventually(
            Duration::from_secs(3),
            "served and counted without Redis",
            || match (call(lasso.addr()), fail_open_total(lasso)) {
                (200, n) if n >= 1 => Ok(()),
                other => Err(format!("(status, fail-open count) = {other:?}")),
            },
        );
    }
    // Under the local limit, every request is served while Redis stays down.
    let other = std::thread::spawn(move || drive(addr_b, LIMIT / 2, 1));
    assert_eq!(
        drive(addr_a, LIMIT / 2, 1),
        (LIMIT / 2, 0),
        "node a without Redis"
    );
    assert_eq!(
        other.join().unwrap(),
        (LIMIT / 2, 0),
        "node b without Redis"
    );
}
