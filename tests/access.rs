//! Client access through the real binary: profiles that require an API key answer 401 (JSON-RPC -32014, no upstream
//! call) without one or with an unknown one, over HTTP and on the WebSocket handshake; a key is accepted as
//! `X-Lasso-Key`, `Authorization: Bearer` or `?key=`; a key's profile, chain and method rules answer 403 (-32015);
//! keys never appear in logs.

mod support;

use std::net::SocketAddr;

use support::ws::WsClient;
use support::*;

const ALICE: &str = "alice-secret-key-0123456789";
const BOB: &str = "bob-secret-key-abcdefghijkl";
const DAPP: &str = "dapp-secret-key-0000000000";
const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]}"#;

/// Profile `default` (ethereum, alias eth; base) requires a key; profile `open` does not.
fn config(p1: &MockProvider, p2: &MockProvider) -> String {
    p1.set_chain_id("0x1");
    p2.set_chain_id("0x2105");
    let yaml = Config::new()
        .chain(
            Chain::new("ethereum", 1)
                .alias("eth")
                .strategy("priority")
                .provider(Provider::new("p1", &p1.url())),
        )
        .chain(
            Chain::new("base", 8453)
                .strategy("priority")
                .provider(Provider::new("p2", &p2.url())),
        )
        .profile(
            "open",
            vec![
                Chain::new("ethereum", 1)
                    .strategy("priority")
                    .provider(Provider::new("p1o", &p1.url())),
            ],
        )
        .yaml();
    format!(
        "{yaml}\naccess:\n  require_key: [default]\n  keys:\n    \
         - {{ id: alice, key: \"${{RPC_ALICE_KEY}}\" }}\n    \
         - {{ id: bob, key: \"{BOB}\", profiles: [default], chains: [eth], methods: {{ deny: [\"eth_getLogs\", \"debug_*\"] }} }}\n    \
         - {{ id: dapp, key: \"{DAPP}\", contracts: [\"0x3535353535353535353535353535353535353535\"] }}\n"
    )
}

fn start(p1: &MockProvider, p2: &MockProvider) -> Lasso {
    Lasso::builder(&config(p1, p2))
        .workers(1)
        .env("RPC_ALICE_KEY", ALICE)
        .start()
}

fn post_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, body.as_bytes())
}

#[test]
fn missing_and_unknown_keys_get_401_without_an_upstream_call() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let lasso = start(&p1, &p2);
    let before = p1.received();
    for (what, headers, path) in [
        ("no key", vec![], "/rpc/ethereum"),
        (
            "unknown header key",
            vec![("X-Lasso-Key", "not-a-key-at-all-000000")],
            "/rpc/ethereum",
        ),
        (
            "unknown bearer",
            vec![("Authorization", "Bearer not-a-key-at-all-000000")],
            "/rpc/ethereum",
        ),
        (
            "unknown query key",
            vec![],
            "/rpc/ethereum?key=not-a-key-at-all-000000",
        ),
        (
            "basic auth is no key",
            vec![("Authorization", "Basic YWxpY2U6eA==")],
            "/rpc/ethereum",
        ),
    ] {
        let r = post_with(lasso.addr(), path, &headers, CALL);
        assert_eq!(r.status, 401, "{what}: {}", r.describe());
        assert_eq!(r.rpc_code(), Some(-32014), "{what}: {}", r.describe());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{what}"
        );
        assert!(
            !r.text().contains("not-a-key"),
            "{what}: the presented key is not echoed"
        );
    }
    assert_eq!(
        p1.received(),
        before,
        "no refused request reached a provider"
    );
    // The profile without `require_key` answers without a key.
    let r = post(lasso.addr(), "/rpc/profile/open/ethereum", CALL);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.json().get("result").is_some(), "{}", r.describe());
    let logs = lasso.logs();
    assert!(
        !logs.contains(ALICE) && !logs.contains(BOB),
        "keys never reach the logs"
    );
}

