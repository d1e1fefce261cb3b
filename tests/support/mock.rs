//! Mock JSON-RPC upstream providers: a real HTTP/1.1 server on std threads.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fixtures::Fixture;
use super::http::{BufStream, Head, parse_request_head};

/// Header Lasso puts on its health probes (docs/CONTRACT.md, "Health probes").
pub const PROBE_HEADER: &str = "x-lasso-probe";

/// How the provider misbehaves. Switchable at any time with [`MockProvider::set_fault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Wait this many milliseconds, then answer normally.
    Delay(u64),
    /// Answer with this HTTP status and a short non-JSON-RPC body.
    Status(u16),
    /// 429 with `Retry-After`.
    RateLimited { retry_after_s: u64 },
    /// Read the request, never answer (until the client goes away or the mock stops/restarts).
    Hang,
    /// Write half of a normal response, then close with RST (SO_LINGER 0).
    ResetMidResponse,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Listener closed (port kept reserved, not listening): connects are refused. Entering this mode
    /// also closes every open connection.
    Refuse,
    /// Answer normally (without announcing `Connection: close`), then close the connection.
    CloseAfterResponse,
    /// A normal answer followed, in the same body, by a second forged reply object.
    AppendObject,
}

/// One HTTP request as the provider saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or a JSON string holding the raw text when it was not JSON.
    pub body: Value,
    /// The body exactly as received.
    pub raw: Vec<u8>,
    /// A Lasso health probe (`X-Lasso-Probe: health`), not client traffic.
    pub probe: bool,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::header_of(&self.headers, name)
    }
}

#[derive(Clone, Debug)]
enum Answer {
    Result(Value),
    Error(Value),
}

/// Recorded exchanges by method: (params, response).
type ReplayTable = HashMap<String, Vec<(Value, Value)>>;

struct State {
    fault: Fault,
    /// Bumped whenever every connection must go away (restart, Refuse, drop).
    epoch: u64,
    shutdown: bool,
    answers: HashMap<String, Answer>,
    default_result: Option<Value>,
    replay: Option<Arc<ReplayTable>>,
    chunked: bool,
    gzip: bool,
    requests: Vec<Recorded>,
    /// Client traffic only (health probes are counted in `probe_counts`).
    counts: HashMap<String, usize>,
    probe_counts: HashMap<String, usize>,
    /// While refusing: a socket bound to our port but not listening, so the port stays ours.
    held: Option<socket2::Socket>,
}

struct Inner {
    name: String,
    addr: SocketAddr,
    state: Mutex<State>,
    /// Signalled on every recorded request and every epoch change.
    cv: Condvar,
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_conn: AtomicU64,
}

struct AcceptLoop {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// A JSON-RPC provider on 127.0.0.1:<random port>. Echo mode by default: every call is answered with
/// `{"provider": name, "method": method, "params": params}`. Threads stop on drop.
pub struct MockProvider {
    inner: Arc<Inner>,
    accept: Mutex<Option<AcceptLoop>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockProvider {
    /// Starts an echo provider called `name`.
    pub fn start(name: &str) -> MockProvider {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock provider");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            name: name.to_string(),
            addr,
            state: Mutex::new(State {
                fault: Fault::None,
                epoch: 0,
                shutdown: false,
                answers: HashMap::new(),
                default_result: None,
                replay: None,
                chunked: false,
                gzip: false,
                requests: Vec::new(),
                counts: HashMap::new(),
                probe_counts: HashMap::new(),
                held: None,
            }),
            cv: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
        });
        let mock = MockProvider {
            inner,
            accept: Mutex::new(None),
        };
        mock.spawn_accept(listener);
        mock
    }

    /// A provider that answers from recorded `.io` fixtures: a call is matched by (method, params)
    /// and answered with the recorded response carrying the id the call arrived with.
    /// Unmatched calls get a -32601 error naming the method.
    pub fn replay(name: &str, fixtures: &[Fixture]) -> MockProvider {
        let mut table = ReplayTable::new();
        for f in fixtures {
            for (req, resp) in &f.pairs {
                let req: Value = serde_json::from_str(req).expect("fixture request JSON");
                let resp: Value = serde_json::from_str(resp).expect("fixture response JSON");
                let method = req["method"].as_str().unwrap_or_default().to_string();
                let params = req.get("params").cloned().unwrap_or(Value::Null);
                table.entry(method).or_default().push((params, resp));
            }
        }
        let mock = MockProvider::start(name);
        lock(&mock.inner.state).replay = Some(Arc::new(table));
        mock
    }

