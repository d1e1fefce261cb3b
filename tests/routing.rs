//! Measured routing (issue 3): `fastest` learns from live traffic and moves when latencies change,
//! `latency-weighted` spreads in proportion to (best/latency)^beta, `cheapest` follows cost, failing providers
//! are excluded and restored, providers on the wrong chain or behind the head are avoided, deterministic errors
//! are not retried, writes reach one provider, and a restart with a snapshot routes warm from the first request.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const MERGE_MS: u64 = 200;

/// YAML for one chain `ethereum` over `mocks` with per-provider extra keys, measured routing tuned for tests.
fn config(mocks: &[&MockProvider], extra: &[&str], routing: &str, chain_extra: &str) -> String {
    let mut providers = String::new();
    for (i, m) in mocks.iter().enumerate() {
        providers.push_str(&format!(
            "      - {{ id: {}, url: \"{}\", priority: {}{} }}\n",
            m.name(),
            m.url(),
            i + 1,
            extra.get(i).map(|e| format!(", {e}")).unwrap_or_default()
        ));
    }
    format!(
        "upstream: {{ connect_timeout_ms: 300, request_timeout_ms: 400 }}\n\
         routing: {{ merge_interval_ms: {MERGE_MS}, window_intervals: 5, min_samples: 3, {routing} }}\n\
         chains:\n  ethereum:\n    chain_id: 1\n    head_poll_ms: 200\n{chain_extra}    providers:\n{providers}"
    )
}

/// A read that is not head-sensitive (any provider may answer).
fn receipt(i: u64) -> String {
    rpc(
        json!(i),
        "eth_getTransactionReceipt",
        json!([format!("0x{i:064x}")]),
    )
}

/// Sends `n` reads on one keep-alive connection; returns who served each and the errors.
fn stream(
    addr: SocketAddr,
    path: &str,
    n: u64,
    body: impl Fn(u64) -> String,
) -> (HashMap<String, usize>, Vec<String>) {
    let mut served = HashMap::new();
    let mut errors = Vec::new();
    let mut conn = Conn::connect(addr);
    for i in 0..n {
        let r = match conn.try_post(path, &body(i)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("request {i}: {e}"));
                conn = Conn::connect(addr);
                continue;
            }
        };
        let v = r.try_json().unwrap_or(Value::Null);
        match (r.status, served_by(&v)) {
            (200, Some(who)) => *served.entry(who).or_insert(0) += 1,
            _ => errors.push(format!("request {i}: {}", r.describe())),
        }
    }
    (served, errors)
}

/// Polls `/api/metrics/ethereum` until `ready` holds for it (bounded).
fn wait_metrics(lasso: &Lasso, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(15), what, || {
        let v = get(lasso.addr(), "/api/metrics/ethereum").json();
        if ready(&v) {
            Ok(v)
        } else {
            Err(format!("metrics: {v}"))
        }
    })
}

fn provider<'a>(metrics: &'a Value, id: &str) -> &'a Value {
    metrics["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap()
}

fn samples(metrics: &Value, id: &str) -> u64 {
    provider(metrics, id)["routing"]["samples"]
        .as_u64()
        .unwrap_or(0)
}

fn p50(metrics: &Value, id: &str) -> f64 {
    provider(metrics, id)["routing"]["p50_us"].as_f64().unwrap()
}

fn three(delays: [u64; 3]) -> Vec<MockProvider> {
    ["fast", "mid", "slow"]
        .iter()
        .zip(delays)
        .map(|(name, d)| {
            let m = MockProvider::start(name);
            m.set_fault(Fault::Delay(d));
            m
        })
        .collect()
}

fn warm_up(lasso: &Lasso, ids: &[&str]) -> Value {
    let (_, errors) = stream(lasso.addr(), "/rpc/load-balanced/ethereum", 30, receipt);
    assert!(errors.is_empty(), "{errors:?}");
    wait_metrics(lasso, "samples for every provider", |m| {
        ids.iter().all(|id| samples(m, id) >= 3)
    })
}

