//! The client edge under attack (hardening issue, items 9, 15 and 17): a client that never reads its answer is cut
//! after the send timeout; one address cannot take every connection; idle event streams and subscribed WebSocket
//! sessions end; closing a WebSocket cancels its requests; client text cannot forge log lines; CORS is granted only
//! on the JSON-RPC routes.

mod support;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use serde_json::{Value, json};
use support::ws::{WsClient, WsMessage};
use support::*;

/// Open client connections as `/api/status` counts them (the status request's own included).
fn connections(lasso: &Lasso) -> u64 {
    get(lasso.addr(), "/api/status").json()["connections"]
        .as_u64()
        .expect("connections in /api/status")
}

/// A connection to `to` from the loopback address `from` (Linux routes all of 127/8 to lo).
fn connect_from(from: &str, to: SocketAddr) -> Conn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0);
    socket.bind(&local.into()).unwrap();
    socket.connect_timeout(&to.into(), SEC * 5).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(SEC * 10)).unwrap();
    stream.set_nodelay(true).unwrap();
    Conn {
        io: support::http::BufStream::new(stream),
        addr: to,
    }
}

/// Sends a request on `c` and reads the answer; a connection refused before its request may be closed instead.
fn status_of(c: &mut Conn) -> Result<Response, String> {
    let body = rpc(json!(1), "eth_blockNumber", json!([]));
    c.try_send(&post_bytes("/rpc/ethereum", &body))
        .map_err(|e| format!("send: {e}"))?;
    c.try_read_response().map_err(|e| format!("read: {e}"))
}

#[test]
fn a_client_that_never_reads_a_20_mb_answer_is_closed_after_the_send_timeout() {
    const SIZE: usize = 20 << 20;
    let mock = MockProvider::start("p1").with_big_result(SIZE);
    // Generous deadlines: a debug build takes a while to fetch and check 20 MB.
    let cfg = single_chain(&[&mock])
        .server("send_timeout_ms", 1000)
        .upstream("request_timeout_ms", 30000)
        .routing("deadlines_ms", "{ light: 30000 }");
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let mut stalled = Conn::connect(lasso.addr());
    // `Connection: close`: once the answer is written the connection ends, so only the write can hold it.
    let body = rpc(json!(1), "eth_getBalance", json!(["0x01", "latest"]));
    stalled.send(&support::http::request_bytes(
        "POST",
        "/rpc/ethereum",
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    ));
    assert!(
        mock.wait_for_count("eth_getBalance", 1, SEC * 10),
        "the call reached the provider"
    );
    // Lasso is now writing 20 MB that nobody reads; within the send timeout (plus slack) it gives up.
    let started = Instant::now();
    eventually(
        SEC * 20,
        "the stalled connection is closed",
        || match connections(&lasso) {
            1 => Ok(()),
            n => Err(format!("{n} connections open")),
        },
    );
    let got = stalled
        .wait_closed(SEC * 10)
        .unwrap_or_else(|d| panic!("still open after {} bytes", d.len()));
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "the 20 MB answer was being sent: {:?}",
        String::from_utf8_lossy(&got[..got.len().min(300)])
    );
    assert!(
        got.len() < SIZE,
        "the answer was cut, not delivered: {} bytes",
        got.len()
    );
    eprintln!(
        "stalled 20 MB answer closed {:?} after the call reached the provider; client got {} bytes",
        started.elapsed(),
        got.len()
    );
    // A reader that takes its answer gets all of it.
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(2), "eth_getBalance", json!(["0x02", "latest"])),
    );
    assert_eq!(r.status, 200, "{}", truncate_describe(&r));
    assert_eq!(r.json()["result"].as_str().map(str::len), Some(SIZE));
}