#[test]
fn a_valid_key_is_taken_from_each_place() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let lasso = start(&p1, &p2);
    let bearer = format!("Bearer {ALICE}");
    let query = format!("/rpc/ethereum?key={ALICE}");
    for (what, headers, path) in [
        ("X-Lasso-Key", vec![("X-Lasso-Key", ALICE)], "/rpc/ethereum"),
        (
            "bearer",
            vec![("Authorization", bearer.as_str())],
            "/rpc/ethereum",
        ),
        ("query", vec![], query.as_str()),
    ] {
        let before = p1.received();
        let r = post_with(lasso.addr(), path, &headers, CALL);
        assert_eq!(r.status, 200, "{what}: {}", r.describe());
        assert_eq!(r.json()["id"], 7, "{what}: {}", r.describe());
        assert!(r.json().get("result").is_some(), "{what}: {}", r.describe());
        assert_eq!(p1.received(), before + 1, "{what}: forwarded once");
    }
}

/// The next event of `stream` (events of other requests, none expected here, fail the test).
fn next_event(stream: &mut support::sse::EventStream) -> serde_json::Value {
    stream
        .next_event(std::time::Duration::from_secs(5))
        .expect("an event")
}

#[test]
fn routing_events_carry_the_key_id_and_never_the_key() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let lasso = start(&p1, &p2);
    let mut default = support::sse::EventStream::open(lasso.addr(), "default");
    let mut open = support::sse::EventStream::open(lasso.addr(), "open");
    // HTTP with a key in a header: the event names the key's id.
    let r = post_with(
        lasso.addr(),
        "/rpc/ethereum",
        &[("X-Lasso-Key", ALICE)],
        CALL,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let e = next_event(&mut default);
    assert_eq!(e["key_id"], "alice", "{e}");
    assert!(!e.to_string().contains(ALICE), "{e}");
    // WebSocket opened with a key in the query: each call's event names it.
    let mut ws =
        WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={BOB}")).expect("upgraded");
    let reply = ws.call(1, "eth_blockNumber", serde_json::json!([]), &mut Vec::new());
    assert!(reply.get("result").is_some(), "{reply}");
    let e = next_event(&mut default);
    assert_eq!(e["key_id"], "bob", "{e}");
    // Without a key (a profile that needs none) the field is null; each stream sees only its profile's requests,
    // so only the keys used on it.
    let r = post_with(lasso.addr(), "/rpc/profile/open/ethereum", &[], CALL);
    assert_eq!(r.status, 200, "{}", r.describe());
    let e = next_event(&mut open);
    assert!(e["key_id"].is_null(), "{e}");
    assert_eq!(e["profile"], "open", "{e}");
    let r = post_with(
        lasso.addr(),
        "/rpc/profile/open/ethereum",
        &[("X-Lasso-Key", ALICE)],
        CALL,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let e = next_event(&mut open);
    assert_eq!(e["key_id"], "alice", "{e}");
    assert!(
        default
            .next_event(std::time::Duration::from_millis(300))
            .is_none(),
        "the default profile's stream saw another profile's key"
    );
}

#[test]
fn a_keys_profile_chain_and_method_rules_answer_403() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let lasso = start(&p1, &p2);
    let bob = [("X-Lasso-Key", BOB)];
    // Allowed: chain `eth` names ethereum, whatever the URL calls it.
    let r = post_with(lasso.addr(), "/rpc/1", &bob, CALL);
    assert_eq!(r.status, 200, "{}", r.describe());
    let before = (p1.received(), p2.received());
    let logs = r#"{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{}]}"#;
    let debug_in_batch = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]},{"jsonrpc":"2.0","id":2,"method":"debug_traceTransaction","params":["0x00"]}]"#;
    for (what, path, body) in [
        ("chain", "/rpc/base", CALL),
        ("method", "/rpc/ethereum", logs),
        ("method", "/rpc/ethereum", debug_in_batch),
    ] {
        let r = post_with(lasso.addr(), path, &bob, body);
        assert_eq!(r.status, 403, "{what}: {}", r.describe());
        assert_eq!(r.rpc_code(), Some(-32015), "{what}: {}", r.describe());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(what),
            "{what}"
        );
    }
    // Bob may not use profile `open` (his key names `default` only), even though `open` needs no key.
    let r = post_with(lasso.addr(), "/rpc/profile/open/ethereum", &bob, CALL);
    assert_eq!(r.status, 403, "{}", r.describe());
    assert_eq!(
        (p1.received(), p2.received()),
        before,
        "no refused request reached a provider"
    );
    // A contract allow-list holds eth_call's `to` and the destination decoded from a raw transaction.
    let dapp = [("X-Lasso-Key", DAPP)];
    let call_to = |to: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"eth_call","params":[{{"to":"{to}","data":"0x"}},"latest"]}}"#
        )
    };
    let allowed = post_with(
        lasso.addr(),
        "/rpc/ethereum",
        &dapp,
        &call_to("0x3535353535353535353535353535353535353535"),
    );
    assert_eq!(allowed.status, 200, "{}", allowed.describe());
    let before = p1.received();
    let other = post_with(
        lasso.addr(),
        "/rpc/ethereum",
        &dapp,
        &call_to("0x0000000000000000000000000000000000000001"),
    );
    assert_eq!(other.status, 403, "{}", other.describe());
    assert_eq!(other.rpc_code(), Some(-32015));
    assert!(other.text().contains("contract"), "{}", other.describe());
    // EIP-155's example transaction sends to 0x3535...; a contract creation (empty `to`) is refused.
    let legacy = "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";
    let send = |raw: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":4,"method":"eth_sendRawTransaction","params":["{raw}"]}}"#
        )
    };
    let creation = post_with(
        lasso.addr(),
        "/rpc/ethereum",
        &dapp,
        &send("0xc50101018080"),
    );
    assert_eq!(creation.status, 403, "{}", creation.describe());
    assert_eq!(p1.received(), before, "refused calls reach no provider");
    let sent = post_with(lasso.addr(), "/rpc/ethereum", &dapp, &send(legacy));
    assert_eq!(sent.status, 200, "{}", sent.describe());
    // Alice (no rules) may use base.
    let r = post_with(lasso.addr(), "/rpc/base", &[("X-Lasso-Key", ALICE)], CALL);
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn websocket_handshakes_without_a_valid_key_get_401() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let lasso = start(&p1, &p2);
    for path in [
        "/ws/rpc/ethereum",
        "/ws/rpc/ethereum?key=not-a-key-at-all-000000",
    ] {
        let refused = WsClient::connect(lasso.addr(), path)
            .err()
            .expect("refused");
        assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
        assert!(refused.contains("-32014"), "{path}: {refused}");
    }
    // Bob's key is not for base: 403 on the handshake.
    let refused = WsClient::connect(lasso.addr(), &format!("/ws/rpc/base?key={BOB}"))
        .err()
        .expect("refused");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // The key in the query opens a session that answers.
    let mut ws = WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={ALICE}"))
        .expect("upgraded");
    let mut notes = Vec::new();
    let reply = ws.call(1, "eth_blockNumber", serde_json::json!([]), &mut notes);
    assert!(reply.get("result").is_some(), "{reply}");
    // Each message is held to the key's method rules.
    let mut bob =
        WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={BOB}")).expect("bob");
    let before = p1.received();
    let denied = bob.call(5, "eth_getLogs", serde_json::json!([{}]), &mut notes);
    assert_eq!(denied["error"]["code"], -32015, "{denied}");
    assert_eq!(denied["id"], 5, "{denied}");
    assert_eq!(
        p1.received(),
        before,
        "a refused message reaches no provider"
    );
    let reply = bob.call(6, "eth_blockNumber", serde_json::json!([]), &mut notes);
    assert!(reply.get("result").is_some(), "{reply}");
    // The key as a header on the handshake.
    let mut c = Conn::connect(lasso.addr());
    c.send(&request_bytes(
        "GET",
        "/ws/rpc/ethereum",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("X-Lasso-Key", ALICE),
        ],
        b"",
    ));
    let r = c.read_response();
    assert_eq!(r.status, 101, "{}", r.describe());
}

