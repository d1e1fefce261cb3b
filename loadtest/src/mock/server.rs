//! Connection handling of the mock provider: one monoio runtime per worker thread accepting on its own SO_REUSEPORT
//! listener; HTTP/1.1 keep-alive requests (JSON-RPC on any POST path, `GET|POST /control`, `GET /health`), fault
//! injection per request, and WebSocket sessions (RFC 6455) with `eth_subscribe` newHeads/logs pushed as blocks appear.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_util::StreamExt;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use serde_json::Value;

use super::faults::{Faults, bump};
use super::{MockChain, rpc};
use crate::chain::LogFilter;
use crate::http::{self, RequestHead};
use crate::rng::Rng;
use crate::ws::{self, Assembler, Message};

/// Per-worker context: shared state plus a worker-local RNG and cached faults.
pub struct Worker {
    pub state: Arc<MockChain>,
    rng: RefCell<Rng>,
    faults: RefCell<(u64, Arc<Faults>)>,
}

impl Worker {
    fn faults(&self) -> Arc<Faults> {
        let v = self.state.faults_version();
        let mut c = self.faults.borrow_mut();
        if c.0 != v {
            *c = (v, self.state.faults());
        }
        c.1.clone()
    }
}

/// Runs one worker's event loop on the calling thread (never returns once listening).
pub fn run_worker(
    state: Arc<MockChain>,
    listener: std::net::TcpListener,
    index: u64,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let w = Rc::new(Worker {
            state: state.clone(),
            rng: RefCell::new(Rng::new(
                index.wrapping_add(0x5EED) ^ std::process::id() as u64,
            )),
            faults: RefCell::new((state.faults_version(), state.faults())),
        });
        let _ = ready.send(Ok(()));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(handle_conn(w.clone(), stream));
                }
                Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
}

enum Action {
    Respond { delay: Duration, close: bool },
    Reset,
    Hang(Duration),
}

