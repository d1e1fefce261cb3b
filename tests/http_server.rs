//! HTTP/1.1 server behaviour of the data plane (docs/CONTRACT.md): keep-alive, pipelining, framing,
//! limits and timeouts.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const PATH: &str = "/rpc/ethereum";

/// One echo provider `p1` behind a Lasso with extra `server:` settings.
fn setup(server: &[(&str, &str)]) -> (MockProvider, Lasso) {
    let mock = MockProvider::start("p1");
    let mut cfg = single_chain(&[&mock]);
    for (k, v) in server {
        cfg = cfg.server(k, v);
    }
    let lasso = Lasso::start(&cfg.yaml());
    (mock, lasso)
}

fn balance(id: Value, n: u64) -> (String, Value) {
    let params = json!([format!("0x{n:040x}"), "latest"]);
    (rpc(id, "eth_getBalance", params.clone()), params)
}

/// Asserts `r` is a 200 echo answer from p1 for (id, params).
fn assert_echo(r: &Response, id: &Value, params: &Value) {
    assert_eq!(r.status, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["jsonrpc"], "2.0", "{}", r.describe());
    assert_eq!(&v["id"], id, "{}", r.describe());
    assert_eq!(served_by(&v).as_deref(), Some("p1"), "{}", r.describe());
    assert_eq!(&v["result"]["params"], params, "{}", r.describe());
}

fn is_close(r: &Response) -> bool {
    r.header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    for i in 0..10u64 {
        let (body, params) = balance(json!(i), i);
        let r = c.post(PATH, &body);
        assert_echo(&r, &json!(i), &params);
        assert!(
            !is_close(&r),
            "request {i} got Connection: close: {}",
            r.describe()
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=3u64 {
        let (body, params) = balance(json!(i), 100 + i);
        wire.extend_from_slice(&post_bytes(PATH, &body));
        expected.push((json!(i), params));
    }
    c.send(&wire);
    let rs = c.read_responses(3);
    for (r, (id, params)) in rs.iter().zip(&expected) {
        assert_echo(r, id, params);
    }
    // still usable afterwards
    let (body, params) = balance(json!(4), 4);
    assert_echo(&c.post(PATH, &body), &json!(4), &params);
}

#[test]
fn pipelined_requests_in_one_packet_with_mixed_outcomes() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    let (b1, p1) = balance(json!(1), 1);
    let mut wire = post_bytes(PATH, &b1);
    wire.extend_from_slice(&post_bytes(PATH, "{not json"));
    wire.extend_from_slice(&post_bytes(
        "/rpc/nochain",
        &rpc(json!(3), "eth_blockNumber", json!([])),
    ));
    let (b4, p4) = balance(json!(4), 4);
    wire.extend_from_slice(&post_bytes(PATH, &b4));
    c.send(&wire);
    let rs = c.read_responses(4);
    assert_echo(&rs[0], &json!(1), &p1);
    assert_eq!(rs[1].status, 400, "{}", rs[1].describe());
    assert_eq!(rs[1].rpc_code(), Some(-32700), "{}", rs[1].describe());
    assert_eq!(rs[2].status, 404, "{}", rs[2].describe());
    assert_eq!(rs[2].rpc_code(), Some(-32001), "{}", rs[2].describe());
    assert_echo(&rs[3], &json!(4), &p4);
}

#[test]
fn chunked_request_body() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    for chunk in [1usize, 7, 64, 4096] {
        let (body, params) = balance(json!(chunk), chunk as u64);
        c.send(&request_bytes(
            "POST",
            PATH,
            &[
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked"),
            ],
            &chunk_body(body.as_bytes(), chunk),
        ));
        assert_echo(&c.read_response(), &json!(chunk), &params);
    }
}

#[test]
fn expect_100_continue() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    let (body, params) = balance(json!("e100"), 100);
    let len = body.len().to_string();
    c.send(&request_bytes(
        "POST",
        PATH,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &len),
            ("Expect", "100-continue"),
        ],
        b"",
    ));
    c.set_read_timeout(Duration::from_secs(5));
    let interim = c.read_response();
    assert_eq!(
        interim.status,
        100,
        "expected 100 Continue before sending the body, got {}",
        interim.describe()
    );
    c.send(body.as_bytes());
    assert_echo(&c.read_response(), &json!("e100"), &params);
}