    /// Every method without an explicit answer returns a string result of exactly `bytes` bytes
    /// (see [`big_result`]).
    pub fn with_big_result(self, bytes: usize) -> MockProvider {
        self.set_default_result(Some(Value::String(big_result(bytes))));
        self
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn port(&self) -> u16 {
        self.inner.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Answer `eth_chainId` (health probes included) with this `"0x.."` chain id.
    pub fn set_chain_id(&self, hex: &str) {
        self.set_result("eth_chainId", Value::String(hex.to_string()));
    }

    /// Answer `method` with this result.
    pub fn set_result(&self, method: &str, result: Value) {
        lock(&self.inner.state)
            .answers
            .insert(method.to_string(), Answer::Result(result));
    }

    /// Answer `method` with this JSON-RPC error object (e.g. `{"code":3,"message":"execution reverted","data":"0x.."}`).
    pub fn set_error(&self, method: &str, error: Value) {
        lock(&self.inner.state)
            .answers
            .insert(method.to_string(), Answer::Error(error));
    }

    pub fn clear_answers(&self) {
        lock(&self.inner.state).answers.clear();
    }

    /// Result used for methods without an explicit answer (None = echo).
    pub fn set_default_result(&self, result: Option<Value>) {
        lock(&self.inner.state).default_result = result;
    }

    /// Respond with `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub fn set_chunked(&self, on: bool) {
        lock(&self.inner.state).chunked = on;
    }

    /// Respond with gzip-compressed bodies and `Content-Encoding: gzip` (whatever the request accepts).
    pub fn set_gzip(&self, on: bool) {
        lock(&self.inner.state).gzip = on;
    }

    pub fn fault(&self) -> Fault {
        lock(&self.inner.state).fault.clone()
    }

    /// Switches the fault mode; takes effect for the next request read (already running Delay/Hang
    /// requests are not affected). Entering/leaving `Refuse` closes/reopens the listener.
    pub fn set_fault(&self, fault: Fault) {
        let old = {
            let mut st = lock(&self.inner.state);
            std::mem::replace(&mut st.fault, fault.clone())
        };
        match (old == Fault::Refuse, fault == Fault::Refuse) {
            (false, true) => {
                self.stop_accept();
                self.close_connections();
                let held = bind_retry(self.inner.addr, false);
                lock(&self.inner.state).held = Some(held);
            }
            (true, false) => {
                let held = lock(&self.inner.state).held.take();
                let listener = match held {
                    Some(sock) => {
                        sock.listen(1024).expect("listen on held mock socket");
                        TcpListener::from(sock)
                    }
                    None => TcpListener::from(bind_retry(self.inner.addr, true)),
                };
                self.spawn_accept(listener);
            }
            _ => {}
        }
    }

    /// Closes the listener and every open connection (pooled client connections go stale), then
    /// listens on the same port again.
    pub fn restart(&self) {
        let refusing = lock(&self.inner.state).fault == Fault::Refuse;
        if refusing {
            self.close_connections();
            return;
        }
        self.stop_accept();
        self.close_connections();
        let listener = TcpListener::from(bind_retry(self.inner.addr, true));
        self.spawn_accept(listener);
    }

    /// Every client request body received (batch bodies as arrays), in arrival order.
    /// Health probes are left out (see [`MockProvider::probes`]).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.inner.state)
            .requests
            .iter()
            .filter(|r| !r.probe)
            .map(|r| r.body.clone())
            .collect()
    }

