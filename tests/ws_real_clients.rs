//! Real WebSocket clients through Lasso to real nodes (issue acceptance 3): two ganache instances mining a block every
//! second are the providers (HTTP and WebSocket on the same port); in front of Lasso's `/ws/rpc/devnet`,
//! `tests/js/ws_clients.mjs` runs viem (`watchBlocks`, `watchEvent` on a contract it deploys and calls over the same
//! socket), ethers v6 `WebSocketProvider` unchanged (`getBlockNumber`, `getNetwork`, `on("block")`,
//! `eth_subscribe`/`eth_unsubscribe`) and wscat (`-x eth_subscribe newHeads -w 3`).
//!
//! Needs Node 20 and `npm ci --prefix tests/js` (CI's `.ci/run` does it; wscat is a devDependency there). A missing
//! `node` or `tests/js/node_modules` is a test failure, not a skip.
//!
//! Self-contained on purpose, like `tests/ganache.rs` (std + serde_json + tempfile): it spawns ganache x2 and Lasso on
//! loopback, waits for each with bounded deadlines (the whole test stays under a minute), and kills everything on drop.
//!
//! The two ganache nodes are independent chains (same genesis, different blocks after it), so the chain uses
//! `priority` routing (p1 carries everything, p2 is a standby) and `hedge: false` (a hedged read answered by p2 would
//! see another chain's state, e.g. a nonce of 0). After the clients finish, the test checks on the nodes directly
//! that the three transactions sent over WebSocket landed on p1 and none on p2.

mod support;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::ganache::*;

/// ganache --wallet.deterministic account 0: it deploys the contract and sends two calls (3 transactions).
const ACCOUNT0: &str = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";
const TXS_SENT: u64 = 3;
/// Whole-test budget; each phase below has its own, smaller deadline, taken from what is left.
const TEST_BUDGET: Duration = Duration::from_secs(58);
const GANACHE_READY: Duration = Duration::from_secs(20);
const LASSO_READY: Duration = Duration::from_secs(10);
const CLIENT_RUN: Duration = Duration::from_secs(35);

fn node_quantity(port: u16, method: &str, params: &str) -> u64 {
    let req = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#);
    let body = rpc_post(
        ([127, 0, 0, 1], port).into(),
        "/",
        &req,
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{method} on port {port}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} on port {port}: not JSON ({e}): {body}"));
    let hex = v["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} on port {port}: no string result: {body}"));
    u64::from_str_radix(hex.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{method} on port {port}: bad quantity {hex}: {e}"))
}

fn report(procs: &[&Proc]) -> String {
    procs.iter().map(|p| p.diagnostics()).collect()
}

fn lasso_config(port1: u16, port2: u16) -> String {
    format!(
        "chains:\n  devnet:\n    chain_id: {CHAIN_ID}\n    block_time_ms: 1000\n    default_strategy: priority\n    \
         hedge: false\n    providers:\n      \
         - id: p1\n        url: http://127.0.0.1:{port1}\n        ws_url: ws://127.0.0.1:{port1}\n        priority: 1\n      \
         - id: p2\n        url: http://127.0.0.1:{port2}\n        ws_url: ws://127.0.0.1:{port2}\n        priority: 2\n"
    )
}

