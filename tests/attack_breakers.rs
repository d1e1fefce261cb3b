//! Breakers under attack (hardening issue, item 4), against the real binary: breakers are shared by every client, so
//! a failure one client causes must not open a healthy provider for everyone. A heavy call that misses its deadline
//! on every provider, an answer too large for the configured bound, or a flood of either, leave the providers'
//! breakers closed, and the next client (a light read) is answered by the provider it would have been answered by.

mod support;

use std::thread;

use serde_json::{Value, json};
use support::*;

/// `state` of every provider of chain `ethereum` in `/api/status`, by provider id.
fn provider_states(lasso: &Lasso) -> Vec<(String, String)> {
    let status: Value = get(lasso.addr(), "/api/status").json();
    status["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter(|c| c["name"] == "ethereum")
        .flat_map(|c| c["providers"].as_array().expect("providers").clone())
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                p["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn assert_no_breaker_open(lasso: &Lasso, after: &str) {
    for (id, state) in provider_states(lasso) {
        assert_ne!(
            state, "circuit_open",
            "{after}: provider {id} was put in circuit_open"
        );
    }
}

/// Sends `n` copies of `body` at once, each on its own connection, and returns the answers.
fn concurrently(lasso: &Lasso, n: usize, body: &str) -> Vec<Response> {
    let addr = lasso.addr();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let body = body.to_string();
            thread::spawn(move || post(addr, "/rpc/ethereum", &body))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A light read from another client: answered by the first provider, with its own id.
fn light_read_is_served_by_p1(lasso: &Lasso, after: &str) {
    for i in 0..5 {
        let r = post(
            lasso.addr(),
            "/rpc/ethereum",
            &rpc(json!(1000 + i), "eth_blockNumber", json!([])),
        );
        assert_eq!(
            r.status,
            200,
            "{after}: a light read of another client: {}",
            r.describe()
        );
        let v: Value = r.json();
        assert_eq!(v["id"], json!(1000 + i), "{after}: {}", r.describe());
        assert!(v.get("result").is_some(), "{after}: {}", r.describe());
        assert_eq!(
            served_by(&v).as_deref(),
            Some("p1"),
            "{after}: {}",
            r.describe()
        );
    }
}

#[test]
fn heavy_calls_missing_their_deadline_everywhere_do_not_open_healthy_providers() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    // Both providers take 400 ms for everything: light reads (2 s deadline) are fine, an eth_call with a 150 ms
    // deadline cannot be answered by anyone. That is the request's doing, not a provider's.
    let config = single_chain(&[&p1, &p2]).routing("deadlines_ms", "{ call: 150 }");
    let lasso = Lasso::builder(&config.yaml()).workers(1).start();
    p1.set_fault(Fault::Delay(400));
    p2.set_fault(Fault::Delay(400));

    let call = rpc(
        json!(7),
        "eth_call",
        json!([{"to": "0x0000000000000000000000000000000000000001"}, "latest"]),
    );
    for wave in 0..3 {
        for r in concurrently(&lasso, 8, &call) {
            assert_eq!(
                r.status,
                504,
                "wave {wave}: a heavy call past its deadline: {}",
                r.describe()
            );
            assert_eq!(
                error_code(&r.json()),
                Some(-32012),
                "wave {wave}: {}",
                r.describe()
            );
        }
    }
    assert_no_breaker_open(&lasso, "24 eth_calls past their deadline on every provider");
    light_read_is_served_by_p1(&lasso, "24 eth_calls past their deadline on every provider");
}

#[test]
fn answers_too_large_for_the_bound_do_not_open_healthy_providers() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let config = single_chain(&[&p1, &p2]).upstream("max_response_bytes", 65536);
    let lasso = Lasso::builder(&config.yaml()).workers(1).start();
    // Every provider answers this client's logs query with 1 MB: the query asks for too much, the providers are fine.
    for p in [&p1, &p2] {
        p.set_result(
            "eth_getLogs",
            Value::String(support::mock::big_result(1 << 20)),
        );
    }

    let logs = rpc(
        json!(9),
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "0x100000"}]),
    );
    for wave in 0..3 {
        for r in concurrently(&lasso, 8, &logs) {
            let v: Value = r.json();
            assert!(
                error_code(&v).is_some(),
                "wave {wave}: an answer over max_response_bytes reached the client: {}",
                &r.describe()[..200.min(r.describe().len())]
            );
        }
    }
    assert_no_breaker_open(&lasso, "24 answers over max_response_bytes");
    light_read_is_served_by_p1(&lasso, "24 answers over max_response_bytes");
}
