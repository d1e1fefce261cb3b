//! Upstream failure handling: failover for reads, no retries for writes, stale pooled connections,
//! big/compressed/chunked upstream bodies, secret redaction, graceful drain (docs/CONTRACT.md).

mod support;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const PATH: &str = "/rpc/ethereum";

/// `n` echo providers p1..pn (priority order) behind a Lasso with the `priority` strategy and
/// short upstream timeouts.
fn setup(n: usize) -> (Vec<MockProvider>, Lasso) {
    let mocks: Vec<MockProvider> = (1..=n)
        .map(|i| MockProvider::start(&format!("p{i}")))
        .collect();
    // No provider knows any transaction: a send whose answer was lost is then reported as failed.
    for m in &mocks {
        m.set_result("eth_getTransactionByHash", Value::Null);
    }
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let cfg = single_chain(&refs)
        .upstream("connect_timeout_ms", 500)
        .upstream("request_timeout_ms", 300)
        .upstream("max_attempts", 3);
    let lasso = Lasso::start(&cfg.yaml());
    (mocks, lasso)
}

fn read_call(i: u64) -> (String, Value) {
    let params = json!([format!("0x{i:040x}"), "latest"]);
    (rpc(json!(i), "eth_getBalance", params.clone()), params)
}

/// Sends `n` reads one after another (keep-alive, reconnecting when Lasso closes) and returns the
/// failures plus who served each success.
fn read_stream(addr: SocketAddr, n: u64, forbidden: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut served = Vec::new();
    let mut conn: Option<Conn> = None;
    for i in 0..n {
        let (body, params) = read_call(i);
        let c = conn.get_or_insert_with(|| Conn::connect(addr));
        let r = match c.try_post(PATH, &body) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("request {i}: transport error {e}"));
                conn = None;
                continue;
            }
        };
        if r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            conn = None;
        }
        let v = r.try_json().unwrap_or(Value::Null);
        let who = served_by(&v).unwrap_or_default();
        if r.status != 200 || v["id"] != json!(i) || v["result"]["params"] != params {
            errors.push(format!("request {i}: {}", r.describe()));
        } else if forbidden.contains(&who.as_str()) {
            errors.push(format!("request {i}: served by faulty provider {who}"));
        } else {
            served.push(who);
        }
    }
    (errors, served)
}

fn reads_survive(fault: Fault) {
    let (mocks, lasso) = setup(3);
    // Warm up pooled connections to every provider first.
    let (errors, _) = read_stream(lasso.addr(), 5, &[]);
    assert!(errors.is_empty(), "before the fault: {errors:#?}");
    mocks[0].set_fault(fault.clone());
    let tried_before = mocks[0].count("eth_getBalance");
    let start = Instant::now();
    let (errors, served) = read_stream(lasso.addr(), 50, &["p1"]);
    let took = start.elapsed();
    if fault != Fault::Refuse {
        assert!(
            mocks[0].count("eth_getBalance") > tried_before,
            "p1 was never tried while faulty ({fault:?}): the fault path was not exercised"
        );
    }
    let tally: BTreeSet<String> = served.iter().cloned().collect();
    assert!(
        errors.is_empty(),
        "fault {fault:?} on p1: {} of 50 reads failed (served by {tally:?}, took {took:?}):\n{}\n--- lasso logs (tail) ---\n{}",
        errors.len(),
        errors.join("\n"),
        support::lasso::tail(&lasso.logs(), 40)
    );
    eprintln!("fault {fault:?}: 50 reads ok in {took:?}, served by {tally:?}");
}

#[test]
fn reads_fail_over_on_refused_connections() {
    reads_survive(Fault::Refuse);
}

#[test]
fn reads_fail_over_on_http_500() {
    reads_survive(Fault::Status(500));
}

#[test]
fn reads_fail_over_on_http_503() {
    reads_survive(Fault::Status(503));
}

