//! Issue 12's acceptance for the response cache, with a real client and real nodes: viem (tests/clients/
//! viem_indexer.mjs, the `http` transport, 8 requests in flight) reads 500 finalized blocks with their transactions,
//! every receipt and the logs of the range (chunks of 50 blocks) through Lasso (`cache.enabled: true`) in front of two
//! anvil nodes holding one chain. Pass 1 reaches the nodes and answers what a node answers; pass 2 makes no provider
//! call (`/api/status` per-provider `requests`, which count client-driven upstream calls, not probes or finality
//! polls) and returns the same bytes (each answer's id aside); pass 3, with both nodes killed, still returns them.
//!
//! The nodes run `--no-mining`: the chain is built by the script (same transactions, fixed timestamps, on both) and
//! `--slots-in-an-epoch 1` gives a `finalized` tag two blocks below the head, capped at `finality_depth` below it by
//! Lasso. One worker: the embedded cache is per core, so with N workers a key may be fetched once per worker.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::anvil::{Anvil, clients_dir, installed};
use support::ganache::{Proc, find_node};
use support::*;

/// Blocks mined after the deployment block: the chain's head is `BLOCKS + 1`.
const BLOCKS: u64 = 520;
/// The range viem reads: 500 blocks, all at or below the finalized head.
const FROM: u64 = 1;
const TO: u64 = 500;
const FINALITY_DEPTH: u64 = 8;
/// Whole run of one script (building the chain, or one pass).
const SCRIPT_RUN: Duration = Duration::from_secs(60);

fn anvil(name: &str) -> Anvil {
    Anvil::start(
        name,
        &[
            "--no-mining",
            "--slots-in-an-epoch",
            "1",
            "--timestamp",
            "1700000000",
        ],
    )
}

