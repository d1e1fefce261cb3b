//! Tests of the load-test harness itself: percentile correctness against known inputs, the open-loop schedule's rate
//! against the in-process mock provider, and every fault mode of the mock as a plain client sees it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::client::{Target, WsConn, blocking_request, post_json, rpc_call};
use loadtest::hist::{LatencyHist, exact_quantile};
use loadtest::loadgen::{self, LoadSpec, Mode};
use loadtest::mix::{HeadInfo, Mix, build_pool};
use loadtest::mock::{self, MockConfig, MockServer};
use loadtest::rng::Rng;
use serde_json::{Value, json};

fn start_mock(block_time_ms: u64) -> MockServer {
    let mut cfg = MockConfig::default();
    cfg.chain.block_time_ms = block_time_ms;
    mock::start(cfg).expect("mock starts")
}

fn call(srv: &MockServer, method: &str, params: Value) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    blocking_request(
        "POST",
        &srv.url(),
        Some(body.as_bytes()),
        Duration::from_secs(5),
    )
    .expect("request")
}

fn control(srv: &MockServer, patch: Value) -> Value {
    let url = format!("http://{}/control", srv.addr);
    let (status, v) = post_json(&url, &patch, Duration::from_secs(5)).expect("control");
    assert_eq!(status, 200, "{v}");
    v
}

// ---------------------------------------------------------------------------------------------------------------
// Percentiles
// ---------------------------------------------------------------------------------------------------------------

fn within(got: u64, want: u64, rel: f64) -> bool {
    (got as f64 - want as f64).abs() <= want as f64 * rel + 1.0
}

#[test]
fn percentiles_of_uniform_1_to_10000() {
    let mut h = LatencyHist::new();
    for v in 1..=10_000u64 {
        h.record_us(v);
    }
    let s = h.summary();
    assert_eq!(s.count, 10_000);
    assert_eq!(s.min_us, 1);
    assert!(within(s.max_us, 10_000, 0.001), "{s:?}");
    assert!(within(s.p50_us, 5_000, 0.001), "{s:?}");
    assert!(within(s.p90_us, 9_000, 0.001), "{s:?}");
    assert!(within(s.p99_us, 9_900, 0.001), "{s:?}");
    assert!(within(s.p999_us, 9_990, 0.001), "{s:?}");
    assert!((s.mean_us - 5_000.5).abs() < 5.0, "{s:?}");
}

#[test]
fn percentiles_of_bimodal_input() {
    // 990 fast answers and 10 slow ones: p99 is still fast, p99.9 is slow.
    let mut h = LatencyHist::new();
    let mut v = vec![1_000u64; 990];
    v.extend(std::iter::repeat_n(100_000u64, 10));
    for &x in &v {
        h.record_us(x);
    }
    v.sort();
    assert_eq!(exact_quantile(&v, 0.99), 1_000);
    assert_eq!(exact_quantile(&v, 0.999), 100_000);
    assert!(within(h.quantile_us(0.99), 1_000, 0.001));
    assert!(within(h.quantile_us(0.991), 100_000, 0.001));
    assert!(within(h.quantile_us(0.999), 100_000, 0.001));
    assert!(within(h.quantile_us(0.5), 1_000, 0.001));
}