    /// Every HTTP request received (client traffic and health probes), with path and headers.
    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.inner.state).requests.clone()
    }

    /// Health probes received (`X-Lasso-Probe: health`).
    pub fn probes(&self) -> Vec<Recorded> {
        lock(&self.inner.state)
            .requests
            .iter()
            .filter(|r| r.probe)
            .cloned()
            .collect()
    }

    /// Number of health-probe calls of `method` received.
    pub fn probe_count(&self, method: &str) -> usize {
        lock(&self.inner.state)
            .probe_counts
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Number of client HTTP requests received (health probes left out).
    pub fn received(&self) -> usize {
        lock(&self.inner.state)
            .requests
            .iter()
            .filter(|r| !r.probe)
            .count()
    }

    /// Every client JSON-RPC call received (batch members flattened, health probes left out), in
    /// arrival order.
    pub fn calls(&self) -> Vec<Value> {
        let st = lock(&self.inner.state);
        let mut out = Vec::new();
        for r in st.requests.iter().filter(|r| !r.probe) {
            match &r.body {
                Value::Array(items) => out.extend(items.iter().cloned()),
                v => out.push(v.clone()),
            }
        }
        out
    }

    /// Number of client JSON-RPC calls of `method` received (batch members counted one by one;
    /// health probes left out).
    pub fn count(&self, method: &str) -> usize {
        lock(&self.inner.state)
            .counts
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Total number of client JSON-RPC calls received (health probes left out).
    pub fn total_calls(&self) -> usize {
        lock(&self.inner.state).counts.values().sum()
    }

    /// Waits until `count(method) >= n` (client traffic); false at the deadline.
    pub fn wait_for_count(&self, method: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        loop {
            if st.counts.get(method).copied().unwrap_or(0) >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Currently open server-side connections.
    pub fn open_connections(&self) -> usize {
        lock(&self.inner.conns).len()
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let stop2 = stop.clone();
        let handle = thread::Builder::new()
            .name(format!("mock-{}-accept", self.inner.name))
            .spawn(move || accept_loop(inner, listener, stop2))
            .expect("spawn accept thread");
        *lock(&self.accept) = Some(AcceptLoop { stop, handle });
    }

    fn stop_accept(&self) {
        let Some(acc) = lock(&self.accept).take() else {
            return;
        };
        acc.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() by connecting to ourselves.
        let _ = TcpStream::connect_timeout(&self.inner.addr, Duration::from_secs(2));
        let _ = acc.handle.join();
    }

    fn close_connections(&self) {
        {
            let mut st = lock(&self.inner.state);
            st.epoch += 1;
        }
        self.inner.cv.notify_all();
        let conns: Vec<TcpStream> = lock(&self.inner.conns).drain().map(|(_, s)| s).collect();
        for c in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        drop(conns);
        let threads: Vec<JoinHandle<()>> = lock(&self.inner.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        lock(&self.inner.state).shutdown = true;
        self.stop_accept();
        self.close_connections();
        lock(&self.inner.state).held = None;
    }
}

/// Binds `addr` again (SO_REUSEADDR), retrying for a few seconds in case something grabbed the port
/// in the meantime. `listen` false returns a bound but not listening socket (connects get refused).
fn bind_retry(addr: SocketAddr, listen: bool) -> socket2::Socket {
    use socket2::{Domain, Protocol, Socket, Type};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = (|| -> io::Result<Socket> {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            if listen {
                s.listen(1024)?;
            }
            Ok(s)
        })();
        match res {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                // The port is briefly unavailable; nothing to wait on but time.
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("mock provider cannot re-bind {addr}: {e}"),
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener, stop: Arc<AtomicBool>) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // e.g. EMFILE: avoid a hot loop
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let epoch = {
            let st = lock(&inner.state);
            if st.shutdown {
                return;
            }
            st.epoch
        };
        let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
        match stream.try_clone() {
            Ok(clone) => {
                lock(&inner.conns).insert(id, clone);
            }
            Err(_) => continue,
        }
        let inner2 = inner.clone();
        let handle = thread::Builder::new()
            .name(format!("mock-{}-conn{id}", inner.name))
            .spawn(move || {
                serve_conn(&inner2, stream, id, epoch);
                lock(&inner2.conns).remove(&id);
            });
        match handle {
            Ok(h) => {
                let mut threads = lock(&inner.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(h);
            }
            Err(_) => {
                lock(&inner.conns).remove(&id);
            }
        }
    }
}

struct Request {
    head: Head,
    body: Vec<u8>,
}

fn read_request(io: &mut BufStream) -> io::Result<Option<Request>> {
    let Some(raw) = io.read_head(1024 * 1024)? else {
        return Ok(None);
    };
    let head = parse_request_head(&raw)?;
    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        io.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if head.is_chunked() {
        io.read_chunked()?
    } else if let Some(n) = head.content_length()? {
        io.read_exact_vec(n)?
    } else {
        Vec::new()
    };
    Ok(Some(Request { head, body }))
}

impl Inner {
    fn epoch_changed(&self, epoch: u64) -> bool {
        let st = lock(&self.state);
        st.shutdown || st.epoch != epoch
    }

    /// Waits `timeout` (None = forever) unless the epoch changes first. True when it changed.
    fn wait_epoch(&self, epoch: u64, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        loop {
            if st.shutdown || st.epoch != epoch {
                return true;
            }
            match deadline {
                None => {
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    st = self
                        .cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    fn record(&self, req: &Request) -> Option<Value> {
        let parsed: Option<Value> = serde_json::from_slice(&req.body).ok();
        let probe = req
            .head
            .header(PROBE_HEADER)
            .is_some_and(|v| v.eq_ignore_ascii_case("health"));
        let mut st = lock(&self.state);
        if let Some(v) = &parsed {
            let calls: Vec<&Value> = match v {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            let counts = if probe {
                &mut st.probe_counts
            } else {
                &mut st.counts
            };
            for c in calls {
                if let Some(m) = c.get("method").and_then(Value::as_str) {
                    *counts.entry(m.to_string()).or_insert(0) += 1;
                }
            }
        }
        st.requests.push(Recorded {
            method: req.head.method.clone(),
            path: req.head.path.clone(),
            headers: req.head.headers.clone(),
            body: parsed
                .clone()
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&req.body).to_string())),
            raw: req.body.clone(),
            probe,
            at: Instant::now(),
        });
        drop(st);
        self.cv.notify_all();
        parsed
    }

    fn answer_call(&self, call: &Value) -> Option<Value> {
        let Some(obj) = call.as_object() else {
            return Some(
                json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request"}}),
            );
        };
        let id = obj.get("id")?.clone();
        let method = obj.get("method").and_then(Value::as_str).unwrap_or("");
        let params = obj.get("params").cloned().unwrap_or(Value::Null);
        let st = lock(&self.state);
        if let Some(table) = &st.replay {
            let found = table
                .get(method)
                .and_then(|rows| rows.iter().find(|(p, _)| *p == params));
            return Some(match found {
                Some((_, resp)) => {
                    let mut resp = resp.clone();
                    resp["id"] = id;
                    resp
                }
                None => json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,
                    "message":format!("replay: no fixture for {method} with params {params}")}}),
            });
        }
        Some(match st.answers.get(method) {
            Some(Answer::Result(r)) => json!({"jsonrpc":"2.0","id":id,"result":r}),
            Some(Answer::Error(e)) => json!({"jsonrpc":"2.0","id":id,"error":e}),
            None => match &st.default_result {
                Some(r) => json!({"jsonrpc":"2.0","id":id,"result":r}),
                None => json!({"jsonrpc":"2.0","id":id,"result":{
                    "provider": self.name, "method": method, "params": params}}),
            },
        })
    }

    /// The JSON-RPC answer body for a request body (empty when nothing needs an answer).
    fn answer_body(&self, parsed: Option<&Value>) -> Vec<u8> {
        let answer = match parsed {
            None => Some(
                json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}),
            ),
            Some(Value::Array(items)) => {
                let answers: Vec<Value> =
                    items.iter().filter_map(|c| self.answer_call(c)).collect();
                if answers.is_empty() {
                    None
                } else {
                    Some(Value::Array(answers))
                }
            }
            Some(call) => self.answer_call(call),
        };
        answer
            .map(|a| serde_json::to_vec(&a).unwrap())
            .unwrap_or_default()
    }
}

fn status_reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Mock Status",
    }
}

