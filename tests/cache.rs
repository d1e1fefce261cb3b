//! The finality-aware response cache (`cache.enabled`) against a real node (anvil): a client reading blocks, their
//! receipts and their logs through Lasso twice gets the second pass from the cache (no provider call), identical to
//! the first, and still gets the finalized part with the provider stopped; after `anvil_reorg`, once Lasso's
//! finality tracker has seen the reorg, no block, receipt or log of the abandoned branch is served. One worker
//! (`workers: 1`): the cache is per core, so with N workers a key may be fetched once per worker.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::anvil::{ACCOUNT0, Anvil, quantity};
use support::*;

/// Deploys a contract whose constructor emits one log (`PUSH1 0 PUSH1 0 LOG0 STOP`): one block, one log.
fn log_tx(anvil: &Anvil) -> Value {
    anvil.rpc(
        "eth_sendTransaction",
        json!([{"from": ACCOUNT0, "data": "0x60006000a000"}]),
    )
}

/// Waits until the node's head is `n` (anvil mines each transaction a moment after accepting it).
fn mined(anvil: &Anvil, n: u64) {
    eventually(
        Duration::from_secs(10),
        "transactions mined",
        || match quantity(&anvil.rpc("eth_blockNumber", json!([]))) {
            h if h == n => Ok(()),
            h => Err(format!("head {h}")),
        },
    );
}

fn config(url: &str, finality_depth: u64, unfinalized_ttl_ms: u64) -> String {
    format!(
        "cache:\n  enabled: true\n  cache_empty: true\n  unfinalized_ttl_ms: {unfinalized_ttl_ms}\nchains:\n  anvil:\n    chain_id: 31337\n    \
         head_poll_ms: 100\n    finality_depth: {finality_depth}\n    providers:\n      - id: anvil\n        url: \"{url}\"\n"
    )
}

/// One call through Lasso; the whole reply (its id checked).
fn call(conn: &mut Conn, id: u64, method: &str, params: Value) -> Value {
    let r = conn.post("/rpc/anvil", &rpc(json!(id), method, params));
    assert_eq!(r.status, 200, "{method}: {}", r.describe());
    let v = r.json();
    assert_eq!(v["id"], json!(id), "{method}: the client's own id");
    assert!(v.get("result").is_some(), "{method}: {v}");
    v
}

fn status(lasso: &Lasso) -> Value {
    get(lasso.addr(), "/api/status").json()
}

/// Upstream requests Lasso sent for clients (health probes and finality polls are not counted).
fn upstream_requests(lasso: &Lasso) -> u64 {
    status(lasso)["chains"][0]["providers"][0]["requests"]
        .as_u64()
        .unwrap()
}

/// One call of a pass: method, params, and Lasso's whole reply.
type Read = (String, Value, Value);

/// Reads blocks `from..=to` (with transactions), each block by hash, each block's receipts, each transaction and
/// its receipt, and the logs of every block and of ranges of 25 blocks.
fn pass(conn: &mut Conn, from: u64, to: u64) -> Vec<Read> {
    let mut out: Vec<Read> = Vec::new();
    let mut id = 0;
    let mut read = |conn: &mut Conn, out: &mut Vec<Read>, method: &str, params: Value| -> Value {
        id += 1;
        let reply = call(conn, id, method, params.clone());
        out.push((method.to_string(), params, reply.clone()));
        reply
    };
    for n in from..=to {
        let hex = format!("0x{n:x}");
        let block = read(conn, &mut out, "eth_getBlockByNumber", json!([hex, true]));
        let hash = block["result"]["hash"].clone();
        read(conn, &mut out, "eth_getBlockByHash", json!([hash, false]));
        read(conn, &mut out, "eth_getBlockReceipts", json!([hex]));
        read(
            conn,
            &mut out,
            "eth_getLogs",
            json!([{"fromBlock": hex, "toBlock": hex}]),
        );
        for tx in block["result"]["transactions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            read(
                conn,
                &mut out,
                "eth_getTransactionReceipt",
                json!([tx["hash"]]),
            );
            read(
                conn,
                &mut out,
                "eth_getTransactionByHash",
                json!([tx["hash"]]),
            );
        }
    }
    let mut start = from;
    while start <= to {
        let end = (start + 24).min(to);
        let range = json!([{"fromBlock": format!("0x{start:x}"), "toBlock": format!("0x{end:x}")}]);
        read(conn, &mut out, "eth_getLogs", range);
        start = end + 1;
    }
    out
}

fn results(reads: &[Read]) -> Vec<Value> {
    reads.iter().map(|(_, _, r)| r["result"].clone()).collect()
}

