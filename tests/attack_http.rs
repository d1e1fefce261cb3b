//! HTTP framing under attack (hardening issue, items 8 and 16), against the real binary. Chunked bodies are bounded in
//! raw bytes, extension bytes and trailers, not only in decoded size; the leniencies that let a front proxy and Lasso
//! disagree on where a request ends (`Content-Length: +N`, `+N` chunk sizes, bare CR/LF in chunk lines, `100 Continue`
//! to HTTP/1.0 clients or before the route is known) are refused. Each attack leaves the process alive and another
//! client served with its own answer.

mod support;

use std::io::Write;

use serde_json::json;
use support::*;

fn lasso() -> (MockProvider, Lasso) {
    let p1 = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&p1]).yaml())
        .workers(1)
        .start();
    (p1, lasso)
}

/// Another client is still served, with its own id.
fn others_still_served(lasso: &Lasso, after: &str) {
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(4242), "eth_blockNumber", json!([])),
    );
    assert_eq!(r.status, 200, "{after}: {}", r.describe());
    assert_eq!(r.json()["id"], json!(4242), "{after}: {}", r.describe());
}

/// Sends a request head and then `body` in pieces (the server may answer and close before it has all of it), and
/// returns the answer.
fn send_head_and_body(lasso: &Lasso, head: &str, body: impl Iterator<Item = Vec<u8>>) -> Response {
    let mut conn = Conn::connect(lasso.addr());
    conn.send(head.as_bytes());
    for piece in body {
        if conn.try_send(&piece).is_err() {
            break; // refused and closed mid-body: the answer is already waiting
        }
    }
    conn.try_read_response()
        .expect("an answer before the connection closed")
}

const CHUNKED_HEAD: &str = "POST /rpc/ethereum HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

#[test]
fn trailer_floods_are_refused_with_413_and_cost_bounded_memory() {
    let (_p1, lasso) = lasso();
    let before = rss_bytes(lasso.pid());
    let body = rpc(json!(1), "eth_blockNumber", json!([]));
    // A valid body, then 64 MiB of trailer lines (the attack that once added 91 MiB of RSS).
    let first = format!("{:x}\r\n{body}\r\n0\r\n", body.len()).into_bytes();
    let trailer_line = b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let block: Vec<u8> = trailer_line.repeat(1 << 14); // ~1.6 MiB
    let r = send_head_and_body(
        &lasso,
        CHUNKED_HEAD,
        std::iter::once(first).chain(std::iter::repeat_n(block, 40)),
    );
    assert_eq!(r.status, 413, "trailer flood: {}", r.describe());
    assert_eq!(r.rpc_code(), Some(-32600), "{}", r.describe());
    let grown = rss_bytes(lasso.pid()).saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "64 MiB of trailers grew RSS by {grown} bytes (bound 8 MiB)"
    );
    // Far under the raw bound, but more trailer fields than any client needs.
    let few = format!(
        "{:x}\r\n{body}\r\n0\r\n{}\r\n",
        body.len(),
        "X-T: 1\r\n".repeat(40)
    )
    .into_bytes();
    let r = send_head_and_body(&lasso, CHUNKED_HEAD, std::iter::once(few));
    assert_eq!(r.status, 413, "40 trailer fields: {}", r.describe());
    others_still_served(&lasso, "trailer flood");
}

#[test]
fn chunk_framing_overhead_and_long_extensions_are_bounded() {
    let (_p1, lasso) = lasso();
    // One-byte chunks each carrying a 1000-byte extension: tiny decoded size, unbounded raw size before the fix.
    let ext = "a".repeat(1000);
    let piece = format!("1;e={ext}\r\n \r\n").into_bytes().repeat(1024); // ~1 MiB raw, 1 KiB decoded
    let r = send_head_and_body(&lasso, CHUNKED_HEAD, std::iter::repeat_n(piece, 16));
    assert_eq!(
        r.status,
        413,
        "16 MiB of chunk framing for 16 KiB of body: {}",
        r.describe()
    );

    // An extension over 1 KiB in one chunk line.
    let long = format!("1;e={}\r\n \r\n", "b".repeat(4096)).into_bytes();
    let r = send_head_and_body(&lasso, CHUNKED_HEAD, std::iter::once(long));
    assert_eq!(r.status, 400, "a 4 KiB chunk extension: {}", r.describe());
    others_still_served(&lasso, "chunk framing floods");
}

#[test]
fn framing_leniencies_are_refused() {
    let (p1, lasso) = lasso();
    let body = rpc(json!(1), "eth_blockNumber", json!([]));
    let n = body.len();
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length: +N",
            format!("POST /rpc/ethereum HTTP/1.1\r\nHost: x\r\nContent-Length: +{n}\r\n\r\n{body}"),
        ),
        (
            "chunk size +N",
            format!("{}+{n:x}\r\n{body}\r\n0\r\n\r\n", CHUNKED_HEAD),
        ),
        (
            "chunk size 0xN",
            format!("{}0x{n:x}\r\n{body}\r\n0\r\n\r\n", CHUNKED_HEAD),
        ),
        (
            "bare LF inside a chunk extension",
            format!("{}{n:x};a=b\nc\r\n{body}\r\n0\r\n\r\n", CHUNKED_HEAD),
        ),
        (
            "bare CR inside a chunk extension",
            format!("{}{n:x};a=b\rc\r\n{body}\r\n0\r\n\r\n", CHUNKED_HEAD),
        ),
    ];
    for (what, raw) in cases {
        let mut conn = Conn::connect(lasso.addr());
        conn.send(raw.as_bytes());
        let r = conn.read_response();
        assert_eq!(r.status, 400, "{what}: {}", r.describe());
        assert_eq!(r.rpc_code(), Some(-32600), "{what}: {}", r.describe());
    }
    assert_eq!(
        p1.count("eth_blockNumber"),
        0,
        "a leniently framed request reached the provider"
    );
    others_still_served(&lasso, "framing leniencies");
}

/// Reads what the server sends within a short wait after the head, without sending the body.
fn interim_after_head(lasso: &Lasso, head: &str) -> String {
    let mut stream = std::net::TcpStream::connect(lasso.addr()).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn continue_is_sent_only_to_http11_clients_on_a_known_route() {
    let (_p1, lasso) = lasso();
    let head10 = "POST /rpc/ethereum HTTP/1.0\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
    let got = interim_after_head(&lasso, head10);
    assert!(
        !got.contains("100 Continue"),
        "HTTP/1.0 client got an interim answer: {got:?}"
    );

    let unknown =
        "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
    let got = interim_after_head(&lasso, unknown);
    assert!(
        !got.contains("100 Continue"),
        "100 Continue before routing: {got:?}"
    );
    assert!(got.starts_with("HTTP/1.1 404"), "unknown route: {got:?}");

    let known = "POST /rpc/ethereum HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
    let got = interim_after_head(&lasso, known);
    assert!(
        got.starts_with("HTTP/1.1 100 Continue"),
        "known route, HTTP/1.1: {got:?}"
    );
    others_still_served(&lasso, "expect: 100-continue");
}
