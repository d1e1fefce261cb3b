//! Stateful filters through the real binary, in front of two real nodes (hardening issue, item 12). A filter lives
//! in one node's memory: with load balancing across two anvil nodes, a filter's changes must always be read from the
//! node that made it (half of them got "filter not found" before), every block mined on that node shows up exactly
//! once, and when that node leaves the configuration the client gets a "filter not found" error it can recover from
//! by making a new filter.

mod support;

use serde_json::{Value, json};
use support::Lasso;
use support::anvil::*;

fn call(lasso: &Lasso, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    support::post(lasso.addr(), "/rpc/devnet", &body).json()
}

#[test]
fn filters_stay_on_the_node_that_made_them_under_load_balancing() {
    // Different balances give the nodes different state roots, so their blocks have different hashes.
    let (n1, n2) = (
        Anvil::start("anvil-1", &[]),
        Anvil::start("anvil-2", &["--balance", "5000"]),
    );
    let config = format!(
        "chains:\n  devnet:\n    chain_id: {ANVIL_CHAIN_ID}\n    default_strategy: load-balanced\n    hedge: false\n    \
         providers:\n      - id: n1\n        url: {}\n      - id: n2\n        url: {}\n",
        n1.http_url(),
        n2.http_url()
    );
    let lasso = Lasso::start(&config);

    // Several filters, so both nodes get some under load balancing.
    let filters: Vec<String> = (0..6)
        .map(|i| {
            let v = call(&lasso, "eth_newBlockFilter", json!([]));
            v["result"]
                .as_str()
                .unwrap_or_else(|| panic!("eth_newBlockFilter #{i}: {v}"))
                .to_string()
        })
        .collect();

    for round in 0..4 {
        // One new block on each node; each filter sees exactly the block of its own node.
        n1.rpc("evm_mine", json!([]));
        n2.rpc("evm_mine", json!([]));
        let head1 = n1.rpc("eth_getBlockByNumber", json!(["latest", false]))["hash"].clone();
        let head2 = n2.rpc("eth_getBlockByNumber", json!(["latest", false]))["hash"].clone();
        assert_ne!(
            head1, head2,
            "the two nodes must have different blocks for this test to mean anything"
        );
        for (i, id) in filters.iter().enumerate() {
            let v = call(&lasso, "eth_getFilterChanges", json!([id]));
            let changes = v["result"]
                .as_array()
                .unwrap_or_else(|| panic!("round {round}, filter #{i} ({id}): {v}"));
            assert_eq!(changes.len(), 1, "round {round}, filter #{i}: {v}");
            assert!(
                changes[0] == head1 || changes[0] == head2,
                "round {round}, filter #{i}: a block of neither node: {v}"
            );
        }
    }
    // The node that made a filter leaves the configuration: its filters answer "filter not found" (-32000).
    let reduced = format!(
        "chains:\n  devnet:\n    chain_id: {ANVIL_CHAIN_ID}\n    default_strategy: load-balanced\n    hedge: false\n    \
         providers:\n      - id: n2\n        url: {}\n",
        n2.http_url()
    );
    std::fs::write(lasso.config_path(), reduced).unwrap();
    lasso.send_signal(libc::SIGHUP);
    support::eventually(
        std::time::Duration::from_secs(20),
        "reload to one node",
        || {
            let status: Value = support::get(lasso.addr(), "/api/status").json();
            let n = status["chains"][0]["providers"]
                .as_array()
                .map_or(0, |p| p.len());
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} providers"))
            }
        },
    );
    let mut lost = 0;
    for id in &filters {
        let v = call(&lasso, "eth_getFilterChanges", json!([id]));
        if let Some(err) = v.get("error") {
            assert_eq!(err["code"], -32000, "{v}");
            assert!(
                err["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("filter not found"),
                "{v}"
            );
            lost += 1;
        } else {
            assert!(v["result"].is_array(), "{v}");
        }
    }
    assert!(
        lost > 0 && lost < filters.len(),
        "load balancing put filters on both nodes: {lost} lost of {}",
        filters.len()
    );
    // The client recovers by making a new filter.
    let v = call(&lasso, "eth_newBlockFilter", json!([]));
    assert!(v["result"].is_string(), "{v}");
}