#[test]
fn fastest_prefers_the_fastest_and_moves_when_it_slows_down() {
    let mocks = three([2, 10, 40]);
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "probe_share: 0.02, hedge: { enabled: false }",
        "",
    ))
    .start();
    warm_up(&lasso, &["fast", "mid", "slow"]);

    let (served, errors) = stream(lasso.addr(), "/rpc/fastest/ethereum", 200, receipt);
    assert!(errors.is_empty(), "{errors:?}");
    let fast = served.get("fast").copied().unwrap_or(0);
    assert!(
        fast >= 180,
        "fastest should send >= 90% to the 2 ms provider: {served:?}"
    );

    // The fast provider becomes the slowest: within a few merge intervals `fastest` moves to the 10 ms one.
    mocks[0].set_fault(Fault::Delay(80));
    let changed = Instant::now();
    let mut moved_after = None;
    let mut conn = Conn::connect(lasso.addr());
    let mut recent: Vec<String> = Vec::new();
    for i in 0..2_000u64 {
        let r = conn.post("/rpc/fastest/ethereum", &receipt(i));
        recent.push(served_by(&r.json()).unwrap_or_default());
        let last: Vec<&String> = recent.iter().rev().take(10).collect();
        if last.len() == 10 && last.iter().all(|w| *w == "mid") {
            moved_after = Some(changed.elapsed());
            break;
        }
        if changed.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let moved_after = moved_after.unwrap_or_else(|| {
        panic!(
            "share never moved to `mid`: {:?}\nmetrics: {}",
            &recent[recent.len().saturating_sub(30)..],
            get(lasso.addr(), "/api/metrics/ethereum").json()
        )
    });
    assert!(
        moved_after <= Duration::from_millis(MERGE_MS * 15),
        "moved after {moved_after:?}, more than 15 merge intervals"
    );
}

#[test]
fn latency_weighted_spreads_load_by_measured_latency() {
    let mocks = three([4, 8, 16]);
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "latency_weight_beta: 1.0, probe_share: 0.0, hedge: { enabled: false }",
        "",
    ))
    .start();
    let metrics = warm_up(&lasso, &["fast", "mid", "slow"]);
    let weights: Vec<(String, f64)> = ["fast", "mid", "slow"]
        .iter()
        .map(|id| (id.to_string(), p50(&metrics, "fast") / p50(&metrics, id)))
        .collect();
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let n = 600u64;
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let addr = lasso.addr();
            std::thread::spawn(move || {
                stream(addr, "/rpc/latency-weighted/ethereum", n / 6, receipt)
            })
        })
        .collect();
    let mut served: HashMap<String, usize> = HashMap::new();
    for h in handles {
        let (s, errors) = h.join().unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        for (k, v) in s {
            *served.entry(k).or_insert(0) += v;
        }
    }
    for (id, w) in &weights {
        let expected = w / total;
        let actual = served.get(id).copied().unwrap_or(0) as f64 / n as f64;
        assert!(
            (actual - expected).abs() < 0.10,
            "{id}: share {actual:.3}, expected {expected:.3} from measured p50s (served {served:?}, weights {weights:?})"
        );
    }
}

#[test]
fn cheapest_follows_cost_and_leaves_a_throttled_free_provider() {
    let mocks = three([1, 1, 1]);
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &["cost: 3", "cost: 0", "cost: 1"],
        "probe_share: 0.02, hedge: { enabled: false }",
        "",
    ))
    .start();
    let (served, errors) = stream(lasso.addr(), "/rpc/cheapest/ethereum", 30, receipt);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        served.get("mid"),
        Some(&30),
        "the free provider serves everything: {served:?}"
    );
    mocks[1].set_fault(Fault::RateLimited { retry_after_s: 30 });
    let (served, errors) = stream(lasso.addr(), "/rpc/cheapest/ethereum", 30, receipt);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        served.get("slow"),
        Some(&30),
        "next cheapest while the free one throttles: {served:?}"
    );
    assert!(
        mocks[1].count("eth_getTransactionReceipt") <= 32,
        "throttled provider is left alone after a 429"
    );
}

/// One failing provider out of three: reads see no errors, the provider is excluded, and restored when healthy.
#[test]
fn fault_matrix_excludes_and_restores_a_failing_provider() {
    let faults: Vec<(&str, Fault)> = vec![
        ("refuse", Fault::Refuse),
        ("reset", Fault::ResetMidResponse),
        ("http-500", Fault::Status(500)),
        ("429", Fault::RateLimited { retry_after_s: 1 }),
        ("hang", Fault::Hang),
        ("garbage", Fault::Garbage),
    ];
    for (name, fault) in faults {
        let mocks = three([0, 0, 0]);
        let refs: Vec<&MockProvider> = mocks.iter().collect();
        let cfg = config(
            &refs,
            &[],
            "probe_share: 0.02, breaker: { recovery_ms: 400, max_recovery_ms: 400, half_open_successes: 1 }, hedge: { enabled: false }",
            "",
        );
        let lasso = Lasso::builder(&cfg).start();
        mocks[0].set_fault(fault);
        let (served, errors) = stream(lasso.addr(), "/rpc/priority/ethereum", 40, receipt);
        assert!(errors.is_empty(), "{name}: clients saw errors: {errors:?}");
        assert_eq!(served.get("fast"), None, "{name}: {served:?}");
        let attempts = mocks[0].count("eth_getTransactionReceipt");
        assert!(
            attempts <= 6,
            "{name}: the failing provider must be excluded, not tried {attempts} times for 40 reads"
        );

        // Healthy again: after the recovery timeout a probe succeeds and it serves again.
        mocks[0].set_fault(Fault::None);
        let mut i = 1_000;
        eventually(
            Duration::from_secs(10),
            &format!("{name}: the recovered provider serves again"),
            || {
                let r = post(lasso.addr(), "/rpc/priority/ethereum", &receipt(i));
                assert_eq!(r.status, 200, "{name}: {}", r.describe());
                i += 1;
                match served_by(&r.json()) {
                    Some(p) if p == "fast" => Ok(()),
                    other => Err(format!("served by {other:?}")),
                }
            },
        );
    }
}

