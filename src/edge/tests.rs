//! In-process tests of the connection loop: a shard built from configuration text, `serve_connection` on a loopback
//! listener of the test's own runtime, a scripted provider behind it, and a raw TCP client writing exact bytes
//! (pipelined requests, oversized heads and bodies, half-sent heads, `Connection: close`). Each test runs on io_uring
//! and on the legacy driver.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use serde_json::Value;

use crate::edge::conn::serve_connection;
use crate::shard::testing::{Answer, Scripted, on_both_drivers, shard};
use crate::subscriptions::hub::Hub;
use crate::wire::http::io::{read_more, write_all};

/// How long a test waits for an answer it expects.
const PATIENCE: Duration = Duration::from_secs(5);

/// A one-chain config over `provider` with these `server` settings.
fn config(provider: &Scripted, server: &str) -> String {
    format!(
        "server: {{ {server} }}\nupstream: {{ coalesce: false }}\n\
         routing: {{ probe_share: 0.0, hedge: {{ enabled: false }} }}\n\
         chains:\n  ethereum:\n    chain_id: 1\n    default_strategy: priority\n    providers:\n\
         \x20     - {{ id: p1, url: \"{}\" }}\n",
        provider.url
    )
}

/// Serves connections of `yaml`'s worker on a loopback port (keep-alive allowed when `keep_alive`).
fn listen(yaml: &str, keep_alive: bool) -> SocketAddr {
    let worker = shard(yaml);
    let hub = Rc::new(Hub::new(1 << 30));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    monoio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            monoio::spawn(serve_connection(
                worker.clone(),
                hub.clone(),
                stream,
                keep_alive,
            ));
        }
    });
    addr
}