const ADMIN: &str = "admin-token-for-access-tests";

fn admin(lasso: &Lasso, method: &str, path: &str, body: &str) -> Response {
    let auth = format!("Bearer {ADMIN}");
    request(
        lasso.addr(),
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

/// Until `ws` is closed by the server (answering pings meanwhile): the close code and reason.
fn closed_by_server(
    ws: &mut WsClient,
    within: std::time::Duration,
) -> Result<(u16, String), String> {
    match ws.recv(within) {
        Some(support::ws::WsMessage::Close(code, reason)) => Ok((code, reason)),
        other => Err(format!("still open: {other:?}")),
    }
}

#[test]
fn keys_are_added_rotated_and_revoked_through_the_admin_api_without_dropping_others() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    let backups = tempfile::tempdir().unwrap();
    let yaml = format!("{}websocket:\n  ping_interval_ms: 100\n", config(&p1, &p2));
    let lasso = Lasso::builder(&yaml)
        .workers(1)
        .env("RPC_ALICE_KEY", ALICE)
        .env("LASSO_ADMIN_TOKEN", ADMIN)
        .env("LASSO_BACKUP_DIR", backups.path().to_str().unwrap())
        .start();
    let carol_1 = "carol-first-key-000000000";
    let carol_2 = "carol-second-key-00000000";
    let as_carol =
        |key: &str| post_with(lasso.addr(), "/rpc/ethereum", &[("X-Lasso-Key", key)], CALL);
    assert_eq!(as_carol(carol_1).status, 401, "carol has no key yet");

    // Alice's session stays open through every change below, and her HTTP requests keep succeeding.
    let mut alice =
        WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={ALICE}")).expect("alice");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addr, stop) = (lasso.addr(), stop.clone());
        std::thread::spawn(move || {
            let (mut sent, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = post_with(addr, "/rpc/ethereum", &[("X-Lasso-Key", ALICE)], CALL);
                sent += 1;
                if r.status != 200 || r.json().get("result").is_none() {
                    failed.push(r.describe());
                }
            }
            (sent, failed)
        })
    };

    let r = admin(
        &lasso,
        "PUT",
        "/api/admin/keys/carol",
        &format!(r#"{{"key":"{carol_1}","chains":["ethereum"]}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(as_carol(carol_1).status, 200, "an added key works at once");
    let listed = admin(&lasso, "GET", "/api/admin/keys", "");
    assert_eq!(listed.status, 200, "{}", listed.describe());
    assert!(listed.text().contains("\"carol\""), "{}", listed.text());
    let file = std::fs::read_to_string(lasso.config_path()).unwrap();
    assert!(
        !file.contains(carol_1),
        "only the key's hash is written to the file"
    );
    assert!(
        !listed.text().contains(carol_1) && !listed.text().contains("sha256"),
        "{}",
        listed.text()
    );

    // Rotation: the new key works, the old one does not, and carol's open session on the old key is closed.
    let mut carol_ws =
        WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={carol_1}")).expect("carol");
    let r = admin(
        &lasso,
        "PUT",
        "/api/admin/keys/carol",
        &format!(r#"{{"key":"{carol_2}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        as_carol(carol_1).status,
        401,
        "the rotated-out key is refused"
    );
    assert_eq!(as_carol(carol_2).status, 200, "the new key works");
    let (code, reason) =
        closed_by_server(&mut carol_ws, 5 * SEC).expect("carol's old session closed");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");

    // Revocation closes the key's sessions.
    let mut carol_ws =
        WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={carol_2}")).expect("carol");
    let r = admin(&lasso, "DELETE", "/api/admin/keys/carol", "");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(as_carol(carol_2).status, 401, "a revoked key is refused");
    let (code, _) = closed_by_server(&mut carol_ws, 5 * SEC).expect("carol's session closed");
    assert_eq!(code, 1008);
    assert_eq!(
        admin(&lasso, "DELETE", "/api/admin/keys/carol", "").status,
        400,
        "no such key"
    );
    assert_eq!(
        admin(&lasso, "PUT", "/api/admin/keys/dave", r#"{"key":"short"}"#).status,
        400
    );

    // Alice was never dropped: her session still answers, and none of her requests failed.
    let mut notes = Vec::new();
    let reply = alice.call(9, "eth_blockNumber", serde_json::json!([]), &mut notes);
    assert!(reply.get("result").is_some(), "{reply}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.join().unwrap();
    assert!(sent > 10, "load ran during the changes: {sent}");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests of another key failed: {:?}",
        failed.len(),
        failed.first()
    );
}

const LIM1: &str = "limited-key-one-000000000";
const LIM2: &str = "limited-key-two-000000000";

fn limited(p1: &MockProvider, extra: &str) -> Lasso {
    p1.set_chain_id("0x1");
    let yaml = single_chain(&[p1]).yaml();
    let yaml = format!(
        "{yaml}\naccess:\n  require_key: false\n{extra}  keys:\n    \
         - {{ id: lim1, key: \"{LIM1}\", limit: {{ requests_per_s: 5, burst_s: 1 }} }}\n    \
         - {{ id: lim2, key: \"{LIM2}\", limit: {{ requests_per_s: 5, burst_s: 1 }} }}\n"
    );
    Lasso::builder(&yaml).workers(1).start()
}

fn batch(n: usize) -> String {
    let calls: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_blockNumber","params":[]}}"#))
        .collect();
    format!("[{}]", calls.join(","))
}

/// Asserts the shape of a rate-limit refusal.
fn assert_limited(r: &Response) {
    assert_eq!(r.status, 429, "{}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32005), "{}", r.describe());
    let ms = r.json()["error"]["data"]["retry_after_ms"]
        .as_u64()
        .expect("data.retry_after_ms");
    assert!((1..=1000).contains(&ms), "{ms}");
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert_eq!(secs, 1, "{secs}");
}

#[test]
fn a_key_over_its_limit_gets_429_and_recovers_without_limiting_another_key() {
    let p1 = MockProvider::start("p1");
    let lasso = limited(&p1, "");
    let as_key = |key: &str, body: &str| {
        post_with(lasso.addr(), "/rpc/ethereum", &[("X-Lasso-Key", key)], body)
    };
    // The burst (5) passes, then the key is refused, without an upstream call.
    let mut refused = None;
    for i in 0..20 {
        let r = as_key(LIM1, CALL);
        if r.status == 429 {
            refused = Some((i, r));
            break;
        }
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let (i, r) = refused.expect("refused past the burst");
    assert!(i >= 5, "the burst of 5 passes first, refused at {i}");
    assert_limited(&r);
    let before = p1.received();
    assert_eq!(as_key(LIM1, CALL).status, 429);
    assert_eq!(
        p1.received(),
        before,
        "a refused request reaches no provider"
    );
    // Another key is not limited by lim1's state.
    let r = as_key(LIM2, CALL);
    assert_eq!(r.status, 200, "{}", r.describe());
    // Over WebSocket, the same key's bucket applies to each message.
    let mut ws =
        WsClient::connect(lasso.addr(), &format!("/ws/rpc/ethereum?key={LIM1}")).expect("upgraded");
    let mut notes = Vec::new();
    let reply = ws.call(1, "eth_blockNumber", serde_json::json!([]), &mut notes);
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert!(
        reply["error"]["data"]["retry_after_ms"].as_u64().is_some(),
        "{reply}"
    );
    // After the window, lim1 is served again.
    eventually(3 * SEC, "lim1 recovers", || {
        let r = as_key(LIM1, CALL);
        (r.status == 200).then_some(()).ok_or(r.describe())
    });
}

#[test]
fn a_batch_counts_each_member() {
    let p1 = MockProvider::start("p1");
    let lasso = limited(&p1, "");
    let as_key = |body: &str| {
        post_with(
            lasso.addr(),
            "/rpc/ethereum",
            &[("X-Lasso-Key", LIM2)],
            body,
        )
    };
    let r = as_key(&batch(4));
    assert_eq!(r.status, 200, "{}", r.describe());
    // One token (and a little refill) is left: a second batch of 4 is refused, a single call passes.
    assert_limited(&as_key(&batch(4)));
    assert_eq!(as_key(CALL).status, 200);
}

#[test]
fn per_address_limits_trust_forwarding_headers_only_from_configured_proxies() {
    let p1 = MockProvider::start("p1");
    let trusted = limited(
        &p1,
        "  per_ip: { requests_per_s: 3, burst_s: 1 }\n  trusted_proxies: [\"127.0.0.1\"]\n",
    );
    let from = |lasso: &Lasso, header: (&str, &str)| {
        post_with(lasso.addr(), "/rpc/ethereum", &[header], CALL)
    };
    for _ in 0..3 {
        assert_eq!(from(&trusted, ("Fly-Client-IP", "10.0.0.1")).status, 200);
    }
    assert_limited(&from(&trusted, ("Fly-Client-IP", "10.0.0.1")));
    assert_eq!(
        from(&trusted, ("X-Forwarded-For", "10.0.0.1, 10.0.0.2")).status,
        200,
        "another client behind the proxy"
    );
    assert_eq!(
        from(&trusted, ("Fly-Client-IP", "10.0.0.3")).status,
        200,
        "another client behind the proxy"
    );

    let untrusted = limited(&p1, "  per_ip: { requests_per_s: 3, burst_s: 1 }\n");
    for _ in 0..3 {
        assert_eq!(from(&untrusted, ("Fly-Client-IP", "10.0.0.1")).status, 200);
    }
    let r = from(&untrusted, ("Fly-Client-IP", "10.0.0.9"));
    assert_limited(&r);
}

/// The `requests` and `compute_units` of one row of `/api/admin/usage`.
fn usage_of(lasso: &Lasso, query: &str, method: &str) -> (u64, f64) {
    let r = admin(lasso, "GET", &format!("/api/admin/usage?{query}"), "");
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["method"] == method)
        .map(|row| {
            (
                row["requests"].as_u64().unwrap(),
                row["compute_units"].as_f64().unwrap(),
            )
        })
        .unwrap_or((0, 0.0))
}

#[test]
fn usage_is_metered_per_key_chain_and_method_and_survives_a_restart() {
    let p1 = MockProvider::start("p1");
    let backups = tempfile::tempdir().unwrap();
    let yaml = {
        p1.set_chain_id("0x1");
        format!(
            "{}\naccess:\n  keys:\n    - {{ id: meter, key: \"{LIM1}\" }}\n    - {{ id: other, key: \"{LIM2}\" }}\n",
            single_chain(&[&p1]).yaml()
        )
    };
    let start = || {
        Lasso::builder(&yaml)
            .workers(2)
            .env("LASSO_ADMIN_TOKEN", ADMIN)
            .env("LASSO_BACKUP_DIR", backups.path().to_str().unwrap())
            .start()
    };
    let mut lasso = start();
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x0000000000000000000000000000000000000001","data":"0x"},"latest"]}"#;
    for _ in 0..7 {
        assert_eq!(
            post_with(
                lasso.addr(),
                "/rpc/ethereum",
                &[("X-Lasso-Key", LIM1)],
                CALL
            )
            .status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            post_with(
                lasso.addr(),
                "/rpc/ethereum",
                &[("X-Lasso-Key", LIM1)],
                call
            )
            .status,
            200
        );
    }
    let r = post_with(
        lasso.addr(),
        "/rpc/ethereum",
        &[("X-Lasso-Key", LIM1)],
        &batch(5),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        post_with(
            lasso.addr(),
            "/rpc/ethereum",
            &[("X-Lasso-Key", LIM2)],
            CALL
        )
        .status,
        200
    );
    // Counts reach /api/admin/usage and /metrics (labels are key ids, never keys).
    eventually(10 * SEC, "usage counted", || {
        let got = (
            usage_of(&lasso, "key=meter", "eth_blockNumber").0,
            usage_of(&lasso, "key=meter", "eth_call").0,
        );
        (got == (12, 3)).then_some(()).ok_or(format!("{got:?}"))
    });
    let (_, units) = usage_of(&lasso, "key=meter", "eth_call");
    let per_call = units / 3.0;
    assert!(
        per_call > 1.5 * call.len() as f64,
        "eth_call weighs 1.5 times its bytes in and out: {per_call}"
    );
    assert_eq!(
        usage_of(&lasso, "key=other", "eth_call").0,
        0,
        "filtered by key"
    );
    assert_eq!(usage_of(&lasso, "key=other", "eth_blockNumber").0, 1);
    assert_eq!(
        usage_of(&lasso, "key=meter&to=1", "eth_blockNumber").0,
        0,
        "filtered by time"
    );
    let metrics = get(lasso.addr(), "/metrics").text();
    assert!(
        metrics.contains(r#"lasso_access_requests_total{key="meter",chain="ethereum",method="eth_blockNumber"} 12"#),
        "{}",
        metrics.lines().filter(|l| l.contains("lasso_access")).collect::<Vec<_>>().join("\n")
    );
    assert!(!metrics.contains(LIM1), "keys never reach /metrics");
    // Once written (every 2 s), a restart keeps the counts.
    let file = backups.path().join("usage.tsv");
    eventually(10 * SEC, "usage written", || {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let sum: u64 = text
            .lines()
            .filter(|l| l.contains("\tmeter\t") && l.contains("eth_blockNumber"))
            .map(|l| l.split('\t').nth(4).unwrap().parse::<u64>().unwrap())
            .sum();
        (sum == 12).then_some(()).ok_or(format!("{sum}"))
    });
    assert!(!std::fs::read_to_string(&file).unwrap().contains(LIM1));
    lasso.send_signal(15);
    lasso.wait_exit(10 * SEC);
    drop(lasso);
    let lasso = start();
    assert_eq!(
        usage_of(&lasso, "key=meter", "eth_blockNumber").0,
        12,
        "usage survives a restart"
    );
    let metrics = get(lasso.addr(), "/metrics").text();
    assert!(metrics.contains(
        r#"lasso_access_requests_total{key="meter",chain="ethereum",method="eth_call"} 3"#
    ));
}

/// Lasso with `workers` workers in front of `p1` and one key, `LIM1`, limited to `per_s` requests per second with a
/// burst of one second.
fn one_limited_key(p1: &MockProvider, per_s: u32, workers: usize) -> Lasso {
    p1.set_chain_id("0x1");
    let yaml = format!(
        "{}\naccess:\n  keys:\n    - {{ id: one, key: \"{LIM1}\", limit: {{ requests_per_s: {per_s}, burst_s: 1 }} }}\n",
        single_chain(&[p1]).yaml()
    );
    Lasso::builder(&yaml).workers(workers).start()
}

/// One call with key `LIM1` on the keep-alive connection `c`.
fn as_limited_key(c: &mut Conn) -> Response {
    c.send(&request_bytes(
        "POST",
        "/rpc/ethereum",
        &[("Content-Type", "application/json"), ("X-Lasso-Key", LIM1)],
        CALL.as_bytes(),
    ));
    c.read_response()
}

#[test]
fn a_client_on_one_core_gets_its_whole_budget_after_rebalancing() {
    let p1 = MockProvider::start("p1");
    let lasso = one_limited_key(&p1, 20, 2);
    // One keep-alive connection: one core. It starts with half of the budget (a burst of 10, not 20).
    let mut c = Conn::connect(lasso.addr());
    let mut send = || as_limited_key(&mut c).status;
    let mut first_burst = 0;
    while send() == 200 {
        first_burst += 1;
    }
    assert!(
        (9..=12).contains(&first_burst),
        "an equal share's burst: {first_burst}"
    );
    // Served over 2.5 s: about 10/s before the first rebalancing (after 1 s), 20/s after.
    let (start, mut served) = (std::time::Instant::now(), 0);
    while start.elapsed() < std::time::Duration::from_millis(2500) {
        if send() == 200 {
            served += 1;
        }
    }
    assert!(
        served >= 36,
        "the core took the whole budget after rebalancing: {served} in 2.5 s"
    );
    assert!(
        served <= 56,
        "never more than the budget: {served} in 2.5 s"
    );
}

#[test]
fn a_key_limited_to_50_per_second_gets_429_past_it_and_recovers() {
    let p1 = MockProvider::start("p1");
    let lasso = one_limited_key(&p1, 50, 1);
    let mut c = Conn::connect(lasso.addr());
    let mut send = || as_limited_key(&mut c);
    // As fast as one connection goes, for at least 2 s and 20 refusals: the burst (50) and then 50 per second pass,
    // the rest get 429.
    let (start, mut served, mut refused) = (std::time::Instant::now(), 0u64, 0u64);
    let before = p1.received();
    while start.elapsed() < std::time::Duration::from_secs(2) || refused < 20 {
        assert!(
            start.elapsed() < 30 * SEC,
            "no 20 refusals in 30 s: {served} served"
        );
        let r = send();
        match r.status {
            200 => served += 1,
            429 => {
                assert_limited(&r);
                refused += 1;
            }
            _ => panic!("{}", r.describe()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let most = 50.0 + 50.0 * secs + 2.0;
    assert!(
        served as f64 <= most,
        "never more than the burst and 50/s: {served} served in {secs:.2} s (at most {most:.0})"
    );
    let least = 50.0 + 25.0 * secs;
    assert!(
        served as f64 >= least,
        "the burst and the refill are served: {served} in {secs:.2} s, {refused} refused (at least {least:.0})"
    );
    assert_eq!(
        p1.received() - before,
        served as usize,
        "only the served requests reach the provider"
    );
    // After the window the key is served again.
    eventually(3 * SEC, "the key recovers", || {
        let r = send();
        (r.status == 200).then_some(()).ok_or(r.describe())
    });
}
