//! Parsing under attack (hardening issue, items 1 and 2): what Lasso forwards means to the provider what Lasso thinks
//! it means. Envelope members spelled twice or in another case are refused (Go-based nodes would take the last
//! case-insensitive match); a provider's reply with bytes after it, or a wrong `jsonrpc`, is a provider failure; no
//! nesting depth, from a client over HTTP or WebSocket, reaches a recursive parser.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::ws::{WsClient, WsMessage};
use support::*;

fn two_providers() -> (MockProvider, MockProvider, Lasso) {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let lasso = Lasso::builder(&single_chain(&[&p1, &p2]).yaml())
        .workers(1)
        .start();
    (p1, p2, lasso)
}

/// Posts each body and checks the JSON-RPC error code of the answer (of its first member for a batch).
fn refused_with(lasso: &Lasso, bodies: &[&str], code: i64) {
    for body in bodies {
        let r = post(lasso.addr(), "/rpc/ethereum", body);
        let v: Value = r.json();
        let error = if v.is_array() {
            &v[0]["error"]
        } else {
            &v["error"]
        };
        assert_eq!(error["code"], code, "{body}: {}", r.describe());
    }
}

#[test]
fn case_variant_and_duplicate_envelope_members_are_refused() {
    let (p1, p2, lasso) = two_providers();
    let attacks = [
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","Method":"debug_setHead","params":["0x1"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","method":"debug_setHead"}"#,
        r#"{"jsonrpc":"2.0","id":1,"ID":"4242","method":"eth_getBalance","params":["0x01","latest"]}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","PARAMS":[1]}]"#,
    ];
    refused_with(&lasso, &attacks, -32600);
    for p in [&p1, &p2] {
        assert_eq!(
            p.count("debug_setHead") + p.count("eth_getBalance"),
            0,
            "reached the node"
        );
        assert!(p.requests().is_empty(), "{}: {:?}", p.name(), p.requests());
    }
}

#[test]
fn string_escapes_the_parser_would_read_leniently_are_refused_before_any_provider() {
    let (p1, p2, lasso) = two_providers();
    // `\u` takes four hex digits. A lenient skip reads `\ue00"` as an escape that swallows the quote, and so one
    // string where a strict parser sees the string end (and a different body); such a body is never forwarded.
    let attacks = [
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["\ue00"abc","latest"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"data":"\u12"x"},"latest"]}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["\u00"1","latest"]}]"#,
    ];
    refused_with(&lasso, &attacks, -32700);
    // Every valid escape still passes, byte for byte.
    let valid = r#"{"jsonrpc":"2.0","id":"\u00e9\"","method":"eth_getBalance","params":["0x\u0030\/\\","latest"]}"#;
    let r = post(lasso.addr(), "/rpc/ethereum", valid);
    let v: Value = r.json();
    assert_eq!(v["id"], "\u{e9}\"", "{}", r.describe());
    assert!(v.get("result").is_some(), "{}", r.describe());
    let forwarded = p1
        .requests()
        .into_iter()
        .chain(p2.requests())
        .collect::<Vec<_>>();
    assert_eq!(
        forwarded.len(),
        1,
        "only the valid body reached a provider: {forwarded:?}"
    );
}

#[test]
fn bytes_after_a_providers_reply_never_reach_the_client() {
    let (p1, p2, lasso) = two_providers();
    p1.set_fault(Fault::AppendObject);
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(7), "eth_getBalance", json!(["0x01", "latest"])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let v: Value = r.json();
    assert_eq!(v["id"], 7);
    assert_eq!(
        v["result"]["provider"], "p2",
        "the appended object is a provider failure: {v}"
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("forged"));
    assert_eq!(p2.count("eth_getBalance"), 1);
}

#[test]
fn deep_nesting_from_a_client_is_refused_and_the_process_lives() {
    let mock = MockProvider::start("p1");
    let cfg = single_chain(&[&mock]).yaml();
    let lasso = Lasso::builder(&format!("websocket: {{ max_in_flight: 1 }}\n{cfg}"))
        .workers(1)
        .start();
    let deep = "[".repeat(8 << 20);

    let r = post(lasso.addr(), "/rpc/ethereum", &deep);
    assert_eq!(r.rpc_code(), Some(-32600), "{}", r.describe());
    // Over WebSocket with the in-flight limit reached (the path that read the id without a depth guard).
    mock.set_fault(Fault::Hang);
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    c.send_frame(
        0x1,
        rpc(json!(1), "eth_getBalance", json!(["0x01", "latest"])).as_bytes(),
    );
    c.send_frame(0x1, "[".repeat(4 << 20).as_bytes());
    let reply: Value = match c.recv(Duration::from_secs(10)) {
        Some(WsMessage::Text(v)) => v,
        other => panic!("no answer to the deep message: {other:?}"),
    };
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert_eq!(reply["id"], Value::Null);
    mock.set_fault(Fault::None);
    let v: Value = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(2), "eth_chainId", json!([])),
    )
    .json();
    assert_eq!(v["result"], "0x1", "the process is alive and serving");
}
