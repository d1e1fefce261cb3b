//! One WebSocket connection from a worker to a provider's `ws_url` (plain or TLS): the upgrade handshake, a writer
//! task fed by a queue, a reader task that routes JSON-RPC replies to waiting requests and `eth_subscription`
//! notifications to the feeds that own the upstream subscription, and a heartbeat that closes a silent connection.
//! When the connection ends, every feed on it is told, so it can fail over.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};

use crate::config::Provider;
use crate::upstream::conn::{Conn, Stream};
use crate::wire::http::io::read_more;
use crate::wire::jsonrpc;
use crate::wire::ws_frame::{self as frame, Assembler, Message};
use crate::wire::ws_handshake as handshake;

/// What an upstream connection tells the feed that owns a subscription.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// An `eth_subscription` notification's raw `result`, and when it arrived.
    Notification {
        pid: usize,
        result: Vec<u8>,
        at: Instant,
    },
    /// The connection to this provider ended.
    Lost { pid: usize, reason: String },
}

/// A live WebSocket connection to one provider.
pub struct UpstreamWs {
    pub pid: usize,
    outbound: mpsc::UnboundedSender<Vec<u8>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    /// Upstream subscription id -> the feed's inbox.
    subscriptions: RefCell<HashMap<String, mpsc::UnboundedSender<UpstreamEvent>>>,
    /// Request id of an `eth_subscribe` in flight -> the inbox its subscription will feed. The reader registers the
    /// subscription as it reads the reply, so a notification in the same read is not dropped as unknown.
    subscribing: RefCell<HashMap<u64, mpsc::UnboundedSender<UpstreamEvent>>>,
    next_id: Cell<u64>,
    alive: Cell<bool>,
    last_heard: Cell<Instant>,
    mask_seed: Cell<u64>,
}

const MAX_MESSAGE: usize = 64 << 20;
const HEARTBEAT: Duration = Duration::from_secs(15);

impl UpstreamWs {
    /// Connects and upgrades to `p.ws_url` within `timeout`.
    pub async fn connect(
        p: &Provider,
        tls: &monoio_rustls::TlsConnector,
        timeout: Duration,
        seed: u64,
    ) -> Result<Rc<UpstreamWs>, String> {
        let url = p.ws_url.as_ref().ok_or("provider has no ws_url")?;
        let attempt = async {
            let addrs = crate::upstream::dns::resolve(&Default::default(), &url.host, url.port)
                .await
                .map_err(|e| e.to_string())?;
            let conn = Conn::connect(&addrs, url.tls.then_some((tls, url.host.as_str())))
                .await
                .map_err(|e| e.to_string())?;
            let key = handshake::client_key(seed);
            let request =
                handshake::client_request(&url.host_header(), &url.target, &key, &p.headers);
            match conn.into_stream() {
                Stream::Plain(s) => Self::upgrade(s, p.pid, request, &key, seed).await,
                Stream::Tls(s) => Self::upgrade(*s, p.pid, request, &key, seed).await,
            }
        };
        monoio::time::timeout(timeout, attempt).await.map_err(|_| {
            format!(
                "WebSocket connect timed out after {} ms",
                timeout.as_millis()
            )
        })?
    }