#[test]
fn a_slow_reader_that_keeps_taking_bytes_gets_its_whole_answer() {
    const SIZE: usize = 24 << 20;
    let mock = MockProvider::start("p1").with_big_result(SIZE);
    let cfg = single_chain(&[&mock])
        .server("send_timeout_ms", 5000)
        .upstream("request_timeout_ms", 30000)
        .routing("deadlines_ms", "{ light: 30000 }");
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let mut slow = Conn::connect(lasso.addr());
    let body = rpc(json!(1), "eth_getBalance", json!(["0x01", "latest"]));
    slow.send(&support::http::request_bytes(
        "POST",
        "/rpc/ethereum",
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    ));
    // At most 256 KiB every 100 ms: the whole answer takes longer than the send timeout, but no write waits that
    // long (the kernel wakes a blocked sender once half its queue is taken, about every 2 MB here).
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut slow.io.stream, &mut chunk).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        std::thread::sleep(std::time::Duration::from_millis(100)); // pacing the reader, not synchronisation
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(
        got.len() > SIZE,
        "the whole answer arrived: {} bytes",
        got.len()
    );
    eprintln!(
        "slow reader took {:?} for {} bytes",
        started.elapsed(),
        got.len()
    );
}

fn truncate_describe(r: &Response) -> String {
    support::http::truncate(&r.describe(), 400)
}

#[test]
fn one_address_at_its_connection_cap_is_refused_and_does_not_lock_out_others() {
    let mock = MockProvider::start("p1");
    mock.set_result("eth_blockNumber", json!("0x10"));
    let cfg = single_chain(&[&mock]).server("max_connections_per_ip", 3);
    let lasso = Lasso::builder(&cfg.yaml()).workers(2).start();
    let addr = lasso.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.2", addr);
        let r = status_of(&mut c).expect("served under the cap");
        assert_eq!(r.status, 200, "{}", r.describe());
        held.push(c);
    }
    // The 4th from the same address: 503 -32013 (or closed before its request), never served.
    let mut fourth = connect_from("127.0.0.2", addr);
    match status_of(&mut fourth) {
        Ok(r) => {
            assert_eq!(r.status, 503, "{}", r.describe());
            assert_eq!(r.rpc_code(), Some(-32013), "{}", r.describe());
            assert!(r.text().contains("this address"), "{}", r.describe());
        }
        Err(e) => eprintln!("4th connection closed before its answer: {e}"),
    }
    // Other addresses are served while 127.0.0.2 sits at its cap.
    for other in ["127.0.0.3", "127.0.0.4", "127.0.0.1"] {
        let mut c = connect_from(other, addr);
        let r = status_of(&mut c).unwrap_or_else(|e| panic!("{other}: {e}"));
        assert_eq!(r.status, 200, "{other}: {}", r.describe());
        assert_eq!(r.json()["result"], "0x10");
    }
    // Closing one gives the address its place back.
    held.pop();
    eventually(SEC * 5, "a place for 127.0.0.2 again", || {
        let mut c = connect_from("127.0.0.2", addr);
        match status_of(&mut c) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(r.describe()),
            Err(e) => Err(e),
        }
    });
}