#[test]
fn wrong_chain_provider_is_disabled_before_serving() {
    let mocks = three([0, 0, 0]);
    mocks[0].set_chain_id("0x89");
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "probe_share: 0.02, hedge: { enabled: false }",
        "",
    ))
    .start();
    let (served, errors) = stream(lasso.addr(), "/rpc/priority/ethereum", 20, receipt);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(mocks[0].count("eth_getTransactionReceipt"), 0, "{served:?}");
    let status = get(lasso.addr(), "/api/status").json();
    let p = &status["chains"][0]["providers"][0];
    assert_eq!(p["state"], "disabled", "{p}");
    assert!(
        p["routing"]["disabled"].as_str().unwrap().contains("0x89"),
        "{p}"
    );
    assert!(
        lasso.logs().contains("provider serves another chain"),
        "a clear log line"
    );
}

#[test]
fn lagging_provider_is_skipped_for_head_reads_but_serves_old_blocks() {
    let mocks = three([0, 0, 0]);
    for m in &mocks[1..] {
        m.set_result("eth_blockNumber", json!("0x1000"));
    }
    mocks[0].set_result("eth_blockNumber", json!("0xfec")); // 20 behind
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "probe_share: 0.02, hedge: { enabled: false }",
        "    max_lag_blocks: 5\n",
    ))
    .start();
    let status = wait_status_lag(&lasso, 20);
    assert_eq!(status["chains"][0]["head"], 0x1000);
    let latest = |i: u64| {
        rpc(
            json!(i),
            "eth_getBalance",
            json!([format!("0x{i:040x}"), "latest"]),
        )
    };
    let (served, errors) = stream(lasso.addr(), "/rpc/priority/ethereum", 20, latest);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        served.get("fast"),
        None,
        "head reads avoid the lagging provider: {served:?}"
    );
    let old = |i: u64| {
        rpc(
            json!(i),
            "eth_getBalance",
            json!([format!("0x{i:040x}"), "0x10"]),
        )
    };
    let (served, _) = stream(lasso.addr(), "/rpc/priority/ethereum", 5, old);
    assert_eq!(
        served.get("fast"),
        Some(&5),
        "explicit old blocks may use it: {served:?}"
    );
}

fn wait_status_lag(lasso: &Lasso, lag: u64) -> Value {
    eventually(Duration::from_secs(10), &format!("lag {lag}"), || {
        let v = get(lasso.addr(), "/api/status").json();
        if v["chains"][0]["providers"][0]["routing"]["lag"] == lag {
            Ok(v)
        } else {
            Err(format!("status: {v}"))
        }
    })
}

#[test]
fn deterministic_errors_are_returned_once_and_writes_reach_one_provider() {
    let mocks = three([0, 0, 0]);
    let revert = json!({"code": 3, "message": "execution reverted", "data": "0x08c379a0"});
    for m in &mocks {
        m.set_error("eth_call", revert.clone());
        // No provider knows the transaction: a send whose answer was lost is then reported as failed.
        m.set_result("eth_getTransactionByHash", Value::Null);
    }
    mocks[0].set_fault(Fault::Status(500));
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "probe_share: 0.02, hedge: { enabled: false }",
        "",
    ))
    .start();

    let tx = rpc(json!(1), "eth_sendRawTransaction", json!(["0x02f8"]));
    let r = post(lasso.addr(), "/rpc/priority/ethereum", &tx);
    assert_eq!(r.status, 502, "{}", r.describe());
    let sent: usize = mocks
        .iter()
        .map(|m| m.count("eth_sendRawTransaction"))
        .sum();
    assert_eq!(sent, 1, "a raw transaction reaches exactly one provider");

    mocks[0].set_fault(Fault::None);
    let call = rpc(
        json!(2),
        "eth_call",
        json!([{"to": "0x0000000000000000000000000000000000000001"}, "0x10"]),
    );
    let r = post(lasso.addr(), "/rpc/priority/ethereum", &call);
    assert_eq!(r.json()["error"], revert, "{}", r.describe());
    let calls: usize = mocks.iter().map(|m| m.count("eth_call")).sum();
    assert_eq!(calls, 1, "a revert is the answer, not retried");
}

