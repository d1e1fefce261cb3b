//! A replayed indexer pull (`lasso-indexer-pull`, run by loadtest/scripts/indexer_pull.sh): every block of a range
//! with its transactions (`eth_getBlockByNumber [n, true]`), each transaction's receipt
//! (`eth_getTransactionReceipt`, checked to name that block) and `eth_getLogs` over the range in chunks, with a fixed
//! number of requests in flight: one HTTP/1.1 keep-alive connection per in-flight request, on one monoio thread.
//! The same calls as `tests/clients/viem_indexer.mjs pull`, from a client light enough not to be the bottleneck.
//! Any transport error, non-200 status or JSON-RPC error answer stops the pull.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{HttpConn, Target};

/// What to pull.
#[derive(Clone, Debug)]
pub struct PullSpec {
    pub target: Target,
    pub from: u64,
    pub to: u64,
    pub concurrency: usize,
    pub log_chunk: u64,
}

/// What a pull read, and how long it took.
#[derive(Debug, Default)]
pub struct PullResult {
    pub requests: u64,
    pub blocks: u64,
    pub txs: u64,
    pub receipts: u64,
    pub logs: u64,
    pub elapsed: Duration,
}

enum Job {
    Block(u64),
    Logs(u64, u64),
}

#[derive(Default)]
struct Counts {
    requests: Cell<u64>,
    blocks: Cell<u64>,
    txs: Cell<u64>,
    receipts: Cell<u64>,
    logs: Cell<u64>,
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// Runs the pull on a monoio runtime on the calling thread.
pub fn run(spec: &PullSpec) -> Result<PullResult, String> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build()
        .map_err(|e| format!("monoio runtime: {e}"))?;
    rt.block_on(pull(spec.clone()))
}

async fn pull(spec: PullSpec) -> Result<PullResult, String> {
    let mut jobs: VecDeque<Job> = (spec.from..=spec.to).map(Job::Block).collect();
    let mut start = spec.from;
    while start <= spec.to {
        let end = (start + spec.log_chunk.max(1) - 1).min(spec.to);
        jobs.push_back(Job::Logs(start, end));
        start = end + 1;
    }
    let jobs = Rc::new(RefCell::new(jobs));
    let counts = Rc::new(Counts::default());
    let mut conns = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency.max(1) {
        conns.push(
            HttpConn::connect(&spec.target)
                .await
                .map_err(|e| format!("connect {}: {e}", spec.target.url))?,
        );
    }
    let started = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| monoio::spawn(worker(conn, jobs.clone(), counts.clone())))
        .collect();
    let mut first_error = None;
    for w in workers {
        if let Err(e) = w.await {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(PullResult {
        requests: counts.requests.get(),
        blocks: counts.blocks.get(),
        txs: counts.txs.get(),
        receipts: counts.receipts.get(),
        logs: counts.logs.get(),
        elapsed: started.elapsed(),
    })
}

async fn worker(
    mut conn: HttpConn,
    jobs: Rc<RefCell<VecDeque<Job>>>,
    counts: Rc<Counts>,
) -> Result<(), String> {
    let mut id = 0u64;
    loop {
        let job = jobs.borrow_mut().pop_front();
        let Some(job) = job else { return Ok(()) };
        match job {
            Job::Block(n) => {
                let block = call(
                    &mut conn,
                    &counts,
                    &mut id,
                    "eth_getBlockByNumber",
                    json!([format!("{n:#x}"), true]),
                )
                .await?;
                add(&counts.blocks, 1);
                let txs = block["transactions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                add(&counts.txs, txs.len() as u64);
                for tx in txs {
                    let receipt = call(
                        &mut conn,
                        &counts,
                        &mut id,
                        "eth_getTransactionReceipt",
                        json!([tx["hash"]]),
                    )
                    .await?;
                    if receipt["blockHash"] != block["hash"] {
                        return Err(format!(
                            "receipt of {} names block {}",
                            tx["hash"], receipt["blockHash"]
                        ));
                    }
                    add(&counts.receipts, 1);
                }
            }
            Job::Logs(from, to) => {
                let logs = call(
                    &mut conn,
                    &counts,
                    &mut id,
                    "eth_getLogs",
                    json!([{"fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}")}]),
                )
                .await?;
                let n = logs
                    .as_array()
                    .ok_or_else(|| format!("eth_getLogs {from}..{to}: not a list: {logs}"))?
                    .len();
                add(&counts.logs, n as u64);
            }
        }
    }
}

/// One call; its `result`.
async fn call(
    conn: &mut HttpConn,
    counts: &Counts,
    id: &mut u64,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    *id += 1;
    let body = json!({"jsonrpc": "2.0", "id": *id, "method": method, "params": params}).to_string();
    add(&counts.requests, 1);
    let reply = conn
        .post(body.as_bytes(), true)
        .await
        .map_err(|e| format!("{method} {params}: {e}"))?;
    let bytes = reply.body.unwrap_or_default();
    if reply.status != 200 {
        return Err(format!(
            "{method} {params}: HTTP {}: {}",
            reply.status,
            String::from_utf8_lossy(&bytes)
        ));
    }
    let mut v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{method} {params}: not JSON ({e})"))?;
    match v.get_mut("result").map(Value::take) {
        Some(r) if v.get("error").is_none() && !r.is_null() => Ok(r),
        _ => Err(format!(
            "{method} {params}: {}",
            String::from_utf8_lossy(&bytes)
        )),
    }
}
