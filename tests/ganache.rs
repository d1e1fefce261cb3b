//! Real Ethereum node behind Lasso: two ganache instances as providers, real clients (ethers v6 + viem) in front.
//!
//! Needs Node 20 and `npm ci --prefix tests/js` (CI's `.ci/run` does it). A missing `node` or
//! `tests/js/node_modules` is a test failure, not a skip: this is the only end-to-end test against a real node.
//!
//! It spawns ganache x2 and Lasso (helpers in tests/support/ganache.rs), waits for each to be ready with bounded
//! deadlines, runs `tests/js/ganache_client.mjs`, and kills everything on drop.

mod support;

use support::ganache::*;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whole-test budget; each phase below has its own, smaller deadline.
const TEST_BUDGET: Duration = Duration::from_secs(85);
const GANACHE_READY: Duration = Duration::from_secs(30);
const LASSO_READY: Duration = Duration::from_secs(20);
const CLIENT_RUN: Duration = Duration::from_secs(45);

#[test]
fn listening_address_parsing() {
    assert_eq!(
        listening_address(
            "2025-01-01T00:00:00Z  INFO lasso: listening address=127.0.0.1:4000 workers=2"
        )
        .as_deref(),
        Some("127.0.0.1:4000")
    );
    assert_eq!(
        listening_address("INFO lasso: listening \u{1b}[3maddress\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:55 workers=1")
            .as_deref(),
        Some("127.0.0.1:55")
    );
    assert_eq!(
        listening_address("INFO listening address=[::1]:9 workers=1").as_deref(),
        Some("[::1]:9")
    );
    assert_eq!(listening_address("INFO starting address=127.0.0.1:1"), None);
}

#[test]
fn ethers_and_viem_through_lasso_to_ganache() {
    let started = Instant::now();
    let root = repo_root();
    let node = find_node();
    let js = root.join("tests/js");
    let cli = js.join("node_modules/ganache/dist/node/cli.js");
    assert!(
        cli.is_file()
            && js.join("node_modules/ethers").is_dir()
            && js.join("node_modules/viem").is_dir(),
        "tests/js/node_modules is missing or incomplete (no {}): run `npm ci --prefix tests/js` (bash .ci/run does)",
        cli.display()
    );

    // ---- two ganache nodes, started together, then awaited ---------------------------------------------------------
    let (port1, port2) = (free_port(), free_port());
    let mut g1 = start_ganache("ganache-p1", &node, &cli, port1, &[]);
    let mut g2 = start_ganache("ganache-p2", &node, &cli, port2, &[]);
    let deadline = Instant::now() + GANACHE_READY;
    wait_ganache(&mut g1, port1, deadline);
    wait_ganache(&mut g2, port2, deadline);
    eprintln!(
        "ganache p1 on {port1}, p2 on {port2} ready after {:?}",
        started.elapsed()
    );

    // ---- Lasso config + process ------------------------------------------------------------------------------------
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("chains.yml");
    std::fs::write(
        &config,
        format!(
            "chains:\n  devnet:\n    chain_id: {CHAIN_ID}\n    default_strategy: priority\n    providers:\n      \
             - id: p1\n        url: http://127.0.0.1:{port1}\n        priority: 1\n      \
             - id: p2\n        url: http://127.0.0.1:{port2}\n        priority: 2\n"
        ),
    )
    .expect("write config");

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

    let addr = wait_listening(&mut lasso, rx, LASSO_READY);
    let url = format!("http://{addr}/rpc/priority/devnet");
    eprintln!(
        "lasso listening on {addr} after {:?}; LASSO_URL={url}",
        started.elapsed()
    );

    // ---- the real clients ------------------------------------------------------------------------------------------
    let mut cmd = Command::new(&node);
    cmd.arg(js.join("ganache_client.mjs"))
        .current_dir(&root)
        .env("LASSO_URL", &url)
        .env("LASSO_CHAIN_ID", CHAIN_ID.to_string())
        .env(
            "LASSO_JS_TIMEOUT_MS",
            (CLIENT_RUN - Duration::from_secs(5))
                .as_millis()
                .to_string(),
        );
    let mut client = Proc::spawn("ganache_client.mjs", &mut cmd, None);
    let status = client.wait_for(CLIENT_RUN);
    let report = format!(
        "{}{}{}{}",
        client.diagnostics(),
        lasso.diagnostics(),
        g1.diagnostics(),
        g2.diagnostics()
    );
    match status {
        Some(st) if st.success() => {}
        Some(st) => panic!("ganache_client.mjs failed ({st}) against {url}\n{report}"),
        None => panic!(
            "ganache_client.mjs did not finish within {CLIENT_RUN:?} against {url}\n{report}"
        ),
    }
    eprint!("{}", client.stdout.text());

    // Lasso must still be up and p1 (priority 1) must have carried the traffic.
    assert!(
        lasso.exited().is_none(),
        "lasso exited during the client run\n{}",
        lasso.diagnostics()
    );
    let p1_block = rpc_post(
        ([127, 0, 0, 1], port1).into(),
        "/",
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
        Duration::from_secs(5),
    )
    .expect("p1 eth_blockNumber");
    let v: serde_json::Value = serde_json::from_str(&p1_block).expect("p1 answer is JSON");
    assert_ne!(
        v["result"].as_str(),
        Some("0x0"),
        "the transfer was not mined on p1 (priority 1): priority routing sent it elsewhere? {p1_block}"
    );

    let elapsed = started.elapsed();
    eprintln!("ganache end-to-end test passed in {elapsed:?}");
    assert!(
        elapsed < TEST_BUDGET,
        "test took {elapsed:?}, budget {TEST_BUDGET:?}"
    );
    // Drop order: client, lasso, g2, g1 — all killed and reaped.
}