#[test]
fn percentiles_match_exact_nearest_rank_on_random_data_and_merge() {
    let mut rng = Rng::new(99);
    let mut a = LatencyHist::new();
    let mut b = LatencyHist::new();
    let mut all = Vec::new();
    for i in 0..200_000 {
        let us = rng.lognormal(800.0, 1.2).max(1.0) as u64;
        all.push(us);
        if i % 2 == 0 {
            a.record_us(us)
        } else {
            b.record_us(us)
        }
    }
    a.merge(&b);
    all.sort();
    assert_eq!(a.count(), all.len() as u64);
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        let exact = exact_quantile(&all, q);
        let got = a.quantile_us(q);
        assert!(
            within(got, exact, 0.001),
            "q={q}: hdr {got} vs exact {exact}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Open-loop rate
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn open_loop_keeps_the_rate_within_2_percent() {
    let srv = start_mock(1000);
    let pool = Arc::new(build_pool(
        &Mix::load("small").unwrap(),
        &HeadInfo::synthetic(),
        512,
        1,
    ));
    let rate = 2000.0;
    let start_at = Instant::now() + Duration::from_millis(300);
    let spec = LoadSpec {
        label: "rate-test".into(),
        url: srv.url(),
        mode: Mode::Open,
        rate,
        duration: Duration::from_secs(3),
        warmup: Duration::ZERO,
        connections: 16,
        threads: 1,
        timeout: Duration::from_secs(5),
        start_at: Some(start_at),
        ..LoadSpec::default()
    };
    // What the server sees: requests counted between 0.5 s and 2.5 s into the run.
    let state = srv.state.clone();
    let sampler = std::thread::spawn(move || {
        let t1 = start_at + Duration::from_millis(500);
        std::thread::sleep(t1.saturating_duration_since(Instant::now()));
        let c1 = state
            .counters
            .http_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let i1 = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let c2 = state
            .counters
            .http_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        (c2 - c1) as f64 / i1.elapsed().as_secs_f64()
    });
    let r = loadgen::run(&spec, pool).unwrap();
    let server_rate = sampler.join().unwrap();
    assert_eq!(r.errors, 0, "{}", r.human());
    assert!(
        (r.rps - rate).abs() / rate < 0.02,
        "client rate {} vs {rate}\n{}",
        r.rps,
        r.human()
    );
    assert!(
        (server_rate - rate).abs() / rate < 0.02,
        "server saw {server_rate:.1}/s vs {rate}"
    );
    assert_eq!(r.series.len(), 3);
    for s in &r.series {
        assert!(
            (s.ok as f64 - rate).abs() / rate < 0.02,
            "second {}: {} ok",
            s.t,
            s.ok
        );
    }
}

#[test]
fn closed_loop_counts_injected_errors() {
    let srv = start_mock(1000);
    srv.control(json!({"error_rate": 0.5})).unwrap();
    let pool = Arc::new(build_pool(
        &Mix::load("block-number").unwrap(),
        &HeadInfo::synthetic(),
        16,
        1,
    ));
    let spec = LoadSpec {
        url: srv.url(),
        mode: Mode::Closed,
        duration: Duration::from_millis(700),
        connections: 4,
        max_requests: 3000,
        ..LoadSpec::default()
    };
    let r = loadgen::run(&spec, pool).unwrap();
    assert!(r.requests > 100, "{}", r.human());
    let share = r.errors as f64 / r.requests as f64;
    assert!((0.4..0.6).contains(&share), "{}", r.human());
    assert_eq!(r.http_status.get("500").copied().unwrap_or(0), r.errors);
}

// ---------------------------------------------------------------------------------------------------------------
// Fault modes, as a plain client sees them
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn fault_http_error_rpc_error_429_and_garbage() {
    let srv = start_mock(1000);
    let (status, _, body) = call(&srv, "eth_blockNumber", json!([]));
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["result"].as_str().unwrap().starts_with("0x"));

    control(&srv, json!({"error_rate": 1.0}));
    let (status, _, body) = call(&srv, "eth_blockNumber", json!([]));
    assert_eq!(status, 500);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        -32603
    );

    control(&srv, json!({"reset": true, "rpc_error_rate": 1.0}));
    let (status, _, body) = call(&srv, "eth_blockNumber", json!([]));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        -32000
    );

    control(
        &srv,
        json!({"reset": true, "rate_limit_rate": 1.0, "retry_after_s": 7}),
    );
    let (status, headers, body) = call(&srv, "eth_blockNumber", json!([]));
    assert_eq!(status, 429);
    assert!(
        headers.iter().any(|(k, v)| k == "retry-after" && v == "7"),
        "{headers:?}"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        -32005
    );

    control(&srv, json!({"reset": true, "garbage_rate": 1.0}));
    let (status, _, body) = call(&srv, "eth_blockNumber", json!([]));
    assert_eq!(status, 200);
    assert!(
        serde_json::from_slice::<Value>(&body).is_err(),
        "garbage parsed as JSON"
    );

    let state = control(&srv, json!({"reset": true}));
    let inj = &state["counters"]["injected"];
    assert_eq!(
        (
            inj["errors"].as_u64(),
            inj["rpc_errors"].as_u64(),
            inj["rate_limits"].as_u64(),
            inj["garbage"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1))
    );
    assert_eq!(call(&srv, "eth_blockNumber", json!([])).0, 200);
}

