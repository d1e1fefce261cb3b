//! Request coalescing, opt-in per provider (`batch: true`, `batch_max`) or for all (`upstream.coalesce: true`):
//! concurrent single reads to such a provider travel as JSON-RPC batches, every client still gets exactly its own
//! answer (id, params, result), and a provider that refuses batches gets single calls instead. Without an opt-in
//! every call is its own upstream request.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use support::*;

fn clients(addr: std::net::SocketAddr, threads: u64, per_thread: u64) -> Vec<String> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut conn = Conn::connect(addr);
                for i in 0..per_thread {
                    let id = json!(format!("c{t}-{i}"));
                    let params = json!([format!("0x{:064x}", t * 1_000 + i)]);
                    let r = conn.post(
                        "/rpc/ethereum",
                        &rpc(id.clone(), "eth_getTransactionReceipt", params.clone()),
                    );
                    let v = r.json();
                    if r.status != 200 || v["id"] != id || v["result"]["params"] != params {
                        errors.push(format!("{} -> {}", id, r.describe()));
                    }
                }
                errors
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn concurrent_reads_are_batched_and_answered_individually() {
    let p = MockProvider::start("p1");
    p.set_fault(Fault::Delay(5));
    p.set_chain_id("0x1");
    let cfg = Config::new().chain(
        Chain::new("ethereum", 1)
            .strategy("priority")
            .provider(Provider::new("p1", &p.url()).batch(true, Some(4))),
    );
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let errors = clients(lasso.addr(), 16, 20);
    assert!(errors.is_empty(), "{errors:?}");
    let calls = p.count("eth_getTransactionReceipt");
    let http_requests = p.received();
    assert_eq!(calls, 320, "every call reached the provider exactly once");
    assert!(
        http_requests < calls,
        "calls were coalesced into batches: {http_requests} HTTP requests for {calls} calls"
    );
    // `batch_max: 4` bounds every batch.
    let largest = p
        .recorded()
        .iter()
        .filter_map(|r| r.body.as_array().map(|a| a.len()))
        .max()
        .unwrap_or(0);
    assert!(
        (2..=4).contains(&largest),
        "largest upstream batch: {largest} calls (batch_max 4)"
    );
}

#[test]
fn without_an_opt_in_every_call_is_its_own_request() {
    let p = MockProvider::start("p1");
    p.set_fault(Fault::Delay(5));
    let lasso = Lasso::builder(&single_chain(&[&p]).yaml())
        .workers(1)
        .start();
    let errors = clients(lasso.addr(), 8, 10);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(p.received(), 80, "one HTTP request per call");
}

#[test]
fn a_provider_can_opt_out_of_batching_turned_on_for_all() {
    let p = MockProvider::start("p1");
    p.set_fault(Fault::Delay(5));
    p.set_chain_id("0x1");
    let cfg = Config::new().upstream("coalesce", "true").chain(
        Chain::new("ethereum", 1)
            .strategy("priority")
            .provider(Provider::new("p1", &p.url()).batch(false, None)),
    );
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let errors = clients(lasso.addr(), 8, 10);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(p.received(), 80, "one HTTP request per call");
}

/// A provider that answers single calls but refuses batches with a JSON-RPC error object.
fn batchless_provider() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let batches = Arc::new(AtomicUsize::new(0));
    let seen = batches.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let req: Value = serde_json::from_slice(&body).unwrap();
                    let answer = if req.is_array() {
                        seen.fetch_add(1, Ordering::SeqCst);
                        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"batch requests are not supported"}})
                    } else {
                        let result = match req["method"].as_str() {
                            Some("eth_chainId") => json!("0x1"),
                            Some("eth_blockNumber") => json!("0x10"),
                            _ => json!({"provider":"batchless","method":req["method"],"params":req["params"]}),
                        };
                        json!({"jsonrpc":"2.0","id":req["id"],"result":result})
                    }
                    .to_string();
                    let out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if writer.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
        }
    });
    (url, batches)
}

#[test]
fn a_provider_refusing_batches_gets_single_calls() {
    let (url, batches) = batchless_provider();
    let cfg = Config::new().chain(
        Chain::new("ethereum", 1)
            .strategy("priority")
            .provider(Provider::new("batchless", &url).batch(true, None)),
    );
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let errors = clients(lasso.addr(), 12, 15);
    assert!(errors.is_empty(), "no client sees the refusal: {errors:?}");
    let refused = batches.load(Ordering::SeqCst);
    assert!(refused >= 1, "concurrent calls were offered as a batch");
    assert!(
        refused <= 4,
        "after a refusal the provider is not batched again ({refused} batches)"
    );
    assert!(
        lasso.wait_for_log(
            "refused a JSON-RPC batch",
            std::time::Duration::from_secs(5)
        ),
        "{}",
        lasso.logs()
    );
}
