//! Indexer-grade behaviour through the real binary in front of real anvil nodes (issue 12, items 4 and 5): a send a
//! node already knows is answered with its hash (and a mined one, refused as "nonce too low", too); a broadcast send
//! reaches every node; `eth_blockNumber` never decreases for a client alternating between a node at N and one at
//! N-5.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::Lasso;
use support::anvil::*;

fn call(lasso: &Lasso, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    support::post(lasso.addr(), "/rpc/devnet", &body).json()
}

fn config(nodes: &[&Anvil], strategy: &str, extra: &str) -> String {
    let mut yaml = format!(
        "chains:\n  devnet:\n    chain_id: {ANVIL_CHAIN_ID}\n    default_strategy: {strategy}\n    hedge: false\n{extra}    providers:\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "      - id: n{}\n        url: {}\n",
            i + 1,
            n.http_url()
        ));
    }
    yaml
}

/// A transfer from ACCOUNT0 with `nonce`, signed by `node` (any anvil node signs the same bytes).
fn signed_transfer(node: &Anvil, nonce: u64) -> String {
    let tx = json!({
        "from": ACCOUNT0, "to": ACCOUNT1, "value": "0x1", "gas": "0x5208",
        "gasPrice": "0x77359400", "nonce": format!("0x{nonce:x}"), "chainId": format!("0x{ANVIL_CHAIN_ID:x}"),
    });
    node.rpc("eth_signTransaction", json!([tx]))
        .as_str()
        .expect("a signed transaction")
        .to_string()
}

#[test]
fn a_send_one_node_already_knows_is_answered_with_its_hash() {
    let (n1, n2) = (
        Anvil::start("anvil-1", &["--no-mining"]),
        Anvil::start("anvil-2", &["--no-mining"]),
    );
    let lasso = Lasso::start(&config(&[&n1, &n2], "priority", ""));
    let raw = signed_transfer(&n1, 0);
    // The client's first attempt reached n1 but its answer was lost: n1 has it in its pool.
    let hash = n1.rpc("eth_sendRawTransaction", json!([raw]));
    let again = call(&lasso, "eth_sendRawTransaction", json!([raw]));
    assert_eq!(again["result"], hash, "{again}");
    // Mined since: the node now says "nonce too low", and the chain has it.
    n1.rpc("evm_mine", json!([]));
    assert!(!n1.rpc("eth_getTransactionReceipt", json!([hash])).is_null());
    let after = call(&lasso, "eth_sendRawTransaction", json!([raw]));
    assert_eq!(after["result"], hash, "{after}");
    // Another transaction with a used nonce is still refused.
    let other = json!({
        "from": ACCOUNT0, "to": ACCOUNT0, "value": "0x2", "gas": "0x5208",
        "gasPrice": "0x77359400", "nonce": "0x0", "chainId": format!("0x{ANVIL_CHAIN_ID:x}"),
    });
    let conflicting = n1.rpc("eth_signTransaction", json!([other]));
    assert_ne!(conflicting.as_str(), Some(raw.as_str()));
    let refused = call(&lasso, "eth_sendRawTransaction", json!([conflicting]));
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.to_ascii_lowercase().contains("nonce")),
        "{refused}"
    );
    // n2 was never needed.
    assert!(n2.rpc("eth_getTransactionByHash", json!([hash])).is_null());
}

#[test]
fn a_broadcast_send_reaches_every_node() {
    let (n1, n2) = (
        Anvil::start("anvil-1", &["--no-mining"]),
        Anvil::start("anvil-2", &["--no-mining"]),
    );
    let lasso = Lasso::start(&config(
        &[&n1, &n2],
        "priority",
        "    broadcast_sends: true\n",
    ));
    let raw = signed_transfer(&n1, 0);
    let sent = call(&lasso, "eth_sendRawTransaction", json!([raw]));
    let hash = sent["result"].as_str().unwrap_or_else(|| panic!("{sent}"));
    for node in [&n1, &n2] {
        let status = node.rpc("txpool_status", json!([]));
        assert_eq!(quantity(&status["pending"]), 1, "{status}");
        let tx = node.rpc("eth_getTransactionByHash", json!([hash]));
        assert_eq!(tx["hash"], hash, "{tx}");
    }
}

#[test]
fn block_number_never_decreases_across_nodes_at_different_heights() {
    let (ahead, behind) = (Anvil::start("anvil-1", &[]), Anvil::start("anvil-2", &[]));
    ahead.rpc("anvil_mine", json!(["0xf"]));
    behind.rpc("anvil_mine", json!(["0xa"]));
    let lasso = Lasso::start(&config(
        &[&ahead, &behind],
        "round-robin",
        "    max_lag_blocks: 100\n    head_poll_ms: 100\n",
    ));
    // The consensus head is known once the nodes were probed.
    support::eventually(Duration::from_secs(10), "the consensus head", || {
        let status = support::get(lasso.addr(), "/api/metrics/devnet").json();
        match status["head"].as_u64() {
            Some(15) => Ok(()),
            other => Err(format!("head {other:?}")),
        }
    });
    let mut seen = Vec::new();
    for _ in 0..20 {
        let v = call(&lasso, "eth_blockNumber", json!([]));
        seen.push(quantity(&v["result"]));
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.iter().all(|&n| n >= 15),
        "eth_blockNumber went backwards: {seen:?}"
    );
    // The node behind was asked all along (it answers 10 directly).
    assert_eq!(quantity(&behind.rpc("eth_blockNumber", json!([]))), 10);
}