    async fn upgrade<S>(
        mut io: S,
        pid: usize,
        request: Vec<u8>,
        key: &str,
        seed: u64,
    ) -> Result<Rc<UpstreamWs>, String>
    where
        S: AsyncReadRent + AsyncWriteRent + Split + 'static,
    {
        let (res, _) = io.write_all(request).await;
        res.map_err(|e| format!("upgrade send failed: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        let head_len = loop {
            let (res, b) = read_more(&mut io, buf, 4096).await;
            buf = b;
            match res {
                Ok(0) => return Err("provider closed during the upgrade".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("upgrade failed: {e}")),
            }
            if let Some(n) = handshake::check_response(&buf, key)? {
                break n;
            }
            if buf.len() > 16 * 1024 {
                return Err("upgrade response too large".into());
            }
        };
        buf.drain(..head_len);
        let (tx, rx) = mpsc::unbounded();
        let ws = Rc::new(UpstreamWs {
            pid,
            outbound: tx,
            pending: RefCell::new(HashMap::new()),
            subscriptions: RefCell::new(HashMap::new()),
            subscribing: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            alive: Cell::new(true),
            last_heard: Cell::new(Instant::now()),
            mask_seed: Cell::new(seed | 1),
        });
        let (rd, wr) = io.into_split();
        monoio::spawn(write_loop(wr, rx));
        monoio::spawn(read_loop(ws.clone(), rd, buf));
        monoio::spawn(heartbeat(ws.clone()));
        Ok(ws)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.get()
    }

    fn mask(&self) -> [u8; 4] {
        let mut x = self.mask_seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_seed.set(x);
        (x as u32).to_ne_bytes()
    }

    fn send_frame(&self, opcode: u8, payload: &[u8]) -> bool {
        let mut out = Vec::with_capacity(payload.len() + 14);
        frame::encode(&mut out, opcode, payload, Some(self.mask()));
        self.outbound.unbounded_send(out).is_ok()
    }

    /// Sends a JSON-RPC request and waits for its reply (raw bytes) within `timeout`.
    pub async fn request(
        &self,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        self.call(method, params, timeout, None).await
    }

    /// [`Self::request`]; for an `eth_subscribe`, `inbox` is where the new subscription's notifications go.
    async fn call(
        &self,
        method: &str,
        params: &[u8],
        timeout: Duration,
        inbox: Option<mpsc::UnboundedSender<UpstreamEvent>>,
    ) -> Result<Vec<u8>, String> {
        if !self.alive.get() {
            return Err("connection closed".into());
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        if let Some(inbox) = inbox {
            self.subscribing.borrow_mut().insert(id, inbox);
        }
        let body = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\",\"params\":{}}}",
            String::from_utf8_lossy(params)
        );
        if !self.send_frame(frame::OP_TEXT, body.as_bytes()) {
            self.pending.borrow_mut().remove(&id);
            self.subscribing.borrow_mut().remove(&id);
            return Err("connection closed".into());
        }
        match monoio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("connection closed before the reply".into()),
            Err(_) => {
                self.pending.borrow_mut().remove(&id);
                self.subscribing.borrow_mut().remove(&id);
                Err(format!("no reply within {} ms", timeout.as_millis()))
            }
        }
    }

    /// Subscribes upstream; notifications for it go to `inbox`. Returns the upstream subscription id.
    pub async fn subscribe(
        &self,
        params: &[u8],
        inbox: mpsc::UnboundedSender<UpstreamEvent>,
        timeout: Duration,
    ) -> Result<String, String> {
        let reply = self
            .call("eth_subscribe", params, timeout, Some(inbox))
            .await?;
        let result = sonic_rs::get(reply.as_slice(), ["result"]).map_err(|_| {
            let err = sonic_rs::get(reply.as_slice(), ["error"])
                .map(|e| e.as_raw_str().to_string())
                .unwrap_or_default();
            format!("eth_subscribe refused: {err}")
        })?;
        // The reader registered the subscription under this id when it read the reply.
        let id = sonic_rs::JsonValueTrait::as_str(&result)
            .ok_or("eth_subscribe returned no id")?
            .to_string();
        Ok(id)
    }

    /// Cancels an upstream subscription (best effort).
    pub async fn unsubscribe(&self, id: &str) {
        self.subscriptions.borrow_mut().remove(id);
        let params = format!("[\"{id}\"]");
        let _ = self
            .request("eth_unsubscribe", params.as_bytes(), Duration::from_secs(5))
            .await;
    }

    /// Forgets a subscription without telling the provider (the connection is going away).
    pub fn forget(&self, id: &str) {
        self.subscriptions.borrow_mut().remove(id);
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.borrow().len()
    }

    /// Closes the connection.
    pub fn close(&self, reason: &str) {
        if self.alive.replace(false) {
            let payload = frame::close_payload(frame::close::NORMAL, reason);
            self.send_frame(frame::OP_CLOSE, &payload);
            self.outbound.close_channel();
            self.fail_all(reason);
        }
    }