/// Upgrades `c` to a WebSocket on `/ws/rpc/ethereum`; returns the status of the answer.
fn ws_upgrade_status(c: &mut Conn) -> Result<u16, String> {
    let hs =
        loadtest::ws::client_handshake("127.0.0.1", "/ws/rpc/ethereum", "dGhlIHNhbXBsZSBub25jZQ==");
    c.try_send(hs.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let head =
        c.io.read_head(16 * 1024)
            .map_err(|e| format!("read: {e}"))?
            .ok_or("closed before a head")?;
    String::from_utf8_lossy(&head)[9..12]
        .parse()
        .map_err(|e| format!("status: {e}"))
}

#[test]
fn idle_websocket_sessions_from_one_address_stop_at_the_default_cap() {
    let mock = MockProvider::start("p1");
    mock.set_result("eth_blockNumber", json!("0x10"));
    let lasso = Lasso::builder(&single_chain(&[&mock]).yaml())
        .workers(2)
        .start();
    let addr = lasso.addr();
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..160 {
        let mut c = connect_from("127.0.0.2", addr);
        match ws_upgrade_status(&mut c) {
            Ok(101) => held.push(c),
            Ok(503) | Err(_) => refused += 1,
            Ok(other) => panic!("upgrade answered {other}"),
        }
    }
    assert_eq!(held.len(), 128, "the default cap of one address");
    assert_eq!(refused, 32);
    // Another address: served over HTTP and WebSocket while 127.0.0.2 holds its 128 idle sessions.
    let mut c = connect_from("127.0.0.3", addr);
    let r = status_of(&mut c).expect("served");
    assert_eq!(r.status, 200, "{}", r.describe());
    let mut c = connect_from("127.0.0.3", addr);
    assert_eq!(ws_upgrade_status(&mut c), Ok(101));
}

/// Opens `GET /api/events/default`; returns the status and the connection after the head.
fn open_stream(lasso: &Lasso) -> (u16, Conn) {
    let mut c = Conn::connect(lasso.addr());
    c.send(b"GET /api/events/default HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.io.read_head(16 * 1024).unwrap().expect("a head");
    let text = String::from_utf8_lossy(&head).to_string();
    (text[9..12].parse().unwrap(), c)
}

#[test]
fn idle_event_streams_end_at_their_lifetime() {
    let mock = MockProvider::start("p1");
    let cfg = single_chain(&[&mock]).server("event_stream_lifetime_ms", 1000);
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let (status, mut idle) = open_stream(&lasso);
    assert_eq!(status, 200);
    let started = Instant::now();
    idle.wait_closed(SEC * 10)
        .unwrap_or_else(|_| panic!("the idle stream is still open after 10 s"));
    assert!(
        started.elapsed() < SEC * 5,
        "ended after {:?}",
        started.elapsed()
    );
    // Its place is free: a new stream opens.
    assert_eq!(open_stream(&lasso).0, 200);
}

#[test]
fn a_subscribed_websocket_session_ends_at_its_lifetime() {
    // Blocks every minute: the subscription stays silent, as an idle one would.
    let mut mcfg = loadtest::mock::MockConfig::default();
    mcfg.chain.block_time_ms = 60_000;
    let ws_mock = loadtest::mock::start(mcfg).expect("mock provider starts");
    let cfg = format!(
        "websocket: {{ session_lifetime_ms: 1500, idle_timeout_ms: 600000 }}\n\
         chains:\n  ethereum:\n    chain_id: 1\n    block_time_ms: 60000\n    providers:\n\
         \x20     - {{ id: m1, url: \"{}\", ws_url: \"{}\" }}\n",
        ws_mock.url(),
        ws_mock.ws_url()
    );
    let lasso = Lasso::builder(&cfg).workers(1).start();
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let mut notes = Vec::new();
    let reply = c.call(1, "eth_subscribe", json!(["newHeads"]), &mut notes);
    assert!(reply["result"].is_string(), "subscribed: {reply}");
    let started = Instant::now();
    let code = loop {
        match c.recv(SEC * 10) {
            Some(WsMessage::Close(code, why)) => {
                assert!(why.contains("lifetime"), "{why}");
                break code;
            }
            Some(WsMessage::Text(v)) => assert_eq!(v["method"], "eth_subscription", "{v}"),
            None => panic!("the subscribed session was not closed within 10 s"),
        }
    };
    assert_eq!(code, 1001, "closed as 'going away' so clients reconnect");
    assert!(started.elapsed() < SEC * 8, "{:?}", started.elapsed());
}

#[test]
fn closing_a_websocket_cancels_its_requests_and_their_upstream_calls() {
    let mock = MockProvider::start("p1");
    // Not coalesced: a batch shared with other clients' calls outlives any one of them by design.
    let cfg = single_chain(&[&mock])
        .upstream("coalesce", false)
        .upstream("request_timeout_ms", 30000)
        .upstream("max_attempts", 1)
        .routing("merge_interval_ms", 60000)
        .routing("deadlines_ms", "{ trace: 30000 }");
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let mut notes = Vec::new();
    assert_eq!(
        c.call(1, "eth_chainId", json!([]), &mut notes)["result"],
        "0x1"
    );
    mock.set_fault(Fault::Hang);
    for id in 0..2 {
        c.send_json(
            &json!({"jsonrpc": "2.0", "id": 10 + id, "method": "debug_traceTransaction",
            "params": [format!("0x{id:064x}")]}),
        );
    }
    assert!(
        mock.wait_for_count("debug_traceTransaction", 2, SEC * 10),
        "both calls reached the provider"
    );
    let held = eventually(SEC * 5, "both calls held upstream", || {
        match mock.open_connections() {
            n if n >= 2 => Ok(n),
            n => Err(format!("{n} open")),
        }
    });
    drop(c);
    // The session's tasks are cancelled: their upstream connections close long before the 30 s deadline.
    eventually(SEC * 5, "the upstream calls are abandoned", || {
        match mock.open_connections() {
            n if n + 2 <= held => Ok(()),
            n => Err(format!("{n} open, {held} while the calls were pending")),
        }
    });
    mock.set_fault(Fault::None);
    // The server still serves.
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    assert_eq!(
        c.call(2, "eth_chainId", json!([]), &mut notes)["result"],
        "0x1"
    );
}

/// A method name that, written raw into a text log, would start a forged line (and colour the terminal).
const FORGED: &str =
    "admin_peers\n2099-01-01T00:00:00.000000Z  INFO lasso: forged\x1b]0;owned\x07 line";

#[test]
fn client_text_cannot_forge_a_log_line() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&mock]).yaml())
        .workers(1)
        .start();
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(1), FORGED, json!([])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32004), "{}", r.describe());
    assert!(
        lasso.wait_for_log("request failed", SEC * 5),
        "the refusal is logged"
    );
    let logs = lasso.logs();
    for line in logs.lines() {
        assert!(
            !line.starts_with("2099-01-01") && !line.trim_start().starts_with("forged"),
            "a forged log line: {line:?}\n{logs}"
        );
        assert!(
            !line.contains('\u{7}'),
            "a raw control character reached the log: {line:?}"
        );
    }
    let failed = logs.lines().find(|l| l.contains("request failed")).unwrap();
    assert!(failed.contains("admin_peers\\n2099"), "{failed}");
    assert!(
        failed.contains("\\u{1b}]0;owned\\u{7}"),
        "escaped, not stripped: {failed}"
    );
}