/// Runs `node viem_indexer.mjs <mode>` with `env` to the end; its summary line (the one JSON object it prints).
fn script(what: &str, mode: &str, env: &[(&str, String)]) -> Value {
    let mut cmd = Command::new(find_node());
    cmd.arg(installed("viem_indexer.mjs"))
        .arg(mode)
        .current_dir(clients_dir());
    installed("node_modules/viem");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(what, &mut cmd, None);
    match proc.wait_for(SCRIPT_RUN) {
        Some(st) if st.success() => {}
        Some(st) => panic!("{what} failed ({st})\n{}", proc.diagnostics()),
        None => panic!(
            "{what} did not finish within {SCRIPT_RUN:?}\n{}",
            proc.diagnostics()
        ),
    }
    let out = proc.stdout.text();
    eprint!("{what}: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what}: no summary line\n{out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

/// One pass of viem over `FROM..=TO` against `url`; its summary and the file of every call and answer.
fn pass(what: &str, url: &str, dir: &Path) -> (Value, PathBuf) {
    let out = dir.join(format!("{}.jsonl", what.replace(' ', "-")));
    let summary = script(
        what,
        "pull",
        &[
            ("LASSO_HTTP_URL", url.to_string()),
            ("LASSO_FROM", FROM.to_string()),
            ("LASSO_TO", TO.to_string()),
            ("LASSO_CONCURRENCY", "8".to_string()),
            ("LASSO_LOG_CHUNK", "50".to_string()),
            ("LASSO_OUT", out.display().to_string()),
        ],
    );
    (summary, out)
}

/// The recorded calls of a pass, sorted by method and params.
fn calls(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Field `field` of every call (`result`: the parsed answer; `raw`: its bytes with the id replaced by 0).
fn column(calls: &[Value], field: &str) -> Vec<(Value, Value)> {
    calls
        .iter()
        .map(|c| (json!([c["method"], c["params"]]), c[field].clone()))
        .collect()
}

/// Panics with the first call whose answers differ (the whole lists would be megabytes).
fn assert_same(got: &[(Value, Value)], want: &[(Value, Value)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of calls");
    if let Some((g, w)) = got.iter().zip(want).find(|(g, w)| g != w) {
        panic!(
            "{what}: first difference at {}:\n got {}\nwant {}",
            w.0, g.1, w.1
        );
    }
}

fn status(lasso: &Lasso) -> Value {
    get(lasso.addr(), "/api/status").json()
}

/// Upstream requests Lasso sent for clients, summed over the chain's providers.
fn provider_calls(lasso: &Lasso) -> u64 {
    status(lasso)["chains"][0]["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| p["requests"].as_u64().expect("requests"))
        .sum()
}

#[test]
fn viem_reads_500_blocks_receipts_and_logs_twice_the_second_pass_from_the_cache_and_again_with_every_node_stopped()
 {
    let dir = std::env::temp_dir().join(format!("lasso-cache-viem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = anvil("anvil-a");
    let b = anvil("anvil-b");
    let built = script(
        "viem_indexer.mjs build",
        "build",
        &[
            ("LASSO_NODES", format!("{},{}", a.http_url(), b.http_url())),
            ("LASSO_BLOCKS", BLOCKS.to_string()),
        ],
    );
    assert_eq!(built["head"], json!(BLOCKS + 1), "{built}");

    let config = format!(
        "cache:\n  enabled: true\nchains:\n  anvil:\n    chain_id: 31337\n    head_poll_ms: 100\n    \
         finality_depth: {FINALITY_DEPTH}\n    providers:\n      - id: a\n        url: \"{}\"\n      \
         - id: b\n        url: \"{}\"\n",
        a.http_url(),
        b.http_url()
    );
    let lasso = Lasso::builder(&config).workers(1).start();
    let url = lasso.url("/rpc/anvil");
    let finalized = eventually(
        Duration::from_secs(20),
        "finalized head past the range",
        || match status(&lasso)["chains"][0]["finalized"].as_u64() {
            Some(f) if f >= TO => Ok(f),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        finalized <= BLOCKS + 1 - FINALITY_DEPTH,
        "finality_depth caps the finalized head: {finalized}"
    );

    // Straight to a node: what the answers must be.
    let (direct, direct_file) = pass("pass 0 straight to anvil-a", &a.http_url(), &dir);
    // Every block holds 1 to 3 ticks, one log each.
    assert_eq!(direct["blocks"], json!(TO - FROM + 1), "{direct}");
    assert!(direct["txs"].as_u64().unwrap() >= 1000, "{direct}");
    assert_eq!(direct["receipts"], direct["txs"], "{direct}");
    assert_eq!(
        direct["logs"].as_u64(),
        direct["txs"].as_u64().map(|t| t - 1),
        "one log per tick (block 1 deploys): {direct}"
    );

    let before = provider_calls(&lasso);
    let (first, first_file) = pass("pass 1 through Lasso", &url, &dir);
    let pass1_calls = provider_calls(&lasso) - before;
    assert_eq!(first["requests"], direct["requests"], "{first}");
    assert!(
        pass1_calls >= first["requests"].as_u64().unwrap(),
        "pass 1 reaches the nodes: {pass1_calls} provider calls for {first}"
    );
    let first_calls = calls(&first_file);
    assert_same(
        &column(&first_calls, "result"),
        &column(&calls(&direct_file), "result"),
        "pass 1 through Lasso answers what the node answers",
    );

    let hits = status(&lasso)["cache"]["hits"].as_u64().unwrap();
    let before = provider_calls(&lasso);
    let (second, second_file) = pass("pass 2 through Lasso", &url, &dir);
    assert_eq!(
        provider_calls(&lasso) - before,
        0,
        "pass 2 makes no provider call: {second}"
    );
    assert_same(
        &column(&calls(&second_file), "raw"),
        &column(&first_calls, "raw"),
        "pass 2 returns the bytes of pass 1",
    );
    let served = status(&lasso)["cache"]["hits"].as_u64().unwrap() - hits;
    assert_eq!(
        served,
        second["requests"].as_u64().unwrap(),
        "every call of pass 2 is a cache hit"
    );

    // Every provider stopped: the finalized range is still served, byte for byte.
    drop(a);
    drop(b);
    let (third, third_file) = pass("pass 3 with every node stopped", &url, &dir);
    assert_eq!(third["requests"], first["requests"], "{third}");
    assert_same(
        &column(&calls(&third_file), "raw"),
        &column(&first_calls, "raw"),
        "pass 3 returns the bytes of pass 1",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