#[test]
fn viem_ethers_wscat_over_websocket_through_lasso_to_ganache() {
    let started = Instant::now();
    let left = || TEST_BUDGET.saturating_sub(started.elapsed());
    let root = repo_root();
    let node = find_node();
    let js = root.join("tests/js");
    let cli = js.join("node_modules/ganache/dist/node/cli.js");
    for need in [
        cli.clone(),
        js.join("node_modules/ethers"),
        js.join("node_modules/viem"),
        js.join("node_modules/wscat/bin/wscat"),
    ] {
        assert!(
            need.exists(),
            "tests/js/node_modules is missing or incomplete (no {}): run `npm ci --prefix tests/js` (bash .ci/run does)",
            need.display()
        );
    }

    // ---- two ganache nodes, mining every second, started together, then awaited --------------------------------------
    let (port1, port2) = (free_port(), free_port());
    let mut g1 = start_ganache(
        "ganache-p1",
        &node,
        &cli,
        port1,
        &["--miner.blockTime", "1"],
    );
    let mut g2 = start_ganache(
        "ganache-p2",
        &node,
        &cli,
        port2,
        &["--miner.blockTime", "1"],
    );
    let deadline = Instant::now() + GANACHE_READY.min(left());
    wait_ganache(&mut g1, port1, deadline);
    wait_ganache(&mut g2, port2, deadline);
    eprintln!(
        "ganache p1 on {port1}, p2 on {port2} ready after {:?}",
        started.elapsed()
    );

    // ---- Lasso config + process ------------------------------------------------------------------------------------
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("chains.yml");
    std::fs::write(&config, lasso_config(port1, port2)).expect("write config");

    let (tx, rx) = mpsc::channel();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lasso"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--port", "0", "--bind", "127.0.0.1", "--workers", "2"])
        .env("NO_COLOR", "1")
        .env_remove("LOG_FORMAT")
        .env_remove("LASSO_CHAINS_PATH")
        .env_remove("LASSO_WORKERS")
        .env_remove("PORT")
        .env_remove("LASSO_BIND");
    let mut lasso = Proc::spawn("lasso", &mut cmd, Some(tx));

    let lasso_limit = LASSO_READY.min(left());
    let addr = wait_listening(&mut lasso, rx, lasso_limit);
    let ws_url = format!("ws://{addr}/ws/rpc/devnet");
    eprintln!(
        "lasso listening on {addr} after {:?}; LASSO_WS_URL={ws_url}",
        started.elapsed()
    );

    // ---- the real clients ------------------------------------------------------------------------------------------
    let client_limit = CLIENT_RUN.min(left());
    let mut cmd = Command::new(&node);
    cmd.arg(js.join("ws_clients.mjs"))
        .current_dir(&root)
        .env("LASSO_WS_URL", &ws_url)
        .env("LASSO_CHAIN_ID", CHAIN_ID.to_string())
        .env(
            "LASSO_JS_TIMEOUT_MS",
            client_limit
                .saturating_sub(Duration::from_secs(3))
                .as_millis()
                .to_string(),
        );
    let mut client = Proc::spawn("ws_clients.mjs", &mut cmd, None);
    let status = client.wait_for(client_limit);
    match status {
        Some(st) if st.success() => {}
        Some(st) => panic!(
            "ws_clients.mjs failed ({st}) against {ws_url}\n{}",
            report(&[&client, &lasso, &g1, &g2])
        ),
        None => panic!(
            "ws_clients.mjs did not finish within {client_limit:?} against {ws_url}\n{}",
            report(&[&client, &lasso, &g1, &g2])
        ),
    }
    eprint!("{}", client.stdout.text());

    // Lasso must still be up, and the transactions sent over WebSocket must have gone to p1 (priority 1) only.
    assert!(
        lasso.exited().is_none(),
        "lasso exited during the client run\n{}",
        report(&[&client, &lasso, &g1, &g2])
    );
    let params = format!(r#"["{ACCOUNT0}","latest"]"#);
    let nonce1 = node_quantity(port1, "eth_getTransactionCount", &params);
    let nonce2 = node_quantity(port2, "eth_getTransactionCount", &params);
    assert_eq!(
        (nonce1, nonce2),
        (TXS_SENT, 0),
        "transactions of {ACCOUNT0} on (p1, p2): want all {TXS_SENT} on p1 (priority 1) and none on p2\n{}",
        report(&[&client, &lasso, &g1, &g2])
    );

    let elapsed = started.elapsed();
    eprintln!("WebSocket real-client test passed in {elapsed:?}");
    assert!(
        elapsed < TEST_BUDGET + Duration::from_secs(1),
        "test took {elapsed:?}, budget {TEST_BUDGET:?}"
    );
    // Drop order: client, lasso, g2, g1 — all killed and reaped.
}