/// One answer as the client reads it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A raw client connection with its unread bytes.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl Into<Vec<u8>>) {
        let (res, _) = write_all(&mut self.stream, bytes.into()).await;
        res.expect("send");
    }

    /// Reads more bytes; false at the end of the stream.
    async fn read(&mut self, deadline: Instant) -> bool {
        let within = deadline.saturating_duration_since(Instant::now());
        let read = read_more(&mut self.stream, std::mem::take(&mut self.buf), 4096);
        let (res, buf) = monoio::time::timeout(within, read)
            .await
            .expect("the server neither answered nor closed in time");
        self.buf = buf;
        matches!(res, Ok(n) if n > 0)
    }

    /// The next whole answer.
    async fn reply(&mut self) -> Reply {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed.parse(&self.buf).expect("HTTP") {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let status = parsed.code.unwrap();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().unwrap());
                if self.buf.len() >= head_len + length {
                    let body = &self.buf[head_len..head_len + length];
                    let body = if body.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(body).expect("a JSON body")
                    };
                    self.buf.drain(..head_len + length);
                    return Reply {
                        status,
                        headers,
                        body,
                    };
                }
            }
            assert!(
                self.read(deadline).await,
                "closed before a whole answer: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    async fn closed(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while self.read(deadline).await {}
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

fn post(id: u32, method: &str, extra_headers: &str) -> String {
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":[]}}"#);
    format!(
        "POST /rpc/ethereum HTTP/1.1\r\nHost: lasso\r\nContent-Type: application/json\r\n{extra_headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A provider whose `eth_blockNumber` is slow and every other call quick.
fn provider() -> Scripted {
    Scripted::start(
        |method| match method {
            "eth_blockNumber" => Answer::After(
                Duration::from_millis(100),
                Box::new(Answer::Result("\"0x10\"")),
            ),
            _ => Answer::Result("\"0x20\""),
        },
        false,
    )
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    on_both_drivers(|| async {
        let p = provider();
        let addr = listen(&config(&p, ""), true);
        let mut c = Client::connect(addr).await;
        // Four requests in one write: a slow upstream call, a local answer, a quick upstream call, a slow one again.
        let calls = [
            (1, "eth_blockNumber", "0x10"),
            (2, "eth_chainId", "0x1"),
            (3, "eth_gasPrice", "0x20"),
            (4, "eth_blockNumber", "0x10"),
        ];
        let burst: String = calls.iter().map(|(id, m, _)| post(*id, m, "")).collect();
        c.send(burst).await;
        for (id, _, result) in calls {
            let reply = c.reply().await;
            assert_eq!(
                (reply.status, &reply.body["id"], &reply.body["result"]),
                (200, &Value::from(id), &Value::from(result))
            );
            assert!(
                !reply.closes(),
                "keep-alive holds between pipelined requests"
            );
        }
        // The connection is still open for the next request.
        c.send(post(5, "eth_chainId", "")).await;
        assert_eq!(c.reply().await.body["id"], 5);
        assert_eq!(p.count("eth_blockNumber"), 2);
    });
}

#[test]
fn keep_alive_holds_unless_the_client_or_the_server_says_close() {
    on_both_drivers(|| async {
        let p = provider();
        let yaml = config(&p, "");
        let addr = listen(&yaml, true);
        // HTTP/1.1 keeps the connection by default, and closes after `Connection: close`.
        let mut c = Client::connect(addr).await;
        for id in 1..=2 {
            c.send(post(id, "eth_chainId", "")).await;
            let reply = c.reply().await;
            assert_eq!((reply.status, reply.closes()), (200, false));
        }
        c.send(post(3, "eth_chainId", "Connection: close\r\n"))
            .await;
        let reply = c.reply().await;
        assert_eq!(
            (reply.status, reply.closes(), &reply.body["id"]),
            (200, true, &Value::from(3))
        );
        c.closed().await;
        // HTTP/1.0 closes unless it asks for keep-alive.
        let mut c = Client::connect(addr).await;
        c.send(post(4, "eth_chainId", "").replace("HTTP/1.1", "HTTP/1.0"))
            .await;
        assert!(c.reply().await.closes());
        c.closed().await;
        let mut c = Client::connect(addr).await;
        let keep =
            post(5, "eth_chainId", "Connection: keep-alive\r\n").replace("HTTP/1.1", "HTTP/1.0");
        c.send(keep.clone()).await;
        assert!(!c.reply().await.closes());
        c.send(keep).await;
        assert_eq!(c.reply().await.body["id"], 5);
        // A server past its soft connection limit answers and closes.
        let crowded = listen(&yaml, false);
        let mut c = Client::connect(crowded).await;
        c.send(post(6, "eth_chainId", "")).await;
        let reply = c.reply().await;
        assert_eq!((reply.status, reply.closes()), (200, true));
        c.closed().await;
    });
}

#[test]
fn an_oversized_head_gets_431_and_the_connection_closes() {
    on_both_drivers(|| async {
        let p = provider();
        let addr = listen(&config(&p, "max_header_bytes: 1024"), true);
        // Just under the limit is served.
        let mut c = Client::connect(addr).await;
        let fits = format!("X-Pad: {}\r\n", "a".repeat(700));
        c.send(post(1, "eth_chainId", &fits)).await;
        assert_eq!(c.reply().await.status, 200);
        let big = format!("X-Pad: {}\r\n", "a".repeat(1100));
        c.send(post(2, "eth_chainId", &big)).await;
        let reply = c.reply().await;
        assert_eq!(
            (reply.status, &reply.body["error"]["code"], reply.closes()),
            (431, &Value::from(-32600), true)
        );
        c.closed().await;
    });
}

#[test]
fn an_oversized_body_gets_413_at_the_head_and_the_connection_closes() {
    on_both_drivers(|| async {
        let p = provider();
        let addr = listen(&config(&p, "max_body_bytes: 1000"), true);
        // By Content-Length: refused before the body is sent.
        let mut c = Client::connect(addr).await;
        c.send("POST /rpc/ethereum HTTP/1.1\r\nHost: lasso\r\nContent-Length: 1001\r\n\r\n")
            .await;
        let reply = c.reply().await;
        assert_eq!(
            (reply.status, &reply.body["error"]["code"], reply.closes()),
            (413, &Value::from(-32600), true)
        );
        c.closed().await;
        // Chunked: refused once the decoded body passes the limit.
        let mut c = Client::connect(addr).await;
        let chunk = format!("{:x}\r\n{}\r\n", 600, " ".repeat(600));
        c.send(format!(
            "POST /rpc/ethereum HTTP/1.1\r\nHost: lasso\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}"
        ))
        .await;
        let reply = c.reply().await;
        assert_eq!((reply.status, reply.closes()), (413, true));
        c.closed().await;
        assert_eq!(p.received.borrow().len(), 0);
    });
}

#[test]
fn a_head_not_finished_within_the_header_timeout_is_closed_quietly() {
    on_both_drivers(|| async {
        let p = provider();
        let addr = listen(
            &config(&p, "header_timeout_ms: 200, idle_timeout_ms: 5000"),
            true,
        );
        // A slowloris: half a head, then nothing. Closed after the header timeout, not the idle timeout.
        let mut c = Client::connect(addr).await;
        let started = Instant::now();
        c.send("POST /rpc/ethereum HTTP/1.1\r\nHost: lasso\r\n")
            .await;
        c.closed().await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "closed after {took:?}"
        );
        // An idle keep-alive connection is not cut by the header timeout.
        let mut c = Client::connect(addr).await;
        c.send(post(1, "eth_chainId", "")).await;
        assert_eq!(c.reply().await.status, 200);
        monoio::time::sleep(Duration::from_millis(400)).await;
        c.send(post(2, "eth_chainId", "")).await;
        assert_eq!(c.reply().await.body["id"], 2);
    });
}

#[test]
fn a_body_not_finished_within_the_body_timeout_is_closed_quietly() {
    on_both_drivers(|| async {
        let p = provider();
        let addr = listen(
            &config(&p, "body_timeout_ms: 200, idle_timeout_ms: 5000"),
            true,
        );
        let mut c = Client::connect(addr).await;
        let started = Instant::now();
        c.send(
            "POST /rpc/ethereum HTTP/1.1\r\nHost: lasso\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
        )
        .await;
        c.closed().await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "closed after {took:?}"
        );
        assert_eq!(p.received.borrow().len(), 0);
    });
}