#[test]
fn restart_with_snapshot_routes_to_the_previous_fastest_at_once() {
    let snapshots = tempfile::tempdir().unwrap();
    let slow = MockProvider::start("slow");
    slow.set_fault(Fault::Delay(30));
    let fast = MockProvider::start("fast");
    fast.set_fault(Fault::Delay(1));
    let cfg = config(
        &[&slow, &fast],
        &[],
        "hedge: { enabled: false }, probe_share: 0.0",
        "",
    );
    let dir = snapshots.path().to_str().unwrap().to_string();
    {
        let mut lasso = Lasso::builder(&cfg)
            .env("LASSO_SNAPSHOTS_DIR", &dir)
            .start();
        warm_up(&lasso, &["slow", "fast"]);
        lasso.send_signal(libc::SIGINT);
        assert!(lasso.wait_exit(Duration::from_secs(15)).success());
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().count() >= 1,
        "a snapshot was written at shutdown"
    );
    let before = fast.count("eth_getTransactionReceipt");
    let lasso = Lasso::builder(&cfg)
        .env("LASSO_SNAPSHOTS_DIR", &dir)
        .start();
    // `slow` has priority 1: without the snapshot a cold `fastest` would pick it.
    let r = post(lasso.addr(), "/rpc/fastest/ethereum", &receipt(1));
    assert_eq!(
        served_by(&r.json()).as_deref(),
        Some("fast"),
        "{}",
        r.describe()
    );
    assert_eq!(fast.count("eth_getTransactionReceipt"), before + 1);
    assert!(lasso.logs().contains("loaded benchmark snapshot"));
}

#[test]
fn hedged_read_returns_the_first_good_answer() {
    let mocks = three([0, 0, 0]);
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "probe_share: 0.02, hedge: { enabled: true, min_delay_ms: 50, max_delay_ms: 100 }",
        "",
    ))
    .start();
    mocks[0].set_fault(Fault::Delay(350));
    let started = Instant::now();
    let r = post(
        lasso.addr(),
        "/rpc/priority/ethereum?include_meta=body",
        &receipt(7),
    );
    let took = started.elapsed();
    let v = r.json();
    assert_eq!(served_by(&v).as_deref(), Some("mid"), "{v}");
    assert_eq!(v["lasso_meta"]["hedged"], true, "{v}");
    assert!(
        took < Duration::from_millis(330),
        "the hedge answered before the slow provider: {took:?}"
    );
    let status = wait_metrics_status(&lasso);
    assert!(status["hedges"].as_u64().unwrap() >= 1, "{status}");
}

fn wait_metrics_status(lasso: &Lasso) -> Value {
    eventually(Duration::from_secs(10), "a hedge counted", || {
        let v = get(lasso.addr(), "/api/status").json();
        if v["hedges"].as_u64().unwrap_or(0) >= 1 {
            Ok(v)
        } else {
            Err(format!("status: {v}"))
        }
    })
}

#[test]
fn metadata_reports_the_routing_decision() {
    let mocks = three([0, 0, 0]);
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let lasso = Lasso::builder(&config(
        &refs,
        &[],
        "probe_share: 0.02, hedge: { enabled: false }",
        "",
    ))
    .start();
    mocks[0].set_fault(Fault::Status(503));
    let r = post(
        lasso.addr(),
        "/rpc/priority/ethereum?include_meta=headers",
        &receipt(1),
    );
    let meta: Value =
        serde_json::from_str(r.header("x-lasso-meta").expect("x-lasso-meta header")).unwrap();
    assert!(r.header("x-lasso-request-id").is_some());
    assert_eq!(meta["strategy"], "priority");
    assert_eq!(meta["selected_provider"], "mid");
    assert_eq!(meta["candidates"], json!(["fast", "mid", "slow"]));
    assert_eq!(meta["retries"], 1);
    assert!(
        meta["upstream_latency_us"].as_u64().is_some()
            && meta["lasso_overhead_us"].as_u64().is_some()
    );
    assert!(
        r.json().get("lasso_meta").is_none(),
        "headers mode leaves the body alone"
    );
}