fn raw_post(srv: &MockServer, read_timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(srv.addr)?;
    s.set_read_timeout(Some(read_timeout))?;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = vec![0u8; 4096];
    let n = s.read(&mut out)?;
    out.truncate(n);
    Ok(out)
}

#[test]
fn fault_reset_and_hang() {
    let srv = start_mock(1000);
    control(&srv, json!({"reset_rate": 1.0}));
    let err = raw_post(&srv, Duration::from_secs(5)).expect_err("a reset connection");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

    control(&srv, json!({"reset": true, "hang": true, "hang_ms": 2000}));
    let t = Instant::now();
    let err = raw_post(&srv, Duration::from_millis(300)).expect_err("no answer while hanging");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_millis(290));

    control(&srv, json!({"reset": true}));
    let ok = raw_post(&srv, Duration::from_secs(5)).unwrap();
    assert!(ok.starts_with(b"HTTP/1.1 200"));
    let state = control(&srv, json!({}));
    assert_eq!(state["counters"]["injected"]["resets"], 1);
    assert_eq!(state["counters"]["injected"]["hangs"], 1);
}

#[test]
fn fault_lag_chain_id_stall_and_latency() {
    let srv = start_mock(50);
    let state = control(&srv, json!({"stall_head": true}));
    let head = state["head"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(120));
    let bn = |srv: &MockServer| {
        let v: Value = serde_json::from_slice(&call(srv, "eth_blockNumber", json!([])).2).unwrap();
        loadtest::chain::parse_quantity(v["result"].as_str().unwrap()).unwrap()
    };
    assert_eq!(bn(&srv), head, "stalled head moved");
    control(&srv, json!({"lag_blocks": 5}));
    assert_eq!(bn(&srv), head - 5);

    control(&srv, json!({"chain_id": 137}));
    let v: Value = serde_json::from_slice(&call(&srv, "eth_chainId", json!([])).2).unwrap();
    assert_eq!(v["result"], "0x89");

    control(
        &srv,
        json!({"reset": true, "latency": {"eth_call": {"fixed_ms": 60}}}),
    );
    assert!(bn(&srv) > head, "head runs again after reset");
    let t = Instant::now();
    call(&srv, "eth_chainId", json!([]));
    assert!(t.elapsed() < Duration::from_millis(50));
    let t = Instant::now();
    let (status, _, _) = call(
        &srv,
        "eth_call",
        json!([{"to": "0x0000000000000000000000000000000000000001", "data": "0x"}, "latest"]),
    );
    assert_eq!(status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(59),
        "{:?}",
        t.elapsed()
    );

    let state = control(&srv, json!({}));
    assert!(
        state["counters"]["requests"]["eth_blockNumber"]
            .as_u64()
            .unwrap()
            >= 3
    );
    assert_eq!(state["counters"]["requests"]["eth_call"], 1);
    assert!(
        blocking_request(
            "POST",
            &format!("http://{}/control", srv.addr),
            Some(b"{\"no_such_fault\":1}"),
            Duration::from_secs(5)
        )
        .unwrap()
        .0 == 400
    );
}

