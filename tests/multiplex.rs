//! In-flight multiplexing (`cache.multiplex`, on by default): identical reads that arrive while one is in flight on
//! a worker share its upstream call, and every client gets the answer under its own id. Writes are never shared;
//! the switch turns it off. With `workers: N` it is one upstream call per worker at most (each core multiplexes
//! its own requests, without locks).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};
use support::*;

/// `n` clients, each on its own connection, send `method(params)` at once with ids `c0..cn`; returns their replies.
fn concurrent(
    addr: SocketAddr,
    n: usize,
    method: &'static str,
    params: Value,
) -> Vec<(Value, Value)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let params = params.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr);
                let id = json!(format!("c{i}"));
                barrier.wait();
                let r = conn.post("/rpc/ethereum", &rpc(id.clone(), method, params));
                assert_eq!(r.status, 200, "{}", r.describe());
                (id, r.json())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn metric(lasso: &Lasso, name: &str) -> u64 {
    let text = get(lasso.addr(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn provider() -> MockProvider {
    let p = MockProvider::start("p1");
    p.set_chain_id("0x1");
    p.set_result(
        "eth_getBlockByNumber",
        json!({"number": "0x10", "hash": "0xabc"}),
    );
    p.set_result("eth_sendRawTransaction", json!("0x1234"));
    // Long enough for every client to arrive while the first call is in flight.
    p.set_fault(Fault::Delay(1500));
    p
}

fn config(p: &MockProvider, extra: &str) -> String {
    let cfg =
        // 200 clients from 127.0.0.1 at once: past the default per-address connection cap.
        Config::new()
            .server("max_connections_per_ip", 0)
            .chain(Chain::new("ethereum", 1).provider(Provider::new("p1", &p.url())));
    format!("{}{extra}", cfg.yaml())
}

#[test]
fn identical_concurrent_reads_make_one_upstream_call() {
    let p = provider();
    let lasso = Lasso::builder(&config(&p, "")).workers(1).start();
    let replies = concurrent(
        lasso.addr(),
        200,
        "eth_getBlockByNumber",
        json!(["0x10", false]),
    );
    for (id, reply) in &replies {
        assert_eq!(&reply["id"], id, "each client gets its own id back");
        assert_eq!(reply["result"]["hash"], "0xabc", "{reply}");
    }
    assert_eq!(
        p.count("eth_getBlockByNumber"),
        1,
        "one upstream call for 200 identical reads"
    );
    assert_eq!(metric(&lasso, "lasso_multiplexed_total"), 199);
    let status: Value = get(lasso.addr(), "/api/status").json();
    assert_eq!(status["cache"]["multiplexed"], 199, "{}", status["cache"]);
}

#[test]
fn reads_that_differ_in_params_are_not_shared() {
    let p = provider();
    let lasso = Lasso::builder(&config(&p, "")).workers(1).start();
    let a = std::thread::spawn({
        let addr = lasso.addr();
        move || concurrent(addr, 10, "eth_getBlockByNumber", json!(["0x10", false]))
    });
    let b = concurrent(
        lasso.addr(),
        10,
        "eth_getBlockByNumber",
        json!(["0x10", true]),
    );
    assert_eq!(b.len(), 10);
    a.join().unwrap();
    assert_eq!(
        p.count("eth_getBlockByNumber"),
        2,
        "one call per distinct params"
    );
}

#[test]
fn writes_are_never_shared() {
    let p = provider();
    let lasso = Lasso::builder(&config(&p, "")).workers(1).start();
    let replies = concurrent(
        lasso.addr(),
        20,
        "eth_sendRawTransaction",
        json!(["0xf86b"]),
    );
    assert!(
        replies
            .iter()
            .all(|(id, r)| &r["id"] == id && r["result"] == "0x1234")
    );
    assert_eq!(
        p.count("eth_sendRawTransaction"),
        20,
        "every send reaches the provider"
    );
    assert_eq!(metric(&lasso, "lasso_multiplexed_total"), 0);
}

#[test]
fn the_switch_turns_multiplexing_off() {
    let p = provider();
    let lasso = Lasso::builder(&config(&p, "cache:\n  multiplex: false\n"))
        .workers(1)
        .start();
    concurrent(
        lasso.addr(),
        20,
        "eth_getBlockByNumber",
        json!(["0x10", false]),
    );
    assert_eq!(p.count("eth_getBlockByNumber"), 20);
    assert_eq!(metric(&lasso, "lasso_multiplexed_total"), 0);
}

#[test]
fn with_several_workers_it_is_one_upstream_call_per_worker_at_most() {
    let p = provider();
    let lasso = Lasso::builder(&config(&p, "")).workers(2).start();
    let replies = concurrent(
        lasso.addr(),
        200,
        "eth_getBlockByNumber",
        json!(["0x10", false]),
    );
    assert!(replies.iter().all(|(id, r)| &r["id"] == id));
    let calls = p.count("eth_getBlockByNumber");
    assert!(
        (1..=2).contains(&calls),
        "{calls} upstream calls for 2 workers"
    );
    assert_eq!(
        metric(&lasso, "lasso_multiplexed_total"),
        200 - calls as u64
    );
}