#[test]
fn reads_fail_over_on_rate_limit() {
    reads_survive(Fault::RateLimited { retry_after_s: 30 });
}

#[test]
fn reads_fail_over_on_hang() {
    reads_survive(Fault::Hang);
}

#[test]
fn reads_fail_over_on_garbage() {
    reads_survive(Fault::Garbage);
}

#[test]
fn reads_fail_over_on_reset_mid_response() {
    reads_survive(Fault::ResetMidResponse);
}

#[test]
fn reads_survive_provider_closing_after_each_response() {
    let (mocks, lasso) = setup(3);
    mocks[0].set_fault(Fault::CloseAfterResponse);
    let (errors, _) = read_stream(lasso.addr(), 50, &[]);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

const RAW_TX: &str = "0x02f871870c72dd9d5e883e808201f48401a2158b825208947dcd17433742f4c0ca53122ab541d0ba67fc27df8203e880c001a0974376cf8de695763aa07d3e9539e0e2fe26011dc50a3b4a4a0a409d2228d513a03cf3ceb921d3286bf1942c044ba3a8dcefb4ff276486d67de8b1d306e9179b09";

#[test]
fn writes_are_not_retried_once_sent() {
    let mut failures = Vec::new();
    let cases = [
        (
            "eth_sendRawTransaction",
            json!([RAW_TX]),
            Fault::Status(500),
        ),
        ("eth_sendRawTransaction", json!([RAW_TX]), Fault::Hang),
        (
            "eth_sendRawTransaction",
            json!([RAW_TX]),
            Fault::ResetMidResponse,
        ),
        ("eth_sendRawTransaction", json!([RAW_TX]), Fault::Garbage),
        (
            "eth_sendRawTransactionConditional",
            json!([RAW_TX, {}]),
            Fault::Status(500),
        ),
        ("mev_sendBundle", json!([{"txs": [RAW_TX]}]), Fault::Hang),
        (
            "eth_submitWork",
            json!(["0x1", "0x2", "0x3"]),
            Fault::Status(500),
        ),
    ];
    for (method, params, fault) in cases {
        let (mocks, lasso) = setup(3);
        mocks[0].set_fault(fault.clone());
        let r = post(lasso.addr(), PATH, &rpc(json!(1), method, params));
        let counts: Vec<usize> = mocks.iter().map(|m| m.count(method)).collect();
        let v = r.try_json().unwrap_or(Value::Null);
        let what = format!("{method} with p1 {fault:?}");
        if counts != [1, 0, 0] {
            failures.push(format!(
                "{what}: provider counts {counts:?}, want [1, 0, 0]; answer {}",
                r.describe()
            ));
        }
        if r.status == 200 && v.get("result").is_some() {
            failures.push(format!(
                "{what}: reported success although p1 failed: {}",
                r.describe()
            ));
        }
        if v.get("error").is_none() && !v.is_array() {
            failures.push(format!(
                "{what}: no JSON-RPC error in the answer: {}",
                r.describe()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn write_to_refusing_provider_reaches_at_most_one_provider() {
    let (mocks, lasso) = setup(3);
    mocks[0].set_fault(Fault::Refuse);
    let r = post(
        lasso.addr(),
        PATH,
        &rpc(json!(1), "eth_sendRawTransaction", json!([RAW_TX])),
    );
    let counts: Vec<usize> = mocks
        .iter()
        .map(|m| m.count("eth_sendRawTransaction"))
        .collect();
    assert_eq!(counts[0], 0);
    assert!(
        counts[1] + counts[2] <= 1,
        "sent to several providers: {counts:?}"
    );
    let v = r.json();
    if counts[1] == 1 {
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(served_by(&v).as_deref(), Some("p2"), "{}", r.describe());
    } else {
        assert!(v.get("error").is_some(), "{}", r.describe());
    }
}

fn stale_pool(n_providers: usize) {
    let (mocks, lasso) = setup(n_providers);
    let addr = lasso.addr();
    // Several concurrent clients so each worker pools several connections per provider.
    let warm: Vec<_> = (0..4u64)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                (0..10u64)
                    .filter_map(|i| {
                        let (body, _) = read_call(t * 100 + i);
                        let r = c.post(PATH, &body);
                        (r.status != 200).then(|| r.describe())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let warm_errors: Vec<String> = warm.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(warm_errors.is_empty(), "warm-up: {warm_errors:#?}");
    assert!(
        mocks[0].open_connections() > 0,
        "Lasso keeps no pooled connection to p1 (nothing to go stale)"
    );
    for m in &mocks {
        m.restart();
    }
    assert_eq!(mocks[0].open_connections(), 0);
    // Fresh client connections spread over the workers; each worker meets its stale pool.
    let mut errors = Vec::new();
    for i in 0..30u64 {
        let (body, params) = read_call(1000 + i);
        let r = post(addr, PATH, &body);
        let v = r.try_json().unwrap_or(Value::Null);
        if r.status != 200 || v["result"]["params"] != params {
            errors.push(format!("request {i} after restart: {}", r.describe()));
        }
    }
    assert!(
        errors.is_empty(),
        "{} of 30 requests failed after the provider restarted:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn stale_pooled_connections_after_provider_restart() {
    stale_pool(2);
}

#[test]
fn stale_pooled_connections_after_restart_of_only_provider() {
    stale_pool(1);
}

#[test]
fn big_responses_pass_through_intact() {
    const SIZE: usize = 5 * 1024 * 1024;
    let mock = MockProvider::start("p1").with_big_result(SIZE);
    let lasso = Lasso::start(&single_chain(&[&mock]).yaml());
    let want = big_result(SIZE);
    for (chunked, gzip) in [(false, false), (true, false), (false, true), (true, true)] {
        mock.set_chunked(chunked);
        mock.set_gzip(gzip);
        let r = post(
            lasso.addr(),
            PATH,
            &rpc(json!("big"), "eth_getLogs", json!([{"fromBlock":"0x0"}])),
        );
        assert_eq!(
            r.status,
            200,
            "chunked={chunked} gzip={gzip}: HTTP {} {}",
            r.status,
            support::http::truncate(&r.text(), 300)
        );
        let v = r.json();
        assert_eq!(v["id"], json!("big"));
        let got = v["result"]
            .as_str()
            .unwrap_or_else(|| panic!("no string result (chunked={chunked} gzip={gzip})"));
        assert_eq!(
            got.len(),
            SIZE,
            "chunked={chunked} gzip={gzip}: result length"
        );
        assert!(
            got == want,
            "chunked={chunked} gzip={gzip}: result content differs"
        );
    }
}

#[test]
fn big_request_passes_through_intact() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::start(&single_chain(&[&mock]).yaml());
    let data = format!("0x{}", "5a".repeat(1024 * 1024));
    let params = json!([{"to":"0x0000000000000000000000000000000000000001","data":data}, "latest"]);
    let r = post(
        lasso.addr(),
        PATH,
        &rpc(json!(1), "eth_call", params.clone()),
    );
    assert_eq!(r.status, 200, "HTTP {}", r.status);
    assert_eq!(r.json()["result"]["params"], params);
}

#[test]
fn gzip_and_chunked_upstream_responses() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::start(&single_chain(&[&mock]).yaml());
    for (chunked, gzip) in [(true, false), (false, true), (true, true), (false, false)] {
        mock.set_chunked(chunked);
        mock.set_gzip(gzip);
        let (body, params) = read_call(7);
        let r = post(lasso.addr(), PATH, &body);
        assert_eq!(
            r.status,
            200,
            "chunked={chunked} gzip={gzip}: {}",
            r.describe()
        );
        assert_eq!(
            r.json(),
            json!({"jsonrpc":"2.0","id":7,"result":{"provider":"p1","method":"eth_getBalance","params":params}}),
            "chunked={chunked} gzip={gzip}"
        );
        // batch too
        let batch = json!([{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":2,"method":"eth_gasPrice"}]);
        let r = post(lasso.addr(), PATH, &batch.to_string());
        assert_eq!(
            r.status,
            200,
            "batch chunked={chunked} gzip={gzip}: {}",
            r.describe()
        );
        let v = r.json();
        assert_eq!(v[0]["id"], json!(1), "{}", r.describe());
        assert_eq!(v[1]["id"], json!(2), "{}", r.describe());
        assert_eq!(
            v[1]["result"]["method"],
            json!("eth_gasPrice"),
            "{}",
            r.describe()
        );
    }
}

#[test]
fn all_providers_failing_gives_502_with_attempts() {
    let (mocks, lasso) = setup(3);
    mocks[0].set_fault(Fault::Status(500));
    mocks[1].set_fault(Fault::Garbage);
    mocks[2].set_fault(Fault::Refuse);
    let r = post(
        lasso.addr(),
        PATH,
        &rpc(json!(11), "eth_getBalance", json!(["0x1", "latest"])),
    );
    assert_eq!(r.status, 502, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["id"], json!(11), "{}", r.describe());
    assert_eq!(error_code(&v), Some(-32010), "{}", r.describe());
    let attempts = v["error"]["data"]["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no error.data.attempts array: {}", r.describe()));
    let named: BTreeSet<String> = attempts
        .iter()
        .map(|a| {
            assert!(
                a["error"].is_string(),
                "attempt without an error string: {a}"
            );
            a["provider"]
                .as_str()
                .unwrap_or_else(|| panic!("attempt without provider: {a}"))
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> = ["p1", "p2", "p3"].iter().map(|s| s.to_string()).collect();
    assert_eq!(named, want, "attempts: {}", v["error"]["data"]);
}

/// Needs a per-request deadline shorter than max_attempts x request_timeout_ms; the knob is
/// `routing.deadlines_ms.<class>` in src/config/load.rs (not yet in docs/CONTRACT.md).
#[test]
fn all_providers_hanging_gives_504() {
    let mocks: Vec<MockProvider> = (1..=3)
        .map(|i| MockProvider::start(&format!("p{i}")))
        .collect();
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let cfg = single_chain(&refs)
        .upstream("request_timeout_ms", 300)
        .upstream("max_attempts", 3)
        .routing(
            "deadlines_ms",
            "{ light: 500, call: 500, logs: 500, block: 500, trace: 500, write: 500, other: 500 }",
        );
    let lasso = Lasso::start(&cfg.yaml());
    for m in &mocks {
        m.set_fault(Fault::Hang);
    }
    let start = Instant::now();
    let r = post(
        lasso.addr(),
        PATH,
        &rpc(json!(12), "eth_getBalance", json!(["0x1", "latest"])),
    );
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["id"], json!(12), "{}", r.describe());
    assert_eq!(error_code(&v), Some(-32012), "{}", r.describe());
    assert!(
        took < Duration::from_secs(5),
        "3 attempts x request_timeout_ms=300 took {took:?}"
    );
    assert_eq!(mocks[0].count("eth_getBalance"), 1, "p1 was not tried once");
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}{}x{nanos}", std::process::id())
}

#[test]
fn secrets_never_leak() {
    let secret = unique("S3cr3tPathKey");
    let api_key = unique("ApiKeyZz");
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    p1.set_chain_id("0x1");
    p2.set_chain_id("0x1");
    let chain = Chain::new("ethereum", 1)
        .strategy("priority")
        .provider(
            Provider::new(
                "p1",
                &format!("{}/v3/${{RPC_SECRET_KEY}}?token={{api_key}}", p1.url()),
            )
            .priority(1)
            .api_key(&api_key)
            .header("X-Api-Key", "{api_key}")
            .header("Authorization", "Bearer ${RPC_SECRET_KEY}"),
        )
        .provider(
            Provider::new("p2", &format!("{}/rpc/${{RPC_SECRET_KEY}}", p2.url())).priority(2),
        );
    let cfg = Config::new()
        .upstream("request_timeout_ms", 500)
        .chain(chain);
    let lasso = Lasso::builder(&cfg.yaml())
        .env("RPC_SECRET_KEY", &secret)
        .rust_log("debug")
        .start();
    let addr = lasso.addr();

    // Expansion works (otherwise the rest proves nothing).
    let r = post(
        addr,
        PATH,
        &rpc(json!(1), "eth_getBalance", json!(["0x1", "latest"])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(served_by(&r.json()).as_deref(), Some("p1"));
    let rec = p1
        .recorded()
        .into_iter()
        .find(|r| r.path.starts_with("/v3/"))
        .expect("p1 request");
    assert_eq!(rec.path, format!("/v3/{secret}?token={api_key}"));
    assert_eq!(rec.header("x-api-key"), Some(api_key.as_str()));
    assert_eq!(
        rec.header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );

    // Failures with error details.
    p1.set_fault(Fault::Status(500));
    p2.set_fault(Fault::Refuse);
    let mut bodies = Vec::new();
    let r = post(
        addr,
        PATH,
        &rpc(json!(2), "eth_getBalance", json!(["0x2", "latest"])),
    );
    assert_eq!(r.status, 502, "{}", r.describe());
    bodies.push(("502 body", r.text()));
    let r = post(
        addr,
        PATH,
        &rpc(json!(3), "eth_sendRawTransaction", json!([RAW_TX])),
    );
    bodies.push(("sendRawTransaction error", r.text()));
    p1.set_fault(Fault::Hang);
    let r = post(
        addr,
        PATH,
        &rpc(json!(4), "eth_getBalance", json!(["0x3", "latest"])),
    );
    bodies.push(("timeout error", r.text()));
    let status = get(addr, "/api/status");
    assert_eq!(status.status, 200, "{}", status.describe());
    assert!(
        status.text().contains("***"),
        "/api/status shows no redaction marker: {}",
        status.text()
    );
    bodies.push(("/api/status", status.text()));
    bodies.push(("/api/chains", get(addr, "/api/chains").text()));
    bodies.push(("/api/health", get(addr, "/api/health").text()));
    p1.set_fault(Fault::None);
    drop(p2);
    bodies.push(("logs", lasso.logs()));

    let mut leaks = Vec::new();
    for (what, text) in &bodies {
        for (name, s) in [("SECRET_KEY", &secret), ("api_key", &api_key)] {
            if text.contains(s.as_str()) {
                let i = text.find(s.as_str()).unwrap();
                let from = i.saturating_sub(120);
                leaks.push(format!(
                    "{name} appears in {what}: ...{}...",
                    &text[from..(i + s.len() + 40).min(text.len())]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[test]
fn graceful_drain_on_sigint() {
    let p1 = MockProvider::start("p1");
    p1.set_fault(Fault::Delay(1500));
    let mut lasso = Lasso::start(&single_chain(&[&p1]).yaml());
    let addr = lasso.addr();
    // Two idle keep-alive connections opened before the signal (warmed up with a local call).
    let mut idle: Vec<Conn> = (0..2)
        .map(|i| {
            let mut c = Conn::connect(addr);
            let r = c.post(PATH, &rpc(json!(i), "eth_chainId", json!([])));
            assert_eq!(r.status, 200, "{}", r.describe());
            c
        })
        .collect();
    let (body, params) = read_call(77);
    let inflight = thread::spawn(move || post(addr, PATH, &body));
    assert!(
        p1.wait_for_count("eth_getBalance", 1, Duration::from_secs(5)),
        "request never reached the provider"
    );
    let signalled = Instant::now();
    lasso.send_signal(libc::SIGINT);

    // New connections are refused once Lasso stops accepting (no event to wait on: poll, bounded).
    eventually(
        Duration::from_millis(1000),
        "new connections refused after SIGINT",
        || match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(e.to_string()),
            Ok(_) => Err("connect accepted".into()),
        },
    );
    let refused = true;
    let refused_after = signalled.elapsed();

    // Draining: a new request on an idle keep-alive connection gets 503 -32013 (or the connection
    // was closed); it is not served.
    let mut drain_answers = Vec::new();
    if refused {
        let r = idle[0].try_post(PATH, &read_call(78).0);
        let h = idle[1]
            .try_send(&request_bytes("GET", "/api/health", &[], b""))
            .and_then(|_| idle[1].try_read_response());
        drain_answers.push(match &r {
            Ok(r) if r.status == 503 && r.rpc_code() == Some(-32013) => None,
            Ok(r) => Some(format!(
                "request on an idle connection while draining: {}",
                r.describe()
            )),
            Err(_) => None, // closed
        });
        drain_answers.push(match &h {
            Ok(h) if h.status == 503 && h.try_json().is_some_and(|v| v["status"] == "draining") => {
                None
            }
            Ok(h) => Some(format!("GET /api/health while draining: {}", h.describe())),
            Err(_) => None, // closed
        });
        eprintln!(
            "while draining: rpc on idle conn -> {:?}; health -> {:?}",
            r.map(|r| r.status),
            h.map(|h| (h.status, h.text()))
        );
    }

    let r = inflight.join().unwrap();
    assert_eq!(
        r.status,
        200,
        "in-flight request during drain: {}",
        r.describe()
    );
    assert_eq!(r.json()["result"]["params"], params);
    let status = lasso.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}\n{}", lasso.logs());
    assert!(
        lasso.logs().contains("shutdown complete"),
        "no `shutdown complete` line:\n{}",
        lasso.logs()
    );
    assert!(
        refused,
        "connections still accepted {refused_after:?} after SIGINT"
    );
    let bad: Vec<String> = drain_answers.into_iter().flatten().collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn sigterm_when_idle_exits_zero() {
    let p1 = MockProvider::start("p1");
    let mut lasso = Lasso::start(&single_chain(&[&p1]).yaml());
    let r = post(lasso.addr(), PATH, &read_call(1).0);
    assert_eq!(r.status, 200);
    // an idle keep-alive client must not hold the drain up
    let mut idle = Conn::connect(lasso.addr());
    assert_eq!(idle.post(PATH, &read_call(2).0).status, 200);
    let t = Instant::now();
    lasso.send_signal(libc::SIGTERM);
    let status = lasso.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}\n{}", lasso.logs());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "drain with only idle connections took {:?}",
        t.elapsed()
    );
    assert!(lasso.logs().contains("shutdown complete"));
}

/// CONTRACT "Health probes": a provider reporting another chain id is disabled before `listening`.
#[test]
fn provider_on_the_wrong_chain_is_disabled() {
    let mocks: Vec<MockProvider> = (1..=2)
        .map(|i| MockProvider::start(&format!("p{i}")))
        .collect();
    let refs: Vec<&MockProvider> = mocks.iter().collect();
    let yaml = single_chain(&refs).yaml();
    mocks[0].set_chain_id("0x5"); // after single_chain(), which sets 0x1
    let lasso = Lasso::start(&yaml);
    assert!(
        mocks[0].probe_count("eth_chainId") >= 1,
        "p1 was never asked for its chain id before `listening` (or without X-Lasso-Probe)"
    );
    let (errors, served) = read_stream(lasso.addr(), 10, &["p1"]);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(
        mocks[0].count("eth_getBalance"),
        0,
        "client traffic reached the wrong-chain provider"
    );
    assert!(served.iter().all(|p| p == "p2"), "{served:?}");
}
