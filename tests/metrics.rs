//! `GET /metrics`: Prometheus text that a Prometheus parser accepts, with counters that match the traffic sent.

mod support;

use serde_json::json;
use support::*;

fn metric(families: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_parse_and_counters_match_requests_sent() {
    let p1 = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&p1]).upstream("coalesce", "false").yaml()).start();
    let reads = 25;
    for i in 0..reads {
        let r = post(
            lasso.addr(),
            "/rpc/ethereum",
            &rpc(json!(i), "eth_getBalance", json!(["0x01", "0x10"])),
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(post(lasso.addr(), "/rpc/ethereum", "{nope").status, 400);
    assert_eq!(post(lasso.addr(), "/rpc/ethereum", "[]").status, 400);

    let r = get(lasso.addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{}",
        r.describe()
    );
    let text = r.text();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    assert_eq!(
        metric(&scrape, "lasso_requests_total", &[]),
        Some((reads + 2) as f64),
        "{text}"
    );
    assert_eq!(
        metric(&scrape, "lasso_client_errors_total", &[("code", "-32700")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&scrape, "lasso_client_errors_total", &[("code", "-32600")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &scrape,
            "lasso_upstream_requests_total",
            &[("provider", "p1"), ("outcome", "success")]
        ),
        Some(p1.count("eth_getBalance") as f64),
        "{text}"
    );
    assert_eq!(p1.count("eth_getBalance"), reads as usize);
    assert_eq!(
        metric(
            &scrape,
            "lasso_provider_breaker_open",
            &[("provider", "p1")]
        ),
        Some(0.0)
    );
    let per_worker: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "lasso_worker_requests_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(
        per_worker,
        (reads + 2) as f64,
        "per-worker counts add up to the total"
    );
    assert!(text.contains("lasso_ws_clients 0"));
}