/// Serialises a response (head + body) honouring the chunked/gzip switches.
fn render(
    status: u16,
    extra: &[(&str, String)],
    body: &[u8],
    chunked: bool,
    gzip: bool,
    content_type: &str,
) -> Vec<u8> {
    let body: Vec<u8> = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).unwrap();
        enc.finish().unwrap()
    } else {
        body.to_vec()
    };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", status_reason(status));
    head.push_str(&format!("Content-Type: {content_type}\r\n"));
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    let mut out;
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out = head.into_bytes();
        // deliberately irregular chunk sizes
        let mut rest = &body[..];
        let mut size = 1usize;
        while !rest.is_empty() {
            let n = size.min(rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            size = if size >= 64 * 1024 { 7 } else { size * 4 + 3 };
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out = head.into_bytes();
        out.extend_from_slice(&body);
    }
    out
}

fn serve_conn(inner: &Inner, stream: TcpStream, id: u64, epoch: u64) {
    let mut io = BufStream::new(stream);
    loop {
        let req = match read_request(&mut io) {
            Ok(Some(r)) => r,
            _ => return,
        };
        if inner.epoch_changed(epoch) {
            return;
        }
        let parsed = inner.record(&req);
        let (fault, chunked, gzip) = {
            let st = lock(&inner.state);
            (st.fault.clone(), st.chunked, st.gzip)
        };
        let close_requested = req.head.version == 0 || req.head.has_token("connection", "close");
        let close_hdr: Vec<(&str, String)> = if close_requested {
            vec![("Connection", "close".to_string())]
        } else {
            Vec::new()
        };
        let normal = |inner: &Inner| {
            let body = inner.answer_body(parsed.as_ref());
            render(200, &close_hdr, &body, chunked, gzip, "application/json")
        };
        let bytes = match &fault {
            Fault::None | Fault::CloseAfterResponse => normal(inner),
            Fault::AppendObject => {
                let mut body = inner.answer_body(parsed.as_ref());
                body.extend_from_slice(br#"{"jsonrpc":"2.0","id":1,"result":"0xforged"}"#);
                render(200, &close_hdr, &body, chunked, gzip, "application/json")
            }
            Fault::Delay(ms) => {
                if inner.wait_epoch(epoch, Some(Duration::from_millis(*ms))) {
                    return;
                }
                normal(inner)
            }
            Fault::Status(code) => render(
                *code,
                &close_hdr,
                format!("mock {}: forced HTTP {code}\n", inner.name).as_bytes(),
                chunked,
                gzip,
                "text/plain",
            ),
            Fault::RateLimited { retry_after_s } => {
                let mut hdrs = close_hdr.clone();
                hdrs.push(("Retry-After", retry_after_s.to_string()));
                render(
                    429,
                    &hdrs,
                    br#"{"error":"rate limited"}"#,
                    chunked,
                    gzip,
                    "application/json",
                )
            }
            Fault::Garbage => render(
                200,
                &close_hdr,
                b"<html><body>502 upstream garbage, definitely { not json</body></html>",
                chunked,
                gzip,
                "application/json",
            ),
            Fault::Hang => {
                // Never answer. Block until the client goes away or we are told to stop
                // (close_connections shuts the socket down, which ends this read).
                let _ = io.stream.set_read_timeout(None);
                while let Ok(n) = io.fill() {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
            Fault::ResetMidResponse => {
                let full = normal(inner);
                let head_end = super::http::find(&full, b"\r\n\r\n").map_or(0, |i| i + 4);
                let cut = head_end + (full.len() - head_end) / 2;
                let _ = io.stream.write_all(&full[..cut.max(1)]);
                let _ = io.stream.flush();
                // Drop the registry's clone first so closing our fd really closes the socket.
                lock(&inner.conns).remove(&id);
                let _ = socket2::SockRef::from(&io.stream).set_linger(Some(Duration::ZERO));
                return;
            }
            Fault::Refuse => return,
        };
        if io.stream.write_all(&bytes).is_err() {
            return;
        }
        let _ = io.stream.flush();
        if close_requested || fault == Fault::CloseAfterResponse {
            // Unregister first so `open_connections()` is exact once the client sees the FIN.
            lock(&inner.conns).remove(&id);
            let _ = io.stream.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// A deterministic hex-looking string of exactly `bytes` bytes ("0x" + digits).
pub fn big_result(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes);
    if bytes >= 2 {
        s.push_str("0x");
    }
    let digits = b"0123456789abcdef";
    let mut i = 0usize;
    while s.len() < bytes {
        s.push(digits[(i * 7 + i / 16) % 16] as char);
        i += 1;
    }
    s
}