#[test]
fn repeated_request_warnings_are_rate_limited_with_a_suppressed_count() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&mock]).yaml())
        .workers(1)
        .start();
    let body = rpc(json!(1), "admin_peers", json!([]));
    let mut c = Conn::connect(lasso.addr());
    let started = Instant::now();
    for _ in 0..300 {
        assert_eq!(c.post("/rpc/ethereum", &body).rpc_code(), Some(-32004));
    }
    let burst = started.elapsed();
    let failed = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("request failed"))
            .count()
    };
    let seconds = burst.as_secs() as usize + 2;
    // At most 10 lines per second of the burst (with one window of slack for boundaries).
    let logged = failed(&lasso.logs());
    assert!(
        logged <= 10 * seconds,
        "{logged} 'request failed' lines for 300 requests in {burst:?}"
    );
    // The next line of the kind says how many were suppressed.
    eventually(SEC * 5, "a line with the suppressed count", || {
        c.post("/rpc/ethereum", &body);
        let logs = lasso.logs();
        match logs
            .lines()
            .filter(|l| l.contains("request failed"))
            .filter_map(|l| l.split("suppressed=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .find(|n| n != "0")
        {
            Some(n) => Ok(n),
            None => Err(format!("{} lines, none with suppressed>0", failed(&logs))),
        }
    });
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.header(name)
}

#[test]
fn cors_only_on_the_json_rpc_routes() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&mock]).yaml())
        .workers(1)
        .start();
    let origin = [("Origin", "https://evil.example")];
    let body = rpc(json!(1), "eth_chainId", json!([]));
    let r = request(
        lasso.addr(),
        "POST",
        "/rpc/ethereum",
        &[
            ("Origin", "https://dapp.example"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("*"),
        "{}",
        r.describe()
    );
    for path in ["/rpc/ethereum", "/ws/rpc/ethereum"] {
        let r = request(lasso.addr(), "OPTIONS", path, &origin, b"");
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
    }
    let r = request(lasso.addr(), "GET", "/ws/rpc/ethereum", &origin, b"");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("*"),
        "{}",
        r.describe()
    );
    for (method, path) in [
        ("GET", "/api/health"),
        ("GET", "/api/status"),
        ("GET", "/api/chains"),
        ("GET", "/metrics"),
        ("GET", "/api/metrics/ethereum"),
        ("GET", "/api/cluster/status"),
        ("GET", "/api/admin/config"),
        ("OPTIONS", "/api/admin/config"),
        ("OPTIONS", "/api/status"),
        ("GET", "/nowhere"),
    ] {
        let r = request(lasso.addr(), method, path, &origin, b"");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            None,
            "{method} {path} grants CORS: {}",
            truncate_describe(&r)
        );
        assert!(
            r.header("access-control-allow-methods").is_none(),
            "{method} {path}"
        );
    }
}

