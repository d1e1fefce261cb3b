//! WebSocket subscriptions (issue 4): shared upstream subscriptions per worker, and delivery that survives a
//! provider dropping the connection, stalling, or falling behind: every client receives every block exactly once,
//! in order, with gaps filled; logs likewise. Bad frames get errors or a proper close while other clients carry on.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loadtest::mock::{MockConfig, MockServer};
use serde_json::{Value, json};
use support::ws::{WsClient, WsMessage};
use support::*;

const BLOCK_MS: u64 = 100;

fn mock(logs_per_block: u32) -> MockServer {
    let mut cfg = MockConfig::default();
    cfg.chain.block_time_ms = BLOCK_MS;
    cfg.chain.logs_per_block = logs_per_block;
    cfg.chain.txs_per_block = 2;
    loadtest::mock::start(cfg).expect("mock provider starts")
}

fn lasso_for(mocks: &[&MockServer], workers: usize) -> Lasso {
    let mut providers = String::new();
    for (i, m) in mocks.iter().enumerate() {
        providers.push_str(&format!(
            "      - {{ id: m{}, url: \"{}\", ws_url: \"{}\", priority: {} }}\n",
            i + 1,
            m.url(),
            m.ws_url(),
            i + 1
        ));
    }
    let cfg = format!(
        "routing: {{ merge_interval_ms: 100 }}\n\
         websocket: {{ stall_timeout_ms: 600, unsubscribe_grace_ms: 200, upstream_connect_timeout_ms: 1000 }}\n\
         chains:\n  ethereum:\n    chain_id: 1\n    block_time_ms: {BLOCK_MS}\n    head_poll_ms: 100\n    max_lag_blocks: 5\n    providers:\n{providers}"
    );
    Lasso::builder(&cfg).workers(workers).start()
}

fn subscribe(c: &mut WsClient, params: Value) -> String {
    let mut notes = Vec::new();
    let reply = c.call(1, "eth_subscribe", params, &mut notes);
    reply["result"]
        .as_str()
        .unwrap_or_else(|| panic!("subscribe failed: {reply}"))
        .to_string()
}