#[test]
fn large_getlogs_and_block_bodies() {
    let srv = start_mock(1000);
    control(&srv, json!({"logs_response_bytes": 1_048_576}));
    let head = rpc_call(
        &srv.url(),
        "eth_blockNumber",
        json!([]),
        Duration::from_secs(5),
    )
    .unwrap();
    let (status, _, body) = call(
        &srv,
        "eth_getLogs",
        json!([{"fromBlock": head, "toBlock": head}]),
    );
    assert_eq!(status, 200);
    assert!(
        body.len() >= 1_048_576 && body.len() < 1_100_000,
        "{}",
        body.len()
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["result"].as_array().unwrap().len() > 100);

    control(&srv, json!({"reset": true}));
    let logs = rpc_call(
        &srv.url(),
        "eth_getLogs",
        json!([{"fromBlock": head, "toBlock": head}]),
        Duration::from_secs(5),
    )
    .unwrap();
    let addr = logs[0]["address"].as_str().unwrap().to_string();
    let filtered = rpc_call(
        &srv.url(),
        "eth_getLogs",
        json!([{"fromBlock": head, "toBlock": head, "address": addr}]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!filtered.as_array().unwrap().is_empty());
    assert!(
        filtered
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["address"] == addr)
    );

    let full = rpc_call(
        &srv.url(),
        "eth_getBlockByNumber",
        json!([head, true]),
        Duration::from_secs(5),
    )
    .unwrap();
    let tx = &full["transactions"][3];
    assert_eq!(tx["blockNumber"], head);
    let receipt = rpc_call(
        &srv.url(),
        "eth_getTransactionReceipt",
        json!([tx["hash"]]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(receipt["transactionHash"], tx["hash"]);
    assert_eq!(receipt["blockHash"], full["hash"]);
    let batch: Vec<Value> = (0..50).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_getBalance", "params": ["0x01", "latest"]})).collect();
    let (status, _, body) = blocking_request(
        "POST",
        &srv.url(),
        Some(Value::Array(batch).to_string().as_bytes()),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 200);
    let arr: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(arr.len(), 50);
    assert_eq!(arr[49]["id"], 49);
}

fn rt() -> monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
}

async fn recv_json(c: &mut WsConn) -> Value {
    let m = monoio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .expect("message in time")
        .unwrap()
        .expect("open");
    serde_json::from_slice(&m).unwrap()
}

#[test]
fn ws_newheads_in_order_logs_filter_reorg_and_drop() {
    let srv = start_mock(40);
    let target = Target::parse(&srv.ws_url()).unwrap();
    let state = srv.state.clone();
    let ctl = format!("http://{}/control", srv.addr);
    rt().block_on(async move {
        let mut c = WsConn::connect(&target, 1).await.unwrap();
        c.send_text(br#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#).await.unwrap();
        let sub = recv_json(&mut c).await;
        let sub_id = sub["result"].as_str().unwrap().to_string();
        // Heads arrive in order and link by parentHash.
        let mut prev: Option<Value> = None;
        for _ in 0..6 {
            let n = recv_json(&mut c).await;
            assert_eq!(n["method"], "eth_subscription");
            assert_eq!(n["params"]["subscription"], sub_id.as_str());
            let h = n["params"]["result"].clone();
            for k in ["number", "hash", "parentHash", "timestamp"] {
                assert!(h[k].is_string(), "{k} missing: {h}");
            }
            if let Some(p) = &prev {
                let pn = loadtest::chain::parse_quantity(p["number"].as_str().unwrap()).unwrap();
                let hn = loadtest::chain::parse_quantity(h["number"].as_str().unwrap()).unwrap();
                assert_eq!(hn, pn + 1, "out of order");
                assert_eq!(h["parentHash"], p["hash"]);
            }
            prev = Some(h);
        }
        assert_eq!(state.counters.ws_subscriptions_open.load(std::sync::atomic::Ordering::Relaxed), 1);

        // A reorg of depth 2 re-announces replaced blocks with new hashes.
        let last = prev.unwrap();
        let last_n = loadtest::chain::parse_quantity(last["number"].as_str().unwrap()).unwrap();
        let (status, _) = post_json(&ctl, &json!({"reorg": 2}), Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200);
        let mut saw_replaced = false;
        for _ in 0..8 {
            let n = recv_json(&mut c).await;
            let h = &n["params"]["result"];
            let hn = loadtest::chain::parse_quantity(h["number"].as_str().unwrap()).unwrap();
            if hn <= last_n {
                saw_replaced = true;
                if hn == last_n {
                    assert_ne!(h["hash"], last["hash"]);
                }
            }
        }
        assert!(saw_replaced, "no re-announced block after the reorg");

        // Unsubscribe, then a logs subscription with an address filter.
        c.send_text(format!(r#"{{"jsonrpc":"2.0","id":2,"method":"eth_unsubscribe","params":["{sub_id}"]}}"#).as_bytes()).await.unwrap();
        loop {
            let m = recv_json(&mut c).await;
            if m["id"] == 2 {
                assert_eq!(m["result"], true);
                break;
            }
        }
        let addr = loadtest::chain::contract(3);
        c.send_text(format!(r#"{{"jsonrpc":"2.0","id":3,"method":"eth_subscribe","params":["logs",{{"address":"{addr}"}}]}}"#).as_bytes())
            .await
            .unwrap();
        loop {
            let m = recv_json(&mut c).await;
            if m["id"] == 3 {
                assert!(m["result"].is_string());
                break;
            }
        }
        for _ in 0..5 {
            let n = recv_json(&mut c).await;
            let log = &n["params"]["result"];
            assert_eq!(log["address"], addr.as_str());
            for k in ["blockNumber", "blockHash", "logIndex", "transactionHash"] {
                assert!(log[k].is_string(), "{k} missing: {log}");
            }
        }

        // A plain request on the same socket.
        c.send_text(br#"{"jsonrpc":"2.0","id":9,"method":"eth_chainId","params":[]}"#).await.unwrap();
        loop {
            let m = recv_json(&mut c).await;
            if m["id"] == 9 {
                assert_eq!(m["result"], "0x1");
                break;
            }
        }

        // drop_ws closes the connection from the server side.
        let (status, _) = post_json(&ctl, &json!({"drop_ws": true}), Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200);
        let closed = monoio::time::timeout(Duration::from_secs(3), async {
            while let Ok(Some(_)) = c.recv().await {}
        })
        .await;
        assert!(closed.is_ok(), "connection still open after drop_ws");
    });
    std::thread::sleep(Duration::from_millis(100));
    let st = control(&srv, json!({}));
    assert_eq!(st["counters"]["ws_connections_open"], 0);
    assert_eq!(st["counters"]["ws_subscriptions_open"], 0);
}

#[test]
fn ws_fanout_via_loadgen() {
    let srv = start_mock(50);
    let spec = LoadSpec {
        url: srv.ws_url(),
        mode: Mode::Subscribe,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(200),
        connections: 20,
        timeout: Duration::from_secs(3),
        ..LoadSpec::default()
    };
    let r = loadgen::run(&spec, Arc::new(Vec::new())).unwrap();
    let n = r.notifications.clone().unwrap();
    assert_eq!(n.subscribed, 20, "{}", r.human());
    assert!(n.received >= 20 * 20, "{}", r.human());
    assert_eq!(n.out_of_order, 0, "{}", r.human());
    assert!(r.latency.p50_us < 50_000, "{}", r.human());
}

// ---------------------------------------------------------------------------------------------------------------
// The floor forwarder
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn floor_forwards_single_calls_and_batches_on_kept_alive_connections() {
    let srv = start_mock(60_000);
    let upstream = loadtest::floor::Upstream::parse(&srv.url()).unwrap();
    let addr = loadtest::floor::start("127.0.0.1:0".parse().unwrap(), upstream, 1).unwrap();
    let head: Value = {
        let (_, _, body) = call(&srv, "eth_blockNumber", json!([]));
        serde_json::from_slice(&body).unwrap()
    };
    // Several requests on one connection, each answered with its own id by the mock behind the floor.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for id in 1..=5u64 {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "eth_blockNumber", "params": []})
            .to_string();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut got = Vec::new();
        let answer = loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "floor closed the connection after {id} requests");
            got.extend_from_slice(&chunk[..n]);
            if let Ok(Some(h)) = loadtest::http::parse_response_head(&got) {
                let len = h.content_length.expect("content-length");
                if got.len() >= h.head_len + len {
                    assert_eq!(h.status, 200);
                    break serde_json::from_slice::<Value>(&got[h.head_len..h.head_len + len])
                        .unwrap();
                }
            }
        };
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["result"], head["result"], "{answer}");
    }
    // A batch passes through as it is.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 8, "method": "eth_blockNumber", "params": []}
    ]);
    let (status, v) =
        post_json(&format!("http://{addr}/"), &batch, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200, "{v}");
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [7, 8], "{v}");
}