    fn fail_all(&self, reason: &str) {
        self.pending.borrow_mut().clear();
        self.subscribing.borrow_mut().clear();
        let subs: Vec<_> = self.subscriptions.borrow_mut().drain().collect();
        for (_, inbox) in subs {
            let _ = inbox.unbounded_send(UpstreamEvent::Lost {
                pid: self.pid,
                reason: reason.to_string(),
            });
        }
    }

    fn on_text(&self, text: Vec<u8>) {
        // A provider's message is untrusted too: nothing nested past the reply bound is parsed.
        if jsonrpc::nesting_exceeds(&text, jsonrpc::MAX_REPLY_DEPTH) {
            tracing::warn!(
                provider = self.pid,
                "upstream WebSocket message nested too deep; dropped"
            );
            return;
        }
        // Notifications: {"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x..","result":{...}}}
        if let Ok(sub) = sonic_rs::get(text.as_slice(), ["params", "subscription"]) {
            let Some(id) = sonic_rs::JsonValueTrait::as_str(&sub) else {
                return;
            };
            let inbox = self.subscriptions.borrow().get(id).cloned();
            if let (Some(inbox), Ok(result)) =
                (inbox, sonic_rs::get(text.as_slice(), ["params", "result"]))
            {
                let _ = inbox.unbounded_send(UpstreamEvent::Notification {
                    pid: self.pid,
                    result: result.as_raw_str().as_bytes().to_vec(),
                    at: Instant::now(),
                });
            }
            return;
        }
        if let Ok(id) = sonic_rs::get(text.as_slice(), ["id"]) {
            if let Some(id) = sonic_rs::JsonValueTrait::as_u64(&id) {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    let inbox = self.subscribing.borrow_mut().remove(&id);
                    let sub = sonic_rs::get(text.as_slice(), ["result"]).ok();
                    if let (Some(inbox), Some(sub)) = (
                        inbox,
                        sub.as_ref().and_then(sonic_rs::JsonValueTrait::as_str),
                    ) {
                        self.subscriptions
                            .borrow_mut()
                            .insert(sub.to_string(), inbox);
                    }
                    let _ = tx.send(text);
                }
            }
        }
    }
}

async fn write_loop<W: AsyncWriteRent>(mut wr: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(frame) = rx.next().await {
        let (res, _) = wr.write_all(frame).await;
        if res.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncReadRent>(ws: Rc<UpstreamWs>, mut rd: R, mut buf: Vec<u8>) {
    let mut assembler = Assembler::new(MAX_MESSAGE);
    let reason = 'outer: loop {
        loop {
            match frame::decode(&buf, MAX_MESSAGE, false) {
                Ok(Some((f, used))) => {
                    buf.drain(..used);
                    ws.last_heard.set(Instant::now());
                    match assembler.push(f) {
                        Ok(Some(Message::Text(t))) => ws.on_text(t),
                        Ok(Some(Message::Ping(p))) => {
                            ws.send_frame(frame::OP_PONG, &p);
                        }
                        Ok(Some(Message::Close(code, why))) => {
                            break 'outer format!(
                                "provider closed the WebSocket ({}{})",
                                code.unwrap_or(0),
                                if why.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {why}")
                                }
                            );
                        }
                        Ok(_) => {}
                        Err(e) => break 'outer e.to_string(),
                    }
                }
                Ok(None) => break,
                Err(e) => break 'outer e.to_string(),
            }
        }
        if !ws.alive.get() {
            break "closed".to_string();
        }
        let (res, b) = read_more(&mut rd, buf, 16 * 1024).await;
        buf = b;
        match res {
            Ok(0) => break "provider closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    if ws.alive.replace(false) {
        ws.outbound.close_channel();
        ws.fail_all(&reason);
    }
}

async fn heartbeat(ws: Rc<UpstreamWs>) {
    while ws.alive.get() {
        monoio::time::sleep(HEARTBEAT).await;
        if !ws.alive.get() {
            break;
        }
        if ws.last_heard.get().elapsed() > HEARTBEAT * 2 {
            ws.close("heartbeat timeout");
            break;
        }
        ws.send_frame(frame::OP_PING, b"lasso");
    }
}