async fn handle_conn(w: Rc<Worker>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    bump(&w.state.counters.connections);
    let idle = Duration::from_millis(w.state.idle_timeout_ms.max(1));
    let max_body = w.state.max_body_bytes;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head =
            match monoio::time::timeout(idle, http::read_request_head(&mut stream, buf)).await {
                Ok((Ok(Some(h)), b)) => {
                    buf = b;
                    h
                }
                _ => return,
            };
        if head.upgrade_websocket {
            ws_session(w, stream, head, buf).await;
            return;
        }
        let (res, b) = match monoio::time::timeout(
            idle,
            http::read_body(&mut stream, buf, head.head_len, head.body_kind(), max_body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return,
        };
        buf = b;
        let body = match res {
            Ok(body) => body,
            Err(e) => {
                let status = if e.to_string().contains("too large") {
                    413
                } else {
                    400
                };
                let mut out = Vec::new();
                let msg = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{{\"code\":-32600,\"message\":\"{status}\"}}}}"
                );
                http::write_response_head(
                    &mut out,
                    status,
                    "application/json",
                    msg.len(),
                    &[],
                    true,
                );
                out.extend_from_slice(msg.as_bytes());
                let _ = http::write_all(&mut stream, out).await;
                return;
            }
        };
        let mut out = Vec::new();
        let action = route(&w, &head, body.bytes(&buf), &mut out);
        http::consume(&mut buf, body.consumed);
        match action {
            Action::Reset => {
                crate::sys::set_linger_zero(stream.as_raw_fd());
                return;
            }
            Action::Hang(d) => {
                hang(&mut stream, d).await;
                return;
            }
            Action::Respond { delay, close } => {
                if !delay.is_zero() {
                    monoio::time::sleep(delay).await;
                }
                w.state
                    .counters
                    .bytes_out
                    .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let (res, _) = http::write_all(&mut stream, out).await;
                if res.is_err() || close || !head.keep_alive {
                    return;
                }
            }
        }
    }
}

/// Holds the connection without answering until the peer closes it or `d` passes.
async fn hang(stream: &mut TcpStream, d: Duration) {
    let _ = monoio::time::timeout(d, async {
        let mut b = Vec::with_capacity(4096);
        loop {
            b.clear();
            let (res, nb) = stream.read(b).await;
            b = nb;
            if !matches!(res, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
}

fn respond(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) {
    http::write_response_head(out, status, content_type, body.len(), extra, false);
    out.extend_from_slice(body);
}

fn route(w: &Worker, head: &RequestHead, body: &[u8], out: &mut Vec<u8>) -> Action {
    let path = head.path.split('?').next().unwrap_or("/");
    let ok = Action::Respond {
        delay: Duration::ZERO,
        close: false,
    };
    match (head.method.as_str(), path) {
        ("GET", "/control") => {
            respond(
                out,
                200,
                "application/json",
                w.state.state().to_string().as_bytes(),
                &[],
            );
            ok
        }
        ("POST", "/control") => {
            let patch: Result<Value, String> = if body.trim_ascii().is_empty() {
                Ok(Value::Object(Default::default()))
            } else {
                serde_json::from_slice(body).map_err(|e| e.to_string())
            };
            match patch.and_then(|p| w.state.control(&p)) {
                Ok(state) => respond(
                    out,
                    200,
                    "application/json",
                    state.to_string().as_bytes(),
                    &[],
                ),
                Err(e) => respond(
                    out,
                    400,
                    "application/json",
                    serde_json::json!({ "error": e }).to_string().as_bytes(),
                    &[],
                ),
            }
            ok
        }
        ("GET", "/health") => {
            let f = w.faults();
            let body = format!(
                "{{\"status\":\"ok\",\"head\":{}}}",
                w.state.visible_head(&f)
            );
            respond(out, 200, "application/json", body.as_bytes(), &[]);
            ok
        }
        ("OPTIONS", _) => {
            http::write_response_head(
                out,
                204,
                "text/plain",
                0,
                &[("Access-Control-Allow-Origin", "*")],
                false,
            );
            ok
        }
        ("POST", _) => rpc_http(w, body, out),
        _ => {
            let msg = b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"POST JSON-RPC here\"}}";
            respond(out, 405, "application/json", msg, &[]);
            ok
        }
    }
}

fn rpc_http(w: &Worker, body: &[u8], out: &mut Vec<u8>) -> Action {
    let f = w.faults();
    let c = &w.state.counters;
    bump(&c.http_requests);
    let mut rng = w.rng.borrow_mut();
    let ok = Action::Respond {
        delay: Duration::ZERO,
        close: false,
    };
    if f.hang || rng.chance(f.hang_rate) {
        bump(&c.injected_hangs);
        return Action::Hang(Duration::from_millis(f.hang_ms));
    }
    if rng.chance(f.reset_rate) {
        bump(&c.injected_resets);
        return Action::Reset;
    }
    if rng.chance(f.garbage_rate) {
        bump(&c.injected_garbage);
        respond(
            out,
            200,
            "application/json",
            b"<html><body>502 Bad Gateway</body></html>\x00\xff garbage {{{",
            &[],
        );
        return ok;
    }
    if rng.chance(f.rate_limit_rate) {
        bump(&c.injected_rate_limits);
        let ra = f.retry_after_s.to_string();
        let msg = b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32005,\"message\":\"mock: rate limited\"}}";
        respond(out, 429, "application/json", msg, &[("Retry-After", &ra)]);
        return ok;
    }
    if rng.chance(f.error_rate) {
        bump(&c.injected_errors);
        let msg = b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"mock: injected error\"}}";
        respond(out, 500, "application/json", msg, &[]);
        return ok;
    }
    let mut methods = Vec::new();
    let answer = rpc::handle_body(&w.state, &f, &mut rng, body, &mut methods);
    let delay = if f.latency.is_empty() {
        Duration::ZERO
    } else {
        methods
            .iter()
            .map(|m| f.latency_for(m, &mut rng))
            .max()
            .unwrap_or_default()
    };
    respond(out, 200, "application/json", answer.as_bytes(), &[]);
    Action::Respond {
        delay,
        close: false,
    }
}

enum SubKind {
    NewHeads,
    Logs(LogFilter),
}

struct Sub {
    id: String,
    kind: SubKind,
    /// Last block notified.
    last: u64,
}

type Subs = Rc<RefCell<Vec<Sub>>>;

fn send_text(tx: &mpsc::UnboundedSender<Vec<u8>>, payload: &[u8]) {
    let mut f = Vec::with_capacity(payload.len() + 10);
    ws::encode_frame(&mut f, ws::OP_TEXT, payload, None);
    let _ = tx.unbounded_send(f);
}

async fn ws_session(w: Rc<Worker>, mut stream: TcpStream, head: RequestHead, mut buf: Vec<u8>) {
    let key = head.ws_key.clone().unwrap_or_default();
    http::consume(&mut buf, head.head_len);
    let (res, _) = http::write_all(&mut stream, ws::server_handshake(&key).into_bytes()).await;
    if res.is_err() {
        return;
    }
    let counters = &w.state.counters;
    counters
        .ws_connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fd = stream.as_raw_fd();
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded::<Vec<u8>>();
    monoio::spawn(ws_writer(wr, rx));
    let subs: Subs = Rc::new(RefCell::new(Vec::new()));
    let closed = Rc::new(Cell::new(false));
    monoio::spawn(ws_ticker(
        w.clone(),
        tx.clone(),
        subs.clone(),
        closed.clone(),
        fd,
    ));
    let max = w.state.max_body_bytes;
    let mut asm = Assembler::new(max);
    'outer: loop {
        loop {
            match ws::decode_frame(&buf, max, true) {
                Ok(Some((frame, used))) => {
                    http::consume(&mut buf, used);
                    match asm.push(frame) {
                        Ok(Some(Message::Text(t))) | Ok(Some(Message::Binary(t))) => {
                            bump(&counters.ws_messages);
                            ws_request(&w, &tx, &subs, &t);
                        }
                        Ok(Some(Message::Ping(p))) => {
                            let mut f = Vec::new();
                            ws::encode_frame(&mut f, ws::OP_PONG, &p, None);
                            let _ = tx.unbounded_send(f);
                        }
                        Ok(Some(Message::Pong(_))) | Ok(None) => {}
                        Ok(Some(Message::Close(_))) => {
                            let mut f = Vec::new();
                            ws::encode_close(&mut f, 1000, None);
                            let _ = tx.unbounded_send(f);
                            break 'outer;
                        }
                        Err(_) => {
                            let mut f = Vec::new();
                            ws::encode_close(&mut f, 1002, None);
                            let _ = tx.unbounded_send(f);
                            break 'outer;
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let mut f = Vec::new();
                    ws::encode_close(&mut f, 1002, None);
                    let _ = tx.unbounded_send(f);
                    break 'outer;
                }
            }
        }
        let (res, b) = http::read_more(&mut rd, buf, 4096).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            break;
        }
    }
    closed.set(true);
    let n = subs.borrow().len() as i64;
    subs.borrow_mut().clear();
    counters
        .ws_subscriptions_open
        .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    counters
        .ws_connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Writes queued frames, coalescing what is queued; shuts the socket down when every sender is gone.
async fn ws_writer<W: AsyncWriteRent>(mut wr: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut out) = rx.next().await {
        while out.len() < (1 << 20) {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                _ => break,
            }
        }
        let (res, _) = wr.write_all(out).await;
        if res.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

fn ws_request(w: &Rc<Worker>, tx: &mpsc::UnboundedSender<Vec<u8>>, subs: &Subs, text: &[u8]) {
    let f = w.faults();
    let trimmed = text.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        // Batches: plain calls only.
        let mut methods = Vec::new();
        let out = rpc::handle_body(&w.state, &f, &mut w.rng.borrow_mut(), trimmed, &mut methods);
        send_later(w, tx, out, &f, &methods);
        return;
    }
    let req: rpc::Req = match serde_json::from_slice(trimmed) {
        Ok(r) => r,
        Err(e) => {
            let mut out = String::new();
            rpc::write_error(&mut out, None, -32700, &format!("parse error: {e}"));
            send_text(tx, out.as_bytes());
            return;
        }
    };
    let method = req.method.as_deref().unwrap_or("");
    let params: Vec<Value> = req
        .params
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .and_then(|v| {
            if let Value::Array(a) = v {
                Some(a)
            } else {
                None
            }
        })
        .unwrap_or_default();
    let mut out = String::new();
    match method {
        "eth_subscribe" => {
            w.state.counters.count_method(method);
            let kind = match params.first().and_then(|v| v.as_str()) {
                Some("newHeads") => Some(SubKind::NewHeads),
                Some("logs") => Some(SubKind::Logs(LogFilter::from_json(
                    params.get(1).unwrap_or(&Value::Null),
                ))),
                _ => None,
            };
            match kind {
                Some(kind) => {
                    let id = w.state.new_subscription_id();
                    let last = w.state.visible_head(&f);
                    rpc::write_result(&mut out, req.id, &format!("\"{id}\""));
                    subs.borrow_mut().push(Sub { id, kind, last });
                    w.state
                        .counters
                        .ws_subscriptions_open
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                None => rpc::write_error(
                    &mut out,
                    req.id,
                    -32602,
                    "unsupported subscription (newHeads, logs)",
                ),
            }
            send_text(tx, out.as_bytes());
        }
        "eth_unsubscribe" => {
            w.state.counters.count_method(method);
            let id = params.first().and_then(|v| v.as_str()).unwrap_or("");
            let before = subs.borrow().len();
            subs.borrow_mut().retain(|s| s.id != id);
            let removed = before != subs.borrow().len();
            if removed {
                w.state
                    .counters
                    .ws_subscriptions_open
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            rpc::write_result(&mut out, req.id, if removed { "true" } else { "false" });
            send_text(tx, out.as_bytes());
        }
        _ => {
            let mut methods = Vec::new();
            rpc::respond_one(
                &w.state,
                &f,
                &mut w.rng.borrow_mut(),
                trimmed,
                &mut out,
                &mut methods,
            );
            send_later(w, tx, out, &f, &methods);
        }
    }
}

/// Sends an answer now, or after the configured latency (without blocking the session's other requests).
fn send_later(
    w: &Rc<Worker>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    out: String,
    f: &Faults,
    methods: &[String],
) {
    let delay = if f.latency.is_empty() {
        Duration::ZERO
    } else {
        let mut rng = w.rng.borrow_mut();
        methods
            .iter()
            .map(|m| f.latency_for(m, &mut rng))
            .max()
            .unwrap_or_default()
    };
    if delay.is_zero() {
        send_text(tx, out.as_bytes());
    } else {
        let tx = tx.clone();
        monoio::spawn(async move {
            monoio::time::sleep(delay).await;
            send_text(&tx, out.as_bytes());
        });
    }
}

/// Pushes subscription notifications as blocks appear; closes the socket on `drop_ws`.
async fn ws_ticker(
    w: Rc<Worker>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    subs: Subs,
    closed: Rc<Cell<bool>>,
    fd: i32,
) {
    let generation = w.state.ws_generation();
    let mut reorg_seen = w.state.chain.reorg_version();
    loop {
        let chain = &w.state.chain;
        let now = Instant::now();
        let next = chain.block_instant(chain.time_head() + 1);
        let wake = next.min(now + Duration::from_millis(250));
        monoio::time::sleep(wake.saturating_duration_since(now)).await;
        if closed.get() || tx.is_closed() {
            return;
        }
        if w.state.ws_generation() != generation {
            closed.set(true);
            crate::sys::shutdown_both(fd);
            return;
        }
        if subs.borrow().is_empty() {
            continue;
        }
        let f = w.faults();
        let head = w.state.visible_head(&f);
        let rv = chain.reorg_version();
        if rv != reorg_seen {
            reorg_seen = rv;
            if let Some(start) = chain.last_reorg_start() {
                for s in subs.borrow_mut().iter_mut() {
                    s.last = s.last.min(start.saturating_sub(1));
                }
            }
        }
        let mut subs = subs.borrow_mut();
        for s in subs.iter_mut() {
            if head <= s.last {
                continue;
            }
            let from = (s.last + 1).max(head.saturating_sub(63));
            for n in from..=head {
                match &s.kind {
                    SubKind::NewHeads => {
                        let h = cached_header(chain, n, rv);
                        notify(&w, &tx, &s.id, &h);
                    }
                    SubKind::Logs(filter) => {
                        for log in chain.logs_of_block(n) {
                            if filter.matches(&log.address, &log.topics) {
                                let mut l = String::new();
                                chain.write_log(&mut l, &log, 0);
                                notify(&w, &tx, &s.id, &l);
                            }
                        }
                    }
                }
            }
            s.last = head;
        }
    }
}

thread_local! {
    /// Recently rendered newHeads headers of this worker: (number, reorg version, JSON), shared by every subscriber.
    static HEADERS: RefCell<Vec<(u64, u64, Rc<str>)>> = const { RefCell::new(Vec::new()) };
}

/// The header of block `n`, rendered once per worker (and per reorg).
fn cached_header(chain: &crate::chain::Chain, n: u64, reorg_version: u64) -> Rc<str> {
    HEADERS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, _, h)) = c.iter().find(|(k, v, _)| *k == n && *v == reorg_version) {
            return h.clone();
        }
        let h: Rc<str> = chain.header_json(n).into();
        c.retain(|(k, v, _)| *v == reorg_version && *k + 64 > n);
        c.push((n, reorg_version, h.clone()));
        h
    })
}

fn notify(w: &Worker, tx: &mpsc::UnboundedSender<Vec<u8>>, sub: &str, result: &str) {
    let mut m = String::with_capacity(result.len() + 120);
    m.push_str(
        "{\"jsonrpc\":\"2.0\",\"method\":\"eth_subscription\",\"params\":{\"subscription\":\"",
    );
    m.push_str(sub);
    m.push_str("\",\"result\":");
    m.push_str(result);
    m.push_str("}}");
    bump(&w.state.counters.notifications);
    send_text(tx, m.as_bytes());
}