fn block_number(v: &Value) -> u64 {
    let s = v["params"]["result"]["number"]
        .as_str()
        .unwrap_or_else(|| panic!("not a head: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// Collects heads until `done` or the deadline; returns their numbers in arrival order.
fn collect_heads(
    c: &mut WsClient,
    sub: &str,
    until: Instant,
    mut done: impl FnMut(&[u64]) -> bool,
) -> Vec<u64> {
    let mut numbers = Vec::new();
    while Instant::now() < until && !done(&numbers) {
        match c.recv(Duration::from_millis(200)) {
            Some(WsMessage::Text(v)) if v["method"] == "eth_subscription" => {
                assert_eq!(v["params"]["subscription"], sub, "{v}");
                numbers.push(block_number(&v));
            }
            Some(WsMessage::Text(v)) => panic!("unexpected message {v}"),
            Some(WsMessage::Close(code, why)) => panic!("closed {code} {why}"),
            None => {}
        }
    }
    numbers
}

fn assert_exactly_once_in_order(numbers: &[u64], what: &str) {
    assert!(numbers.len() >= 2, "{what}: too few heads {numbers:?}");
    for w in numbers.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{what}: gap or duplicate between {} and {}: {numbers:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn many_clients_share_one_upstream_subscription_per_worker() {
    let m1 = mock(0);
    let lasso = lasso_for(&[&m1], 2);
    let mut clients: Vec<(WsClient, String)> = (0..100)
        .map(|_| {
            let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
            let id = subscribe(&mut c, json!(["newHeads"]));
            (c, id)
        })
        .collect();
    let status = get(lasso.addr(), "/api/status").json();
    let ws = &status["websocket"];
    assert_eq!(ws["subscriptions_new_heads"], 100, "{ws}");
    assert!(
        ws["upstream_subscriptions"].as_u64().unwrap() <= 2,
        "at most one upstream subscription per worker: {ws}"
    );
    let ids: std::collections::HashSet<&String> = clients.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 100, "subscription ids are unique");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (c, id) in clients.iter_mut() {
        let heads = collect_heads(c, id, deadline, |n| n.len() >= 5);
        assert_exactly_once_in_order(&heads, "fan-out client");
    }
}

/// Subscribes through `m1` (priority), applies `fault` to it after a few heads, and checks the stream stays whole.
fn failover_keeps_heads_whole(fault: Value, what: &str) {
    let m1 = mock(0);
    let m2 = mock(0);
    let lasso = lasso_for(&[&m1, &m2], 1);
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/priority/ethereum").unwrap();
    let sub = subscribe(&mut c, json!(["newHeads"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut heads = collect_heads(&mut c, &sub, deadline, |n| n.len() >= 5);
    m1.control(fault).unwrap();
    let broke_at = *heads.last().unwrap();
    // Keep reading until well past the failure: the stream must resume and carry on.
    heads.extend(collect_heads(&mut c, &sub, deadline, |n| {
        n.last().is_some_and(|&l| l >= broke_at + 30)
    }));
    assert!(
        heads.last().unwrap() >= &(broke_at + 30),
        "{what}: stream did not resume: {heads:?}\n{}",
        lasso.logs()
    );
    assert_exactly_once_in_order(&heads, what);
    let status = get(lasso.addr(), "/api/status").json();
    assert!(
        status["websocket"]["failovers"].as_u64().unwrap() >= 1,
        "{what}: {}",
        status["websocket"]
    );
}

#[test]
fn heads_survive_a_dropped_provider_connection() {
    failover_keeps_heads_whole(json!({"drop_ws": true}), "connection drop");
}

#[test]
fn heads_survive_a_stalled_provider() {
    failover_keeps_heads_whole(json!({"stall_head": true}), "stall");
}

#[test]
fn heads_survive_a_provider_falling_behind() {
    failover_keeps_heads_whole(json!({"lag_blocks": 20}), "falling behind");
}

#[test]
fn logs_survive_a_dropped_provider_connection() {
    let m1 = mock(3);
    let m2 = mock(3);
    let lasso = lasso_for(&[&m1, &m2], 1);
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/priority/ethereum").unwrap();
    let sub = subscribe(&mut c, json!(["logs", {}]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut logs: Vec<(u64, u64)> = Vec::new();
    let mut dropped_at = None;
    while Instant::now() < deadline {
        let Some(WsMessage::Text(v)) = c.recv(Duration::from_millis(200)) else {
            continue;
        };
        assert_eq!(v["params"]["subscription"], sub.as_str());
        let log = &v["params"]["result"];
        let hex = |k: &str| {
            u64::from_str_radix(log[k].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        };
        logs.push((hex("blockNumber"), hex("logIndex")));
        let blocks: std::collections::BTreeSet<u64> = logs.iter().map(|l| l.0).collect();
        if dropped_at.is_none() && blocks.len() >= 4 {
            m1.control(json!({"drop_ws": true})).unwrap();
            dropped_at = Some(*blocks.last().unwrap());
        }
        if let Some(at) = dropped_at {
            if blocks.last().unwrap() >= &(at + 20) {
                break;
            }
        }
    }
    let at = dropped_at.expect("logs arrived before the drop");
    let mut per_block: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (b, i) in &logs {
        per_block.entry(*b).or_default().push(*i);
    }
    let first = *per_block.keys().next().unwrap();
    let last = *per_block.keys().last().unwrap();
    assert!(
        last >= at + 20,
        "log stream did not resume: last block {last}, drop at {at}\n{}",
        lasso.logs()
    );
    // The first and last blocks may be partial (subscription start / stop mid-block); every block between is whole.
    for b in first + 1..last {
        assert_eq!(
            per_block.get(&b),
            Some(&vec![0, 1, 2]),
            "block {b}: logs {:?}",
            per_block.get(&b)
        );
    }
    let mut sorted = logs.clone();
    sorted.sort();
    assert_eq!(sorted, logs, "logs arrive in order");
}

#[test]
fn unsubscribe_and_upstream_teardown_after_grace() {
    let m1 = mock(0);
    let lasso = lasso_for(&[&m1], 1);
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let sub = subscribe(&mut c, json!(["newHeads"]));
    let mut notes = Vec::new();
    assert_eq!(
        c.call(2, "eth_unsubscribe", json!([sub]), &mut notes)["result"],
        true
    );
    assert_eq!(
        c.call(3, "eth_unsubscribe", json!([sub]), &mut notes)["result"],
        false,
        "already gone"
    );
    assert_eq!(
        c.call(4, "eth_unsubscribe", json!(["0xdeadbeef"]), &mut notes)["result"],
        false,
        "unknown id"
    );
    eventually(
        Duration::from_secs(10),
        "the upstream subscription is torn down",
        || {
            let status = get(lasso.addr(), "/api/status").json();
            match &status["websocket"] {
                ws if ws["upstream_subscriptions"] == 0 => Ok(()),
                ws => Err(ws.to_string()),
            }
        },
    );
    // Ordinary calls work over the same socket.
    let reply = c.call(5, "eth_chainId", json!([]), &mut notes);
    assert_eq!(reply["result"], "0x1");
    let reply = c.call(6, "eth_blockNumber", json!([]), &mut notes);
    assert!(
        reply["result"].as_str().unwrap().starts_with("0x"),
        "{reply}"
    );
}

#[test]
fn unknown_routes_are_refused_at_the_handshake() {
    let m1 = mock(0);
    let lasso = lasso_for(&[&m1], 1);
    for (path, code) in [
        ("/ws/rpc/nochain", "404"),
        ("/ws/rpc/profile/nope/ethereum", "404"),
        ("/ws/rpc/provider/zz/ethereum", "404"),
        ("/ws/rpc/quickest/ethereum", "400"),
    ] {
        let err = WsClient::connect(lasso.addr(), path)
            .err()
            .unwrap_or_else(|| panic!("{path} was accepted"));
        assert!(
            err.starts_with(&format!("HTTP/1.1 {code}")),
            "{path}: {err}"
        );
        assert!(
            err.contains("\"error\""),
            "{path}: JSON body saying why: {err}"
        );
    }
}

#[test]
fn bad_frames_get_errors_or_a_proper_close_and_others_carry_on() {
    let m1 = mock(0);
    let lasso = lasso_for(&[&m1], 1);
    let mut bystander = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let sub = subscribe(&mut bystander, json!(["newHeads"]));

    // Invalid JSON: a JSON-RPC parse error, the connection stays.
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    c.send_frame(loadtest::ws::OP_TEXT, b"{not json");
    match c.recv(Duration::from_secs(5)) {
        Some(WsMessage::Text(v)) => assert_eq!(v["error"]["code"], -32700, "{v}"),
        other => panic!("{other:?}"),
    }
    let mut notes = Vec::new();
    assert_eq!(
        c.call(9, "eth_chainId", json!([]), &mut notes)["result"],
        "0x1"
    );
    // A JSON-RPC request in a binary frame (web3.py sends them so) is served like text; the answer is a text frame.
    c.send_frame(
        loadtest::ws::OP_BINARY,
        br#"{"jsonrpc":"2.0","id":"bin","method":"eth_chainId","params":[]}"#,
    );
    match c.recv(Duration::from_secs(5)) {
        Some(WsMessage::Text(v)) => {
            assert_eq!(v["id"], "bin", "{v}");
            assert_eq!(v["result"], "0x1", "{v}");
        }
        other => panic!("binary request: expected a text answer, got {other:?}"),
    }
    // Bad subscription params.
    let reply = c.call(10, "eth_subscribe", json!(["bogus"]), &mut notes);
    assert_eq!(reply["error"]["code"], -32602, "{reply}");

    type Send = Box<dyn Fn(&mut WsClient)>;
    let cases: Vec<(&str, Send, u16)> = vec![
        (
            "binary message that is not UTF-8",
            Box::new(|c: &mut WsClient| {
                c.send_frame(loadtest::ws::OP_BINARY, &[0xde, 0xad, 0xbe, 0xef])
            }),
            1007,
        ),
        (
            "unmasked frame",
            Box::new(|c: &mut WsClient| c.send_raw(&[0x81, 0x02, b'h', b'i'])),
            1002,
        ),
        (
            "garbage bytes",
            Box::new(|c: &mut WsClient| c.send_raw(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
            1002,
        ),
        (
            "oversized frame",
            Box::new(|c: &mut WsClient| {
                c.send_raw(&[0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4])
            }),
            1009,
        ),
        (
            "invalid UTF-8 text",
            Box::new(|c: &mut WsClient| c.send_frame(loadtest::ws::OP_TEXT, &[0xc3, 0x28])),
            1007,
        ),
    ];
    for (what, send, code) in cases {
        let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
        send(&mut c);
        match c.recv(Duration::from_secs(5)) {
            Some(WsMessage::Close(got, _)) => assert_eq!(got, code, "{what}"),
            other => panic!("{what}: expected close {code}, got {other:?}"),
        }
    }
    // The bystander still receives heads, and the server still answers HTTP.
    let heads = collect_heads(
        &mut bystander,
        &sub,
        Instant::now() + Duration::from_secs(5),
        |n| n.len() >= 3,
    );
    assert_exactly_once_in_order(&heads, "bystander");
    assert_eq!(get(lasso.addr(), "/api/health").status, 200);
}

#[test]
fn draining_closes_sockets_with_going_away() {
    let m1 = mock(0);
    let mut lasso = lasso_for(&[&m1], 1);
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let _ = subscribe(&mut c, json!(["newHeads"]));
    lasso.send_signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = None;
    while Instant::now() < deadline && closed.is_none() {
        if let Some(WsMessage::Close(code, _)) = c.recv(Duration::from_millis(200)) {
            closed = Some(code);
        }
    }
    assert_eq!(
        closed,
        Some(1001),
        "clients get 1001 so they reconnect elsewhere"
    );
    assert!(lasso.wait_exit(Duration::from_secs(10)).success());
}
