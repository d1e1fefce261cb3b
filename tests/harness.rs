//! Self-test of the test harness (tests/support) without Lasso: the mock providers really misbehave
//! the way the other tests assume, and the raw client parses what they send.

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

#[test]
fn echo_overrides_batches_and_counts() {
    let m = MockProvider::start("m");
    m.set_result("eth_blockNumber", json!("0x10"));
    m.set_error(
        "eth_call",
        json!({"code":3,"message":"execution reverted","data":"0x01"}),
    );
    let mut c = Conn::connect(m.addr());
    let r = c.post("/", &rpc(json!("a"), "eth_getBalance", json!(["0x1"])));
    assert_eq!(
        r.json(),
        json!({"jsonrpc":"2.0","id":"a","result":{"provider":"m","method":"eth_getBalance","params":["0x1"]}})
    );
    let r = c.post("/", &rpc(json!(2), "eth_blockNumber", json!([])));
    assert_eq!(r.json(), json!({"jsonrpc":"2.0","id":2,"result":"0x10"}));
    let r = c.post("/", &rpc(json!(3), "eth_call", json!([])));
    assert_eq!(r.json()["error"]["code"], json!(3));
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},
        {"jsonrpc":"2.0","method":"eth_blockNumber"},
        {"jsonrpc":"2.0","id":9,"method":"eth_chainId"}
    ]);
    let r = c.post("/", &batch.to_string());
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["id"], json!(9));
    let r = c.post("/", &notification("eth_blockNumber", json!([])));
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(m.count("eth_blockNumber"), 4);
    assert_eq!(m.count("eth_chainId"), 1);
    assert_eq!(m.received(), 5);
    assert_eq!(m.calls().len(), 7);
    assert!(m.wait_for_count("eth_chainId", 1, Duration::from_millis(10)));
    assert!(!m.wait_for_count("eth_chainId", 2, Duration::from_millis(50)));
}

#[test]
fn refuse_and_recover_on_the_same_port() {
    let m = MockProvider::start("m");
    let mut keep = Conn::connect(m.addr());
    assert_eq!(keep.post("/", &rpc(json!(1), "x", json!([]))).status, 200);
    m.set_fault(Fault::Refuse);
    let e = TcpStream::connect_timeout(&m.addr(), Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    // open connections were closed too
    assert!(keep.wait_closed(Duration::from_secs(2)).is_ok());
    m.set_fault(Fault::None);
    assert_eq!(
        post(m.addr(), "/", &rpc(json!(1), "x", json!([]))).status,
        200
    );
}

#[test]
fn status_rate_limit_garbage() {
    let m = MockProvider::start("m");
    m.set_fault(Fault::Status(500));
    let r = post(m.addr(), "/", &rpc(json!(1), "x", json!([])));
    assert_eq!(r.status, 500);
    assert!(r.try_json().is_none());
    m.set_fault(Fault::RateLimited { retry_after_s: 7 });
    let r = post(m.addr(), "/", &rpc(json!(1), "x", json!([])));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    m.set_fault(Fault::Garbage);
    let r = post(m.addr(), "/", &rpc(json!(1), "x", json!([])));
    assert_eq!(r.status, 200);
    assert!(r.try_json().is_none());
    assert_eq!(m.count("x"), 3);
}

#[test]
fn reset_mid_response() {
    let m = MockProvider::start("m");
    m.set_fault(Fault::ResetMidResponse);
    let mut c = Conn::connect(m.addr());
    let err = c
        .try_post(
            "/",
            &rpc(json!(1), "x", json!(["some params to make a body"])),
        )
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
        ),
        "{err:?}"
    );
}