#[test]
fn a_second_pass_is_served_from_the_cache_and_the_finalized_part_survives_the_provider() {
    const N: u64 = 200;
    let anvil = Anvil::start("anvil-cache", &[]);
    // One block per transaction: each is mined before the next is sent (two sent close together can share a block).
    for n in 1..=N {
        log_tx(&anvil);
        mined(&anvil, n);
    }
    // Unfinalized answers are not kept at all here: what the second pass gets from the cache is final.
    let lasso = Lasso::builder(&config(&anvil.http_url(), 50, 0))
        .workers(1)
        .start();
    // Answers are kept as final once the tracker has reported the finalized head.
    let finalized =
        eventually(Duration::from_secs(20), "finalized head reported", || {
            match status(&lasso)["chains"][0]["finalized"].as_u64() {
                Some(f) if f > 0 => Ok(f),
                other => Err(format!("{other:?}")),
            }
        });
    assert!(
        finalized <= N - 50,
        "finality_depth caps the finalized head: {finalized}"
    );
    // The finalized part: up to the last whole range of 25 blocks at or below the finalized head.
    let end = (finalized + 1) / 25 * 25 - 1;
    assert!(end >= 99, "{finalized}");

    let mut conn = Conn::connect(lasso.addr());
    let before = upstream_requests(&lasso);
    let first = pass(&mut conn, 0, end);
    assert_eq!(
        upstream_requests(&lasso) - before,
        first.len() as u64,
        "the first pass reaches the node"
    );
    let logs: usize = first
        .iter()
        .filter(|(m, _, _)| m == "eth_getLogs")
        .map(|(_, _, r)| r["result"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        logs as u64,
        2 * end,
        "every block's log (genesis has none), per block and per range"
    );

    let before = upstream_requests(&lasso);
    let second = pass(&mut conn, 0, end);
    assert_eq!(
        upstream_requests(&lasso) - before,
        0,
        "the second pass makes no provider call"
    );
    assert_eq!(results(&second), results(&first), "identical answers");
    let cache = &status(&lasso)["cache"];
    assert!(
        cache["hits"].as_u64().unwrap() >= second.len() as u64,
        "{cache}"
    );
    assert!(cache["bytes"].as_u64().unwrap() > 0, "{cache}");

    // Above the finalized head nothing is kept (unfinalized_ttl_ms: 0): read twice, fetched twice.
    let above = (N - 5, N);
    let before = upstream_requests(&lasso);
    let once = pass(&mut conn, above.0, above.1);
    let twice = pass(&mut conn, above.0, above.1);
    assert_eq!(results(&once), results(&twice));
    assert_eq!(
        upstream_requests(&lasso) - before,
        2 * once.len() as u64,
        "unfinalized reads are not kept"
    );

    // The node goes away: the finalized part is still served, identical.
    drop(anvil);
    let third = pass(&mut conn, 0, end);
    assert_eq!(results(&third), results(&first));
}

#[test]
fn after_a_reorg_no_answer_of_the_abandoned_branch_is_served() {
    let anvil = Anvil::start("anvil-reorg", &[]);
    for n in 1..=30 {
        log_tx(&anvil);
        mined(&anvil, n);
    }
    // Unfinalized answers would live ten minutes: only the reorg can drop them.
    let lasso = Lasso::builder(&config(&anvil.http_url(), 10, 600_000))
        .workers(1)
        .start();
    eventually(Duration::from_secs(20), "finality reported", || {
        match status(&lasso)["chains"][0]["finalized"].as_u64() {
            Some(_) => Ok(()),
            None => Err("no finality yet".into()),
        }
    });
    let mut conn = Conn::connect(lasso.addr());
    let before = pass(&mut conn, 15, 30);
    let requests = upstream_requests(&lasso);
    assert_eq!(results(&pass(&mut conn, 15, 30)), results(&before));
    assert_eq!(
        upstream_requests(&lasso),
        requests,
        "served from the cache before the reorg"
    );

    assert_eq!(anvil.rpc("anvil_reorg", json!([5, []])), Value::Null);
    eventually(
        Duration::from_secs(20),
        "the reorg reaches the cache",
        || {
            let cache = status(&lasso)["cache"].clone();
            if cache["reorgs"].as_u64() >= Some(1) {
                Ok(())
            } else {
                Err(cache.to_string())
            }
        },
    );
    // The same reads again (by the old blocks' hashes and transactions too): every answer is what the node says now.
    let mut changed = 0;
    for (i, (method, params, old)) in before.iter().enumerate() {
        let now = call(&mut conn, 1000 + i as u64, method, params.clone());
        let node = anvil.rpc(method, params.clone());
        assert_eq!(
            now["result"], node,
            "{method} {params}: Lasso answers as the node does after the reorg"
        );
        if old["result"] != node {
            changed += 1;
        }
    }
    assert!(changed > 0, "the reorg changed answers the cache held");
}
