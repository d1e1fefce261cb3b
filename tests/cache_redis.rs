//! Redis as the shared cache layer (`cache.redis_url`): a second Lasso node serves what the first fetched, without
//! asking its own provider; with Redis killed mid-run, or Redis not answering at all, both nodes keep answering from
//! their providers with no client error, within Redis's timeout, and count the failures. Each test runs a real
//! `redis-server` (Debian package `redis-server`, installed by `.ci/run`) on a free port.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::*;

fn status(lasso: &Lasso) -> Value {
    get(lasso.addr(), "/api/status").json()
}

fn redis_stats(lasso: &Lasso) -> Value {
    status(lasso)["cache"]["redis"].clone()
}

/// A provider whose every block is block 0x100000 (finalized at once with `finality_depth: 0`).
fn provider(name: &str) -> MockProvider {
    let p = MockProvider::start(name);
    p.set_chain_id("0x1");
    p.set_result(
        "eth_getBlockByNumber",
        json!({"number": "0x100000", "hash": format!("0x{:064x}", 1), "parentHash": format!("0x{:064x}", 0)}),
    );
    p
}

fn node(p: &MockProvider, cache_extra: &str, env: &[(&str, &str)]) -> Lasso {
    let cfg =
        Config::new().chain(Chain::new("ethereum", 1).provider(Provider::new("p1", &p.url())));
    let yaml = format!(
        "{}cache:\n  enabled: true\n{cache_extra}",
        cfg.yaml().replace(
            "    chain_id: 1\n",
            "    chain_id: 1\n    head_poll_ms: 100\n    finality_depth: 0\n"
        )
    );
    let mut b = Lasso::builder(&yaml).workers(1);
    for (k, v) in env {
        b = b.env(k, v);
    }
    let lasso = b.start();
    eventually(
        Duration::from_secs(20),
        "finalized head reported",
        || match status(&lasso)["chains"][0]["finalized"].as_u64() {
            Some(0x100000) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    lasso
}

/// Provider calls of `eth_getBlockByNumber` for block `n` (the finality tracker's own polls are not counted).
fn block_calls(p: &MockProvider, n: u64) -> usize {
    let tag = format!("0x{n:x}");
    p.calls()
        .iter()
        .filter(|c| c["method"] == "eth_getBlockByNumber" && c["params"][0] == tag.as_str())
        .count()
}

/// Reads block `n` with id `id`: 200, the client's id, a result.
fn read_block(lasso: &Lasso, n: u64, id: Value) -> Value {
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(
            id.clone(),
            "eth_getBlockByNumber",
            json!([format!("0x{n:x}"), false]),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["id"], id, "{v}");
    assert!(v.get("error").is_none() && v["result"].is_object(), "{v}");
    v
}

#[test]
fn a_second_node_serves_what_the_first_cached() {
    let redis = RedisServer::start(Some("s3cret-redis"));
    let url = format!(
        "  redis_url: \"redis://:${{RPC_REDIS_PASSWORD}}@127.0.0.1:{}/2\"\n",
        redis.port
    );
    let env = [("RPC_REDIS_PASSWORD", "s3cret-redis")];
    let (pa, pb) = (provider("pa"), provider("pb"));
    let a = node(&pa, &url, &env);
    let b = node(&pb, &url, &env);

    let first = read_block(&a, 0x10, json!("a1"));
    assert_eq!(block_calls(&pa, 0x10), 1);
    eventually(
        Duration::from_secs(10),
        "node A wrote to Redis",
        || match redis_stats(&a)["stored"].as_u64() {
            Some(n) if n >= 1 => Ok(()),
            _ => Err(redis_stats(&a).to_string()),
        },
    );

    let second = read_block(&b, 0x10, json!(7));
    assert_eq!(second["result"], first["result"]);
    assert_eq!(block_calls(&pb, 0x10), 0, "node B asked its provider");
    let rb = redis_stats(&b);
    assert_eq!(rb["hits"], 1, "{rb}");
    assert_eq!(rb["errors"], 0, "{rb}");
    // Kept locally on B now: the next read asks neither Redis nor the provider.
    read_block(&b, 0x10, json!(8));
    assert_eq!(redis_stats(&b)["hits"], 1);
    assert_eq!(block_calls(&pb, 0x10), 0);

    // A block B has not seen and Redis does not have: B asks its provider.
    read_block(&b, 0x11, json!(9));
    assert_eq!(block_calls(&pb, 0x11), 1);

    let metrics = get(b.addr(), "/metrics").text();
    assert!(
        metrics.contains("lasso_cache_redis_hits_total 1"),
        "{metrics}"
    );
    for text in [
        status(&a).to_string(),
        status(&b).to_string(),
        metrics,
        a.logs(),
        b.logs(),
    ] {
        assert!(!text.contains("s3cret-redis"), "the Redis password leaked");
    }
}

#[test]
fn redis_killed_mid_run_both_nodes_keep_answering() {
    let mut redis = RedisServer::start(None);
    let url = format!("  redis_url: redis://127.0.0.1:{}\n", redis.port);
    let (pa, pb) = (provider("pa"), provider("pb"));
    let a = node(&pa, &url, &[]);
    let b = node(&pb, &url, &[]);
    let t = Instant::now();
    for n in 0..20 {
        read_block(&a, n, json!(n));
    }
    eprintln!("node A: {:?} per read from its provider", t.elapsed() / 20);
    eventually(
        Duration::from_secs(10),
        "node A wrote to Redis",
        || match redis_stats(&a)["stored"].as_u64() {
            Some(20) => Ok(()),
            _ => Err(redis_stats(&a).to_string()),
        },
    );
    let t = Instant::now();
    for n in 0..10 {
        read_block(&b, n, json!(n));
    }
    let from_redis = t.elapsed() / 10;
    assert_eq!(redis_stats(&b)["hits"], 10);
    let t = Instant::now();
    for n in 0..10 {
        read_block(&b, n, json!(n));
    }
    eprintln!(
        "node B, one connection per read: {from_redis:?} per read from Redis, {:?} from its embedded store",
        t.elapsed() / 10
    );

    redis.kill();
    // Both keep answering: what each kept locally, and the rest from their providers.
    for round in 0..3 {
        for n in 0..40 {
            read_block(&a, n, json!(format!("a{round}-{n}")));
            read_block(&b, n, json!(format!("b{round}-{n}")));
        }
    }
    assert_eq!(block_calls(&pb, 15), 1, "B fetched from its provider once");
    for lasso in [&a, &b] {
        let s = status(lasso);
        let r = &s["cache"]["redis"];
        assert!(r["errors"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["circuit_opened"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["skipped"].as_u64().unwrap() >= 1, "{r}");
        let metrics = get(lasso.addr(), "/metrics").text();
        assert!(
            !metrics.contains("lasso_client_errors_total{"),
            "client errors: {metrics}"
        );
    }
}

#[test]
fn a_redis_that_never_answers_costs_at_most_its_timeout() {
    // Accepts connections and never answers.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming() {
            held.push(s);
        }
    });
    let p = provider("p1");
    let lasso = node(
        &p,
        &format!("  redis_url: redis://127.0.0.1:{port}\n  redis_circuit_failures: 1000\n"),
        &[],
    );
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let t = Instant::now();
        read_block(&lasso, n, json!(n));
        slowest = slowest.max(t.elapsed());
    }
    let r = redis_stats(&lasso);
    assert!(r["errors"].as_u64().unwrap() >= 1, "{r}");
    // 20 ms of Redis timeout plus the provider's answer (a local mock, debug build, a busy machine: generous).
    assert!(
        slowest < Duration::from_millis(1000),
        "slowest read {slowest:?}"
    );
    eprintln!("slowest read with a silent Redis: {slowest:?}; {r}");
}