#[test]
fn hang_delay_and_prompt_drop() {
    let m = MockProvider::start("m");
    m.set_fault(Fault::Delay(200));
    let t = Instant::now();
    assert_eq!(
        post(m.addr(), "/", &rpc(json!(1), "x", json!([]))).status,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
    m.set_fault(Fault::Hang);
    let mut c = Conn::connect(m.addr());
    c.set_read_timeout(Duration::from_millis(300));
    let err = c.try_post("/", &rpc(json!(1), "x", json!([]))).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    assert!(m.wait_for_count("x", 2, Duration::from_secs(1)));
    // a second hung request on another connection, and a long delay on a third
    let mut c2 = Conn::connect(m.addr());
    c2.send(&post_bytes("/", &rpc(json!(2), "x", json!([]))));
    assert!(m.wait_for_count("x", 3, Duration::from_secs(1)));
    let t = Instant::now();
    drop(m);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
    assert!(c2.wait_closed(Duration::from_secs(2)).is_ok());
}

#[test]
fn close_after_response_and_restart() {
    let m = MockProvider::start("m");
    m.set_fault(Fault::CloseAfterResponse);
    let mut c = Conn::connect(m.addr());
    let r = c.post("/", &rpc(json!(1), "x", json!([])));
    assert_eq!(r.status, 200);
    assert!(r.header("connection").is_none());
    assert!(c.wait_closed(Duration::from_secs(2)).is_ok());

    m.set_fault(Fault::None);
    let port = m.port();
    let mut keep = Conn::connect(m.addr());
    assert_eq!(keep.post("/", &rpc(json!(1), "x", json!([]))).status, 200);
    assert_eq!(m.open_connections(), 1);
    m.restart();
    assert_eq!(m.port(), port);
    assert!(keep.wait_closed(Duration::from_secs(2)).is_ok());
    assert_eq!(
        post(m.addr(), "/", &rpc(json!(1), "x", json!([]))).status,
        200
    );
}

#[test]
fn chunked_gzip_and_big_results() {
    let m = MockProvider::start("m").with_big_result(3 * 1024 * 1024 + 5);
    for (chunked, gzip) in [(false, false), (true, false), (false, true), (true, true)] {
        m.set_chunked(chunked);
        m.set_gzip(gzip);
        let r = post(m.addr(), "/", &rpc(json!(1), "x", json!([])));
        assert_eq!(r.chunked, chunked);
        assert_eq!(r.gzip, gzip);
        let v = r.json();
        assert_eq!(v["result"].as_str().unwrap().len(), 3 * 1024 * 1024 + 5);
        assert_eq!(v["result"], Value::String(big_result(3 * 1024 * 1024 + 5)));
    }
}

#[test]
fn fixtures_and_replay() {
    let fixtures = load_fixtures();
    assert_eq!(fixtures.len(), 232);
    let pairs: usize = fixtures.iter().map(|f| f.pairs.len()).sum();
    assert!(pairs > 232, "{pairs}");
    let m = MockProvider::replay("r", &fixtures);
    let mut c = Conn::connect(m.addr());
    for f in &fixtures {
        for (req, resp) in &f.pairs {
            // different id than recorded: the answer must carry ours
            let mut req: Value = serde_json::from_str(req).unwrap();
            req["id"] = json!("mine");
            let mut want: Value = serde_json::from_str(resp).unwrap();
            want["id"] = json!("mine");
            let r = c.post("/", &req.to_string());
            assert_eq!(r.json(), want, "{}", f.name);
        }
    }
    let r = c.post("/", &rpc(json!(1), "eth_nothing", json!([])));
    assert_eq!(error_code(&r.json()), Some(-32601));
}

#[test]
fn config_yaml_shape() {
    let y = Config::new()
        .server("max_body_bytes", 1024)
        .chain(
            Chain::new("ethereum", 1)
                .alias("eth")
                .strategy("priority")
                .provider(
                    Provider::new("p1", "http://127.0.0.1:1/${RPC_K}")
                        .api_key("k")
                        .header("X-Api-Key", "{api_key}")
                        .deny(&["debug_*"]),
                ),
        )
        .profile(
            "premium",
            vec![Chain::hex_id("base", "0x2105").provider(Provider::new("b", "http://x"))],
        )
        .yaml();
    let out = run_lasso(&["--help"], &[], Duration::from_secs(10));
    assert!(out.status.success());
    assert!(y.contains("max_body_bytes: 1024"), "{y}");
    assert!(y.contains("chain_id: \"0x2105\""), "{y}");
    assert!(y.contains("deny: [\"debug_*\"]"), "{y}");
}

#[test]
fn health_probes_are_counted_apart() {
    let m = MockProvider::start("m");
    m.set_chain_id("0x1");
    let body = rpc(json!(1), "eth_chainId", json!([]));
    let r = request(
        m.addr(),
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("X-Lasso-Probe", "health"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.json()["result"], json!("0x1"));
    assert_eq!(m.count("eth_chainId"), 0);
    assert_eq!(m.probe_count("eth_chainId"), 1);
    assert_eq!(m.received(), 0);
    assert!(m.calls().is_empty());
    assert_eq!(m.probes().len(), 1);
    assert_eq!(post(m.addr(), "/", &body).json()["result"], json!("0x1"));
    assert_eq!(m.count("eth_chainId"), 1);
    assert_eq!(m.recorded().len(), 2);
}
