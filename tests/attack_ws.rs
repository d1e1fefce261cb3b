//! WebSocket memory bounds under attack (hardening issue, item 6): control frames count against a connection's queue
//! cap, and the bytes queued to all clients of a worker have a budget; past either, the slow client is closed with
//! a close code, never the process, and other clients are served.

mod support;

use std::time::Duration;

use serde_json::json;
use support::ws::{WsClient, WsMessage};
use support::*;

/// `bytes` worth of masked pings with 125-byte payloads, in one buffer.
fn pings(bytes: usize) -> Vec<u8> {
    let payload = [b'p'; 125];
    let mut frame = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
    );
    let mut out = Vec::with_capacity(bytes + frame.len());
    while out.len() < bytes {
        out.extend_from_slice(&frame);
    }
    out
}

/// Reads until the server closes; returns the close code (1006 for a bare close).
fn close_code(c: &mut WsClient) -> u16 {
    for _ in 0..100_000 {
        match c.recv(Duration::from_secs(10)) {
            Some(WsMessage::Close(code, _)) => return code,
            Some(WsMessage::Text(_)) => {}
            None => panic!("the server neither closed nor sent anything for 10 s"),
        }
    }
    panic!("no close after 100000 messages")
}

fn lasso(websocket: &str) -> (MockProvider, Lasso) {
    let mock = MockProvider::start("p1");
    let cfg = single_chain(&[&mock]).yaml();
    let lasso = Lasso::builder(&format!("websocket: {websocket}\n{cfg}"))
        .workers(1)
        .start();
    (mock, lasso)
}

fn chain_id_over_ws(lasso: &Lasso) {
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let mut notes = Vec::new();
    assert_eq!(
        c.call(1, "eth_chainId", json!([]), &mut notes)["result"],
        "0x1"
    );
}

#[test]
fn pings_from_a_client_that_never_reads_are_bounded_by_its_queue_cap() {
    let (_mock, lasso) = lasso("{ max_queued_bytes: 1048576 }");
    let before = rss_bytes(lasso.pid());
    let mut flooder = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    // 40 MiB of pings, none of the pongs read until the end.
    flooder.send_raw(&pings(40 << 20));
    let grown = rss_bytes(lasso.pid()).saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "40 MiB of pings grew RSS by {grown} bytes (per-connection cap 1 MiB)"
    );
    let code = close_code(&mut flooder);
    assert!(
        code == 1008 || code == 1006,
        "the flooder is closed as too slow, got {code}"
    );
    chain_id_over_ws(&lasso);
}

#[test]
fn the_worker_budget_cuts_the_slowest_clients_and_keeps_serving_others() {
    // Each client may queue 8 MiB, but all of them together only 2 MiB.
    let (_mock, lasso) = lasso("{ max_queued_bytes: 8388608, max_total_queued_bytes: 2097152 }");
    let before = rss_bytes(lasso.pid());
    let mut slow: Vec<WsClient> = (0..3)
        .map(|_| WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap())
        .collect();
    for c in &mut slow {
        c.send_raw(&pings(24 << 20));
    }
    let grown = rss_bytes(lasso.pid()).saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "3 x 24 MiB of pings grew RSS by {grown} bytes (worker budget 2 MiB)"
    );
    for c in &mut slow {
        let code = close_code(c);
        assert!(
            code == 1008 || code == 1006,
            "a slow client closed with {code}"
        );
    }
    chain_id_over_ws(&lasso);
}
