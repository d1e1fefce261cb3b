//! Cluster view: discovery through a seed list (the same code path as DNS answers), the `cluster` block of
//! `/api/health`, the aggregated `/api/cluster/status` (admin token or cluster secret required), the signed
//! inter-node endpoint (HMAC over method, path, time and nonce; a replay is refused), node join/leave, and the
//! per-profile routing-event stream (`GET /api/events/:profile`, Server-Sent Events).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::sse::EventStream;
use support::*;

const SECRET: &str = "correct horse battery staple";

/// Polls `f` until it returns `Some` (bounded); panics with the last observation at the deadline.
/// `GET /api/cluster/status` with the cluster secret.
fn cluster_status(addr: SocketAddr) -> Value {
    let auth = format!("Bearer {SECRET}");
    let r = request(
        addr,
        "GET",
        "/api/cluster/status",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

/// A `GET /api/cluster/node` request signed now with `secret`.
fn signed_node_request(addr: SocketAddr, secret: &str) -> support::http::Response {
    let auth =
        ::lasso::ops::signature::authorization(secret.as_bytes(), "GET", "/api/cluster/node");
    request(
        addr,
        "GET",
        "/api/cluster/node",
        &[("Authorization", &auth)],
        b"",
    )
}

fn health(addr: SocketAddr) -> Value {
    let r = get(addr, "/api/health");
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

fn node(yaml: &str, id: &str, region: &str, secret: &str, seeds: &std::path::Path) -> Lasso {
    Lasso::builder(yaml)
        .workers(1)
        .env("LASSO_NODE_ID", id)
        .env("CLUSTER_REGION", region)
        .env("LASSO_CLUSTER_SECRET", secret)
        .env("CLUSTER_SEEDS_FILE", seeds.to_str().unwrap())
        .env("CLUSTER_POLL_MS", "200")
        .start()
}

#[test]
fn three_nodes_discover_each_other_refuse_a_wrong_secret_and_degrade_when_one_dies() {
    let p1 = MockProvider::start("p1");
    // Every node calls from 127.0.0.1, the intruder too: its refused polls must not lock the others out.
    let yaml = single_chain(&[&p1])
        .server("auth_max_failures", 1_000_000)
        .yaml();
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seeds");
    std::fs::write(&seeds, "").unwrap();
    let a = node(&yaml, "node-a", "iad", SECRET, &seeds);
    let b = node(&yaml, "node-b", "sjc", SECRET, &seeds);
    let c = node(&yaml, "node-c", "iad", SECRET, &seeds);
    let intruder = node(&yaml, "node-x", "ams", "not the secret", &seeds);
    // Ports are known only now: the seed list is re-read at every poll, like a DNS answer.
    let list: Vec<String> = [&a, &b, &c, &intruder]
        .iter()
        .map(|n| n.addr().to_string())
        .collect();
    std::fs::write(&seeds, list.join(",")).unwrap();

    for n in [&a, &b, &c] {
        let h = eventually(Duration::from_secs(20), "3/3 healthy", || {
            let h = health(n.addr());
            let cl = &h["cluster"];
            if cl["nodes_total"] == json!(3) && cl["status"] == json!("healthy") {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        });
        let cl = &h["cluster"];
        assert_eq!(cl["enabled"], json!(true), "{h}");
        assert_eq!(cl["nodes_connected"], json!(2), "{h}");
        assert_eq!(cl["regions"], json!(["iad", "sjc"]), "{h}");
        assert_eq!(h["status"], json!("ok"), "{h}");
    }
    // The node with the wrong secret is refused by the others and counts nobody.
    let h = health(intruder.addr());
    assert_eq!(h["cluster"]["nodes_connected"], json!(0), "{h}");
    assert_eq!(h["cluster"]["nodes_total"], json!(1), "{h}");

    // The inter-node endpoint wants a request signed with the secret; the secret itself as a bearer is refused.
    let r = get(a.addr(), "/api/cluster/node");
    assert_eq!(r.status, 401, "{}", r.describe());
    let auth = format!("Bearer {SECRET}");
    let r = request(
        a.addr(),
        "GET",
        "/api/cluster/node",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = signed_node_request(a.addr(), "not the secret");
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = signed_node_request(a.addr(), SECRET);
    assert_eq!(r.status, 200, "{}", r.describe());
    let report = r.json();
    assert_eq!(report["node_id"], json!("node-a"), "{report}");
    assert_eq!(report["region"], json!("iad"), "{report}");
    assert!(
        report["metrics"]["chains"][0]["providers"][0]["id"] == json!("p1"),
        "{report}"
    );

    // Traffic on b shows up in a's aggregated view.
    for i in 0..3 {
        let r = post(
            b.addr(),
            "/rpc/ethereum",
            &rpc(json!(i), "eth_getBalance", json!(["0x1", "latest"])),
        );
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let status = eventually(Duration::from_secs(10), "aggregated status", || {
        let s = cluster_status(a.addr());
        let b_requests = s["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["node_id"] == json!("node-b")))
            .map(|n| n["metrics"]["requests"].as_u64().unwrap_or(0));
        if s["coverage"] == json!({"responding": 3, "total": 3}) && b_requests >= Some(3) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(status["unreachable"], json!([]), "{status}");
    let refused = status["refused"].as_array().unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r["address"] == json!(intruder.addr().to_string())),
        "{status}"
    );
    assert!(
        status["totals"]["requests"].as_u64().unwrap() >= 3,
        "{status}"
    );
    let p1_agg = &status["providers"][0];
    assert_eq!(p1_agg["id"], json!("p1"), "{status}");
    assert!(p1_agg["requests"].as_u64().unwrap() >= 3, "{status}");

    // Kill c: a reports degraded, lists c as unreachable, and logs and counts the leave.
    let c_addr = c.addr().to_string();
    drop(c);
    let h = eventually(Duration::from_secs(20), "degraded after a kill", || {
        let h = health(a.addr());
        if h["cluster"]["status"] == json!("degraded") {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    });
    assert_eq!(h["cluster"]["nodes_total"], json!(2), "{h}");
    assert_eq!(h["cluster"]["nodes_expected"], json!(3), "{h}");
    let status = cluster_status(a.addr());
    assert_eq!(
        status["coverage"],
        json!({"responding": 2, "total": 3}),
        "{status}"
    );
    let unreachable = status["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1, "{status}");
    assert_eq!(unreachable[0]["node_id"], json!("node-c"), "{status}");
    assert_eq!(unreachable[0]["address"], json!(c_addr), "{status}");
    assert_eq!(status["status"], json!("degraded"), "{status}");
    assert!(a.wait_for_log("cluster node joined", SEC), "{}", a.logs());
    assert!(a.wait_for_log("cluster node left", 5 * SEC), "{}", a.logs());
    let metrics = get(a.addr(), "/metrics").text();
    assert!(metrics.contains("lasso_cluster_joins_total 2"), "{metrics}");
    assert!(
        metrics.contains("lasso_cluster_leaves_total 1"),
        "{metrics}"
    );
}

/// A TCP relay in front of `target` that keeps the head of every request it forwarded (once answered): a wire-tap
/// on the link between two nodes.
struct Tap {
    addr: SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Tap {
    fn start(target: SocketAddr) -> Tap {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = heads.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let Ok(mut upstream) = std::net::TcpStream::connect(target) else {
                        return;
                    };
                    let _ = upstream.set_read_timeout(Some(Duration::from_secs(5)));
                    if upstream.write_all(&head).is_err() {
                        return;
                    }
                    let mut answer = Vec::new();
                    let _ = upstream.read_to_end(&mut answer);
                    // Kept once the target has answered it: a replay of it can only come after.
                    kept.lock().unwrap().push(head);
                    let _ = client.write_all(&answer);
                });
            }
        });
        Tap { addr, heads }
    }

    fn last_head(&self) -> Option<Vec<u8>> {
        self.heads.lock().unwrap().last().cloned()
    }
}

/// Sends raw request bytes and returns the status code of the answer.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn inter_node_requests_are_signed_and_a_replayed_request_is_refused() {
    let p1 = MockProvider::start("p1");
    let yaml = single_chain(&[&p1]).yaml();
    let dir = tempfile::tempdir().unwrap();
    let (seeds_a, seeds_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&seeds_a, "").unwrap();
    std::fs::write(&seeds_b, "").unwrap();
    let a = node(&yaml, "node-a", "iad", SECRET, &seeds_a);
    let b = Lasso::builder(&yaml)
        .workers(1)
        .env("LASSO_NODE_ID", "node-b")
        .env("CLUSTER_REGION", "sjc")
        .env("LASSO_CLUSTER_SECRET", SECRET)
        .env("LASSO_ADMIN_TOKEN", "admin-token-b")
        .env("CLUSTER_SEEDS_FILE", seeds_b.to_str().unwrap())
        .env("CLUSTER_POLL_MS", "200")
        .start();
    // a reaches b only through the tap; b reaches a directly.
    let tap = Tap::start(b.addr());
    std::fs::write(&seeds_a, tap.addr.to_string()).unwrap();
    std::fs::write(&seeds_b, a.addr().to_string()).unwrap();
    for n in [&a, &b] {
        eventually(Duration::from_secs(20), "two nodes joined", || {
            let h = health(n.addr());
            if h["cluster"]["nodes_total"] == json!(2) {
                Ok(())
            } else {
                Err(h.to_string())
            }
        });
    }
    // What a sent over the wire carries a signature, never the secret.
    let head = tap.last_head().expect("a request from a to b");
    let text = String::from_utf8_lossy(&head).to_string();
    assert!(text.contains("Authorization: Lasso-HMAC t="), "{text}");
    assert!(!text.contains(SECRET), "{text}");

    // Replaying the captured request, byte for byte, is refused: b has seen that signature.
    assert_eq!(send_raw(b.addr(), &head), 401, "{text}");
    // So is a request signed too long ago (or too far ahead), or for another path, or one whose time was edited.
    let now = ::lasso::ops::signature::now_unix();
    let old = ::lasso::ops::signature::sign(
        SECRET.as_bytes(),
        "GET",
        "/api/cluster/node",
        now - 60,
        "n1",
    );
    let ahead = ::lasso::ops::signature::sign(
        SECRET.as_bytes(),
        "GET",
        "/api/cluster/node",
        now + 60,
        "n2",
    );
    let other =
        ::lasso::ops::signature::sign(SECRET.as_bytes(), "GET", "/api/cluster/status", now, "n3");
    for auth in [&old, &ahead, &other] {
        let r = request(
            b.addr(),
            "GET",
            "/api/cluster/node",
            &[("Authorization", auth)],
            b"",
        );
        assert_eq!(r.status, 401, "{auth}: {}", r.describe());
    }
    let t = text
        .split("t=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_string();
    let edited = text.replacen(
        &format!("t={t}"),
        &format!("t={}", t.parse::<u64>().unwrap() + 1),
        1,
    );
    assert_eq!(send_raw(b.addr(), edited.as_bytes()), 401, "{edited}");
    // A fresh signature is accepted once.
    let fresh =
        ::lasso::ops::signature::authorization(SECRET.as_bytes(), "GET", "/api/cluster/node");
    let r = request(
        b.addr(),
        "GET",
        "/api/cluster/node",
        &[("Authorization", &fresh)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["node_id"], json!("node-b"));
    let r = request(
        b.addr(),
        "GET",
        "/api/cluster/node",
        &[("Authorization", &fresh)],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    // The refusals are logged without what was presented.
    assert!(
        b.wait_for_log("signature already used", SEC),
        "{}",
        b.logs()
    );
    assert!(!b.logs().contains(SECRET), "{}", b.logs());

    // The cluster view (internal addresses, error strings) needs the admin token or the cluster secret.
    let r = get(b.addr(), "/api/cluster/status");
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request(
        b.addr(),
        "GET",
        "/api/cluster/status",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = request(
        b.addr(),
        "GET",
        "/api/cluster/status",
        &[("Authorization", "Bearer admin-token-b")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let s = cluster_status(b.addr());
    assert_eq!(s["coverage"], json!({"responding": 2, "total": 2}), "{s}");
    // The nodes kept talking through all of this.
    assert_eq!(health(a.addr())["cluster"]["nodes_total"], json!(2));
}

#[test]
fn without_a_secret_clustering_is_off_and_the_node_endpoint_is_404() {
    let p1 = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&p1]).yaml())
        .env("CLUSTER_SEEDS", "127.0.0.1:1")
        .start();
    let h = health(lasso.addr());
    assert_eq!(
        h["cluster"],
        json!({"enabled": false, "nodes_connected": 0, "nodes_total": 1, "nodes_expected": 1,
               "regions": ["unknown"], "status": "healthy"}),
        "{h}"
    );
    assert!(
        lasso.wait_for_log("LASSO_CLUSTER_SECRET is not set", SEC),
        "{}",
        lasso.logs()
    );
    let r = request(
        lasso.addr(),
        "GET",
        "/api/cluster/node",
        &[("Authorization", "Bearer anything")],
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.describe());
    // Without a cluster secret or an admin token, nobody can see the cluster view.
    let r = get(lasso.addr(), "/api/cluster/status");
    assert_eq!(r.status, 404, "{}", r.describe());
}

#[test]
fn event_streams_carry_only_their_profile_with_the_source_node() {
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    p1.set_chain_id("0x1");
    p2.set_chain_id("0x1");
    let config = Config::new()
        .chain(
            Chain::new("ethereum", 1)
                .strategy("priority")
                .provider(Provider::new("p1", &p1.url())),
        )
        .profile(
            "beta",
            vec![
                Chain::new("ethereum", 1)
                    .strategy("priority")
                    .provider(Provider::new("p2", &p2.url())),
            ],
        );
    let lasso = Lasso::builder(&config.yaml())
        .workers(2)
        .env("LASSO_NODE_ID", "sse-node")
        .env("CLUSTER_REGION", "fra")
        .start();
    let r = get(lasso.addr(), "/api/events/nope");
    assert_eq!(r.status, 404, "{}", r.describe());

    let mut default_stream = EventStream::open(lasso.addr(), "default");
    let mut beta_stream = EventStream::open(lasso.addr(), "beta");
    let body = rpc(json!(1), "eth_getBalance", json!(["0x1", "latest"]));
    // Interleave the profiles on fresh connections (spread over both workers).
    for _ in 0..4 {
        assert_eq!(
            post(lasso.addr(), "/rpc/profile/beta/ethereum", &body).status,
            200
        );
        assert_eq!(post(lasso.addr(), "/rpc/ethereum", &body).status, 200);
        assert_eq!(
            post(lasso.addr(), "/rpc/profile/beta/ethereum", &body).status,
            200
        );
    }
    for i in 0..4 {
        let e = default_stream
            .next_event(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("default event {i} missing"));
        assert_eq!(e["profile"], json!("default"), "{e}");
        assert_eq!(e["chain"], json!("ethereum"), "{e}");
        assert_eq!(e["method"], json!("eth_getBalance"), "{e}");
        assert_eq!(e["provider"], json!("p1"), "{e}");
        assert_eq!(e["source_node"], json!("sse-node"), "{e}");
        assert_eq!(e["source_region"], json!("fra"), "{e}");
        assert_eq!(e["ok"], json!(true), "{e}");
    }
    for i in 0..8 {
        let e = beta_stream
            .next_event(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("beta event {i} missing"));
        assert_eq!(e["profile"], json!("beta"), "{e}");
        assert_eq!(e["provider"], json!("p2"), "{e}");
        assert_eq!(e["source_node"], json!("sse-node"), "{e}");
    }
    // Nothing else arrived on the default stream: the next event there is the next default request.
    assert_eq!(
        post(lasso.addr(), "/rpc/profile/beta/ethereum", &body).status,
        200
    );
    assert_eq!(
        post(
            lasso.addr(),
            "/rpc/ethereum",
            &rpc(json!(1), "eth_blockNumber", json!([]))
        )
        .status,
        200
    );
    let e = default_stream
        .next_event(Duration::from_secs(5))
        .expect("default event");
    assert_eq!(e["profile"], json!("default"), "{e}");
    assert_eq!(e["method"], json!("eth_blockNumber"), "{e}");

    // Draining ends the streams: the process exits promptly and the subscriber sees the end of the stream.
    let mut lasso = lasso;
    lasso.send_signal(libc::SIGTERM);
    assert!(
        lasso.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        lasso.logs()
    );
    assert!(default_stream.next_event(Duration::from_secs(2)).is_none());
}

#[test]
fn a_nodes_event_stream_shows_the_decisions_of_its_peers_with_their_node_id() {
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    p1.set_chain_id("0x1");
    p2.set_chain_id("0x1");
    let yaml = Config::new()
        .chain(
            Chain::new("ethereum", 1)
                .strategy("priority")
                .provider(Provider::new("p1", &p1.url())),
        )
        .profile(
            "beta",
            vec![
                Chain::new("ethereum", 1)
                    .strategy("priority")
                    .provider(Provider::new("p2", &p2.url())),
            ],
        )
        .yaml();
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seeds");
    std::fs::write(&seeds, "").unwrap();
    let a = node(&yaml, "node-a", "iad", SECRET, &seeds);
    let b = node(&yaml, "node-b", "sjc", SECRET, &seeds);
    std::fs::write(&seeds, format!("{},{}", a.addr(), b.addr())).unwrap();
    eventually(Duration::from_secs(20), "a sees b", || {
        let h = health(a.addr());
        if h["cluster"]["nodes_total"] == json!(2) {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    // The inter-node events endpoint wants a signature over its path and query.
    let r = get(a.addr(), "/api/cluster/events?since=0&profiles=default");
    assert_eq!(r.status, 401, "{}", r.describe());
    // Signed over path and query: good once, for that query only.
    let path = "/api/cluster/events?since=0&profiles=default,nope";
    let auth = ::lasso::ops::signature::authorization(SECRET.as_bytes(), "GET", path);
    let r = request(b.addr(), "GET", path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.describe());
    let first: Value = serde_json::from_str(r.text().lines().next().unwrap()).unwrap();
    assert_eq!(first["node_id"], json!("node-b"), "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = request(b.addr(), "GET", path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 401, "a replay: {}", r.describe());
    let other = "/api/cluster/events?since=0&profiles=beta";
    let fresh = ::lasso::ops::signature::authorization(SECRET.as_bytes(), "GET", path);
    let r = request(b.addr(), "GET", other, &[("Authorization", &fresh)], b"");
    assert_eq!(r.status, 401, "another query: {}", r.describe());

    let mut stream = EventStream::open(a.addr(), "default");
    let body = rpc(json!(1), "eth_getBalance", json!(["0x1", "latest"]));
    // B starts keeping the profile's events once A asks for them: keep sending until one arrives.
    let e = eventually(
        Duration::from_secs(10),
        "node-b's decision on node-a",
        || {
            assert_eq!(
                post(b.addr(), "/rpc/profile/beta/ethereum", &body).status,
                200
            );
            assert_eq!(post(b.addr(), "/rpc/ethereum", &body).status, 200);
            match stream.next_event(Duration::from_millis(500)) {
                Some(e) => Ok(e),
                None => Err("no event yet".to_string()),
            }
        },
    );
    assert_eq!(e["source_node"], json!("node-b"), "{e}");
    assert_eq!(e["source_region"], json!("sjc"), "{e}");
    assert_eq!(e["profile"], json!("default"), "{e}");
    assert_eq!(e["provider"], json!("p1"), "{e}");
    // A's own decisions and B's keep coming, each marked with its node; beta's never reach the default stream.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        assert_eq!(post(a.addr(), "/rpc/ethereum", &body).status, 200);
        assert_eq!(
            post(b.addr(), "/rpc/profile/beta/ethereum", &body).status,
            200
        );
        assert_eq!(post(b.addr(), "/rpc/ethereum", &body).status, 200);
    }
    for _ in 0..6 {
        let e = stream
            .next_event(Duration::from_secs(5))
            .expect("an event from either node");
        assert_eq!(e["profile"], json!("default"), "{e}");
        assert_eq!(e["provider"], json!("p1"), "{e}");
        seen.insert(e["source_node"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["node-a".to_string(), "node-b".to_string()]
    );
}