#[test]
fn connection_close_header_closes_after_response() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    let (body, params) = balance(json!(1), 1);
    c.send(&request_bytes(
        "POST",
        PATH,
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    ));
    let r = c.read_response();
    assert_echo(&r, &json!(1), &params);
    match c.wait_closed(Duration::from_secs(3)) {
        Ok(extra) => assert!(extra.is_empty(), "bytes after the response: {extra:?}"),
        Err(_) => panic!("connection still open 3 s after a `Connection: close` response"),
    }
}

#[test]
fn http10_closes_after_response() {
    let (_m, lasso) = setup(&[]);
    let mut c = Conn::connect(lasso.addr());
    let (body, params) = balance(json!(10), 10);
    let wire = format!(
        "POST {PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.send(wire.as_bytes());
    let r = c.read_response();
    assert_echo(&r, &json!(10), &params);
    assert!(
        c.wait_closed(Duration::from_secs(3)).is_ok(),
        "HTTP/1.0 connection without keep-alive still open 3 s after the response"
    );
}

#[test]
fn headers_split_into_many_small_writes_within_timeout() {
    let (_m, lasso) = setup(&[("header_timeout_ms", "2000")]);
    let mut c = Conn::connect(lasso.addr());
    let (body, params) = balance(json!(5), 5);
    let wire = post_bytes(PATH, &body);
    for piece in wire.chunks(3) {
        c.send(piece);
    }
    assert_echo(&c.read_response(), &json!(5), &params);
}

#[test]
fn oversized_headers_get_431() {
    let (_m, lasso) = setup(&[]);
    // Just under the default 16 KiB: fine.
    let pad = "a".repeat(14 * 1024);
    let (body, params) = balance(json!(1), 1);
    let r = request(
        lasso.addr(),
        "POST",
        PATH,
        &[("Content-Type", "application/json"), ("X-Pad", &pad)],
        body.as_bytes(),
    );
    assert_echo(&r, &json!(1), &params);

    // Over: 431 with a JSON-RPC -32600 body.
    let pad = "a".repeat(20 * 1024);
    let r = request(
        lasso.addr(),
        "POST",
        PATH,
        &[("Content-Type", "application/json"), ("X-Pad", &pad)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 431, "{}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32600), "{}", r.describe());
}

#[test]
fn many_headers_over_limit_get_431() {
    let (_m, lasso) = setup(&[]);
    let vals: Vec<(String, String)> = (0..400)
        .map(|i| (format!("X-H{i}"), "v".repeat(50)))
        .collect();
    let hs: Vec<(&str, &str)> = vals.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (body, _) = balance(json!(1), 1);
    let r = request(lasso.addr(), "POST", PATH, &hs, body.as_bytes());
    assert_eq!(r.status, 431, "{}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32600), "{}", r.describe());
}

fn padded_body(total: usize) -> String {
    let base = rpc(json!(1), "eth_getBalance", json!(["", "latest"]));
    let pad = "0".repeat(total - base.len());
    let b = rpc(json!(1), "eth_getBalance", json!([pad, "latest"]));
    assert_eq!(b.len(), total);
    b
}

#[test]
fn body_over_max_body_bytes_gets_413() {
    let (_m, lasso) = setup(&[("max_body_bytes", "1024")]);
    let ok = padded_body(1000);
    let r = post(lasso.addr(), PATH, &ok);
    assert_eq!(
        r.status,
        200,
        "1000-byte body under a 1024 limit: {}",
        r.describe()
    );

    let big = padded_body(2000);
    let r = post(lasso.addr(), PATH, &big);
    assert_eq!(r.status, 413, "{}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32600), "{}", r.describe());
}

#[test]
fn chunked_body_over_max_body_bytes_gets_413() {
    let (mock, lasso) = setup(&[("max_body_bytes", "1024")]);
    let big = padded_body(4000);
    let r = request(
        lasso.addr(),
        "POST",
        PATH,
        &[
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunk_body(big.as_bytes(), 500),
    );
    assert_eq!(r.status, 413, "{}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32600), "{}", r.describe());
    assert_eq!(
        mock.count("eth_getBalance"),
        0,
        "oversized body was forwarded"
    );
}

#[test]
fn slowloris_headers_are_cut_off_after_header_timeout() {
    let (_m, lasso) = setup(&[("header_timeout_ms", "300")]);
    let mut c = Conn::connect(lasso.addr());
    let start = Instant::now();
    c.send(format!("POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").as_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = c.io.stream.try_clone().unwrap();
    let stop2 = stop.clone();
    let trickler = thread::spawn(move || {
        // One header byte every 50 ms: the client's stimulus, not a synchronisation.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            if writer.write_all(b"a").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let closed = c.wait_closed(Duration::from_secs(4));
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    match closed {
        Ok(data) => {
            assert!(
                elapsed >= Duration::from_millis(250),
                "closed after {elapsed:?}, before header_timeout_ms=300"
            );
            assert!(
                elapsed <= Duration::from_millis(2500),
                "closed only after {elapsed:?} (header_timeout_ms=300)"
            );
            if !data.is_empty() {
                let text = String::from_utf8_lossy(&data);
                assert!(
                    text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.0 408"),
                    "unexpected bytes before close: {text:?}"
                );
            }
        }
        Err(data) => panic!(
            "trickled headers kept the connection open for {elapsed:?} (header_timeout_ms=300); got {:?}",
            String::from_utf8_lossy(&data)
        ),
    }
}

#[test]
fn idle_keep_alive_connection_closed_after_idle_timeout() {
    let (_m, lasso) = setup(&[("idle_timeout_ms", "300")]);
    let mut c = Conn::connect(lasso.addr());
    let (body, params) = balance(json!(1), 1);
    assert_echo(&c.post(PATH, &body), &json!(1), &params);
    let start = Instant::now();
    let closed = c.wait_closed(Duration::from_secs(4));
    let elapsed = start.elapsed();
    match closed {
        Ok(data) => {
            assert!(data.is_empty(), "bytes on an idle connection: {data:?}");
            assert!(
                elapsed >= Duration::from_millis(200),
                "idle connection closed after {elapsed:?}, before idle_timeout_ms=300"
            );
            assert!(
                elapsed <= Duration::from_millis(2500),
                "idle connection closed only after {elapsed:?} (idle_timeout_ms=300)"
            );
        }
        Err(_) => panic!("idle keep-alive connection still open 4 s later (idle_timeout_ms=300)"),
    }
}

#[test]
fn wrong_methods_on_rpc_routes_get_405() {
    let (_m, lasso) = setup(&[]);
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        for path in [PATH, "/rpc/priority/ethereum", "/rpc/provider/p1/ethereum"] {
            let r = request(lasso.addr(), method, path, &[], b"");
            assert_eq!(r.status, 405, "{method} {path}: {}", r.describe());
            assert_eq!(
                r.rpc_code(),
                Some(-32600),
                "{method} {path}: {}",
                r.describe()
            );
        }
    }
}

#[test]
fn unknown_path_gets_404() {
    let (_m, lasso) = setup(&[]);
    for (method, path) in [("POST", "/nope"), ("GET", "/nope/deeper"), ("POST", "/")] {
        let body = rpc(json!(1), "eth_blockNumber", json!([]));
        let r = request(
            lasso.addr(),
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 404, "{method} {path}: {}", r.describe());
        assert_eq!(
            r.rpc_code(),
            Some(-32601),
            "{method} {path}: {}",
            r.describe()
        );
    }
}

#[test]
fn options_preflight_and_cors_header() {
    let (_m, lasso) = setup(&[]);
    for path in [PATH, "/rpc/priority/ethereum", "/rpc/provider/p1/ethereum"] {
        let r = request(
            lasso.addr(),
            "OPTIONS",
            path,
            &[
                ("Origin", "https://dapp.example"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        );
        assert_eq!(r.status, 204, "OPTIONS {path}: {}", r.describe());
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("*"),
            "OPTIONS {path}: {}",
            r.describe()
        );
    }
    // ordinary answers (success and error) carry it too
    let (body, _) = balance(json!(1), 1);
    let r = post(lasso.addr(), PATH, &body);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{}",
        r.describe()
    );
    let r = post(lasso.addr(), PATH, "{bad json");
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{}",
        r.describe()
    );
}

#[test]
fn hard_connection_limit() {
    let (_m, lasso) = setup(&[("soft_max_connections", "3"), ("hard_max_connections", "3")]);
    let addr = lasso.addr();
    let mut held: Vec<Conn> = Vec::new();
    for i in 0..3u64 {
        let mut c = Conn::connect(addr);
        let (body, params) = balance(json!(i), i);
        let r = c.post(PATH, &body);
        assert_echo(&r, &json!(i), &params);
        held.push(c);
    }

    // The 4th: either a 503 -32013 or a clean close; never served.
    let mut c4 = Conn::connect(addr);
    c4.set_read_timeout(Duration::from_millis(1500));
    let verdict = match c4.io.fill() {
        Ok(0) => "closed".to_string(),
        Ok(_) => {
            let r = c4.read_response();
            assert_eq!(r.status, 503, "4th connection: {}", r.describe());
            assert_eq!(
                r.rpc_code(),
                Some(-32013),
                "4th connection: {}",
                r.describe()
            );
            "503 before request".to_string()
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            // Nothing yet: send a request.
            c4.set_read_timeout(Duration::from_secs(5));
            let (body, _) = balance(json!(4), 4);
            match c4.try_post(PATH, &body) {
                Ok(r) => {
                    assert_eq!(r.status, 503, "4th connection: {}", r.describe());
                    assert_eq!(
                        r.rpc_code(),
                        Some(-32013),
                        "4th connection: {}",
                        r.describe()
                    );
                    "503 after request".to_string()
                }
                Err(e) => {
                    assert!(
                        e.kind() == std::io::ErrorKind::UnexpectedEof,
                        "4th connection was not closed cleanly: {e}"
                    );
                    "closed after request".to_string()
                }
            }
        }
        Err(e) => panic!("4th connection was reset instead of closed cleanly / answered 503: {e}"),
    };
    eprintln!("4th connection: {verdict}");
    drop(c4);

    // Existing connections are unaffected.
    let (body, params) = balance(json!(20), 20);
    assert_echo(&held[1].post(PATH, &body), &json!(20), &params);

    // Free a slot: a new connection must eventually be served. Lasso learns about the close
    // asynchronously, so retry until a bounded deadline.
    drop(held.remove(0));
    eventually(
        Duration::from_secs(3),
        "a new connection served after closing one of 3 (limit 3)",
        || {
            let mut c = Conn::connect(addr);
            let (body, params) = balance(json!(30), 30);
            match c.try_post(PATH, &body) {
                Ok(r) if r.status == 200 => {
                    assert_echo(&r, &json!(30), &params);
                    Ok(())
                }
                Ok(r) => Err(r.describe()),
                Err(e) => Err(e.to_string()),
            }
        },
    );
}

#[test]
fn soft_connection_limit_adds_connection_close() {
    let (_m, lasso) = setup(&[
        ("soft_max_connections", "2"),
        ("hard_max_connections", "10"),
    ]);
    let addr = lasso.addr();
    let mut held = Vec::new();
    for i in 0..2u64 {
        let mut c = Conn::connect(addr);
        let (body, params) = balance(json!(i), i);
        let r = c.post(PATH, &body);
        assert_echo(&r, &json!(i), &params);
        assert!(
            !is_close(&r),
            "connection {} of 2 (soft limit 2): {}",
            i + 1,
            r.describe()
        );
        held.push(c);
    }
    // Third connection: above the soft limit, served but told to go away.
    let mut c3 = Conn::connect(addr);
    let (body, params) = balance(json!(3), 3);
    let r = c3.post(PATH, &body);
    assert_echo(&r, &json!(3), &params);
    assert!(
        is_close(&r),
        "3rd connection over soft limit 2 lacks Connection: close: {}",
        r.describe()
    );
    assert!(
        c3.wait_closed(Duration::from_secs(3)).is_ok(),
        "connection not closed after a `Connection: close` response"
    );
}