/// A WebSocket upgrade head for `path` sent from `origin`.
fn upgrade_from(lasso: &Lasso, path: &str, origin: &str) -> String {
    let mut c = Conn::connect(lasso.addr());
    let hs =
        loadtest::ws::client_handshake(&lasso.addr().to_string(), path, "dGhlIHNhbXBsZSBub25jZQ==");
    let hs = hs.replacen("\r\n", &format!("\r\nOrigin: {origin}\r\n"), 1);
    c.send(hs.as_bytes());
    let head = c.io.read_head(16 * 1024).unwrap().expect("a head");
    String::from_utf8_lossy(&head).to_string()
}

#[test]
fn configured_origins_are_echoed_and_others_refused() {
    let mock = MockProvider::start("p1");
    let cfg = single_chain(&[&mock]).server(
        "cors_origins",
        "[\"https://dapp.example\", \"http://localhost:3000\"]",
    );
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let body = rpc(json!(1), "eth_chainId", json!([]));
    let ask = |origin: &str| {
        request(
            lasso.addr(),
            "POST",
            "/rpc/ethereum",
            &[("Origin", origin), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = ask("https://dapp.example");
    assert_eq!(r.status, 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://dapp.example")
    );
    assert_eq!(header(&r, "vary"), Some("Origin"));
    let r = ask("https://evil.example");
    assert_eq!(r.status, 200, "non-browser semantics unchanged");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        None,
        "{}",
        r.describe()
    );
    let pre = request(
        lasso.addr(),
        "OPTIONS",
        "/rpc/ethereum",
        &[("Origin", "https://evil.example")],
        b"",
    );
    assert_eq!(header(&pre, "access-control-allow-origin"), None);
    assert_eq!(header(&pre, "access-control-allow-methods"), None);
    // WebSockets: browsers send Origin and apply no CORS, so a foreign page is refused by the server.
    let head = upgrade_from(&lasso, "/ws/rpc/ethereum", "https://evil.example");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let head = upgrade_from(&lasso, "/ws/rpc/ethereum", "http://localhost:3000");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // No Origin (a non-browser client): served.
    let mut c = WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").unwrap();
    let mut notes: Vec<Value> = Vec::new();
    assert_eq!(
        c.call(1, "eth_chainId", json!([]), &mut notes)["result"],
        "0x1"
    );
}
