//! The in-process test tier's chain node: a scripted provider on `127.0.0.1:0` that serves one test-controlled chain
//! over HTTP JSON-RPC (`eth_blockNumber`, `eth_getBlockByNumber`, `eth_getLogs`, `eth_chainId`) and over WebSocket
//! on the same port (`eth_subscribe` to `newHeads` and `logs`, `eth_unsubscribe`, the same calls as HTTP). The test
//! mines and reorgs the shared [`Chain`]; each [`Node`] announces to its subscribers only when the test says so
//! ([`Node::announce`]), so a stalled, lagging or dropped provider is a script, not a timing accident. Every call a node
//! receives is recorded with its transport.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::StreamExt;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};
use serde_json::{Value, json};

use crate::shard::testing::request_frame;
use crate::wire::http::io::{read_more, write_all};
use crate::wire::ws_frame as frame;
use crate::wire::ws_handshake as handshake;

/// Logs every block carries (indexes `0..LOGS_PER_BLOCK`).
pub(crate) const LOGS_PER_BLOCK: u64 = 2;

/// A chain every node serves: heights up to `head`, each with a version bumped by every reorg that replaced it.
pub(crate) struct Chain {
    head: Cell<u64>,
    versions: RefCell<HashMap<u64, u32>>,
}

impl Chain {
    /// A chain whose head is `head`.
    pub(crate) fn new(head: u64) -> Rc<Chain> {
        Rc::new(Chain {
            head: Cell::new(head),
            versions: RefCell::new(HashMap::new()),
        })
    }

    pub(crate) fn head(&self) -> u64 {
        self.head.get()
    }

    /// Appends a block; returns its height.
    pub(crate) fn mine(&self) -> u64 {
        self.head.set(self.head.get() + 1);
        self.head.get()
    }

    /// Replaces the blocks from `height` up with new ones (new hashes) and makes `height` the head.
    pub(crate) fn reorg(&self, height: u64) {
        let mut versions = self.versions.borrow_mut();
        for n in height..=self.head.get().max(height) {
            *versions.entry(n).or_default() += 1;
        }
        self.head.set(height);
    }

    /// The hash of the block at `n` as the chain is now.
    pub(crate) fn hash(&self, n: u64) -> String {
        let version = self.versions.borrow().get(&n).copied().unwrap_or(0);
        format!("0x{n:056x}{version:08x}")
    }

    pub(crate) fn block(&self, n: u64) -> Option<Value> {
        (n <= self.head.get()).then(|| {
            json!({
                "number": format!("0x{n:x}"),
                "hash": self.hash(n),
                "parentHash": self.hash(n.saturating_sub(1)),
            })
        })
    }

    /// The logs of block `n` (`removed` as given).
    pub(crate) fn logs(&self, n: u64, removed: bool) -> Vec<Value> {
        (0..LOGS_PER_BLOCK)
            .map(|i| {
                json!({
                    "address": "0x00000000000000000000000000000000000000aa",
                    "blockNumber": format!("0x{n:x}"),
                    "blockHash": self.hash(n),
                    "logIndex": format!("0x{i:x}"),
                    "transactionHash": format!("0x{:064x}", n * 100 + i),
                    "data": "0x",
                    "topics": [],
                    "removed": removed,
                })
            })
            .collect()
    }
}

/// One upstream subscription a node serves.
struct Sub {
    session: u64,
    id: String,
    logs: bool,
}

struct NodeState {
    chain: Rc<Chain>,
    subs: RefCell<Vec<Sub>>,
    /// Open WebSocket sessions: their outbound frames (an empty frame = end the session).
    sessions: RefCell<HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>>,
    next: Cell<u64>,
    /// `(transport, method)` of every call received, in arrival order.
    calls: RefCell<Vec<(&'static str, String)>>,
    /// Announce the head block right behind each `eth_subscribe` reply, in the same write.
    eager: Cell<bool>,
    /// `eth_getLogs` over more blocks than this is refused as too large (0 = no limit).
    max_logs_range: Cell<u64>,
    ranges: RefCell<Vec<(u64, u64)>>,
}

/// A scripted chain node (HTTP and WebSocket on one port).
pub(crate) struct Node {
    pub http_url: String,
    pub ws_url: String,
    state: Rc<NodeState>,
}

impl Node {
    pub(crate) fn start(chain: &Rc<Chain>) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a chain node");
        let addr = listener.local_addr().unwrap();
        let state = Rc::new(NodeState {
            chain: chain.clone(),
            subs: RefCell::new(Vec::new()),
            sessions: RefCell::new(HashMap::new()),
            next: Cell::new(0),
            calls: RefCell::new(Vec::new()),
            eager: Cell::new(false),
            max_logs_range: Cell::new(0),
            ranges: RefCell::new(Vec::new()),
        });
        let serving = state.clone();
        monoio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                monoio::spawn(serve(stream, serving.clone()));
            }
        });
        Node {
            http_url: format!("http://{addr}"),
            ws_url: format!("ws://{addr}"),
            state,
        }
    }

    /// From now on, every `eth_subscribe` reply is followed, in the same write, by the head block (or its logs) under
    /// the new subscription, as when a block lands while the provider answers.
    pub(crate) fn announce_on_subscribe(&self) {
        self.state.eager.set(true);
    }

    /// From now on, `eth_getLogs` over more than `blocks` blocks is refused ("block range too large").
    pub(crate) fn refuse_logs_over(&self, blocks: u64) {
        self.state.max_logs_range.set(blocks);
    }

    /// The `eth_getLogs` block ranges this node answered or refused, in arrival order.
    pub(crate) fn log_ranges(&self) -> Vec<(u64, u64)> {
        self.state.ranges.borrow().clone()
    }

    /// Upstream subscriptions open on this node now.
    pub(crate) fn subscriptions(&self) -> usize {
        self.state.subs.borrow().len()
    }

    /// How many `method` calls arrived over `transport` (`"http"` or `"ws"`).
    pub(crate) fn count(&self, transport: &str, method: &str) -> usize {
        self.state
            .calls
            .borrow()
            .iter()
            .filter(|(t, m)| *t == transport && m == method)
            .count()
    }

    /// Announces the chain's head block to this node's subscribers (its header to `newHeads`, its logs to `logs`).
    pub(crate) fn announce(&self) {
        self.announce_block(self.state.chain.head(), false);
    }

    /// Announces block `n` (its logs flagged `removed` when asked).
    pub(crate) fn announce_block(&self, n: u64, removed: bool) {
        for sub in self.state.subs.borrow().iter() {
            let notes = self.state.notify(sub, n, removed);
            self.state.send(sub.session, &notes);
        }
    }

    /// Ends every WebSocket session of this node (the TCP connection is shut down), as a provider dropping does.
    pub(crate) fn drop_connections(&self) {
        for (_, out) in self.state.sessions.borrow_mut().drain() {
            let _ = out.unbounded_send(Vec::new());
        }
        self.state.subs.borrow_mut().clear();
    }
}

impl NodeState {
    /// Sends `messages` to a session in one write.
    fn send(&self, session: u64, messages: &[Value]) {
        if let Some(out) = self.sessions.borrow().get(&session) {
            let mut framed = Vec::new();
            for message in messages {
                frame::encode(
                    &mut framed,
                    frame::OP_TEXT,
                    message.to_string().as_bytes(),
                    None,
                );
            }
            let _ = out.unbounded_send(framed);
        }
    }

    /// The notifications announcing block `n` (logs flagged `removed` when asked) to subscription `sub`.
    fn notify(&self, sub: &Sub, n: u64, removed: bool) -> Vec<Value> {
        let Some(block) = self.chain.block(n) else {
            return Vec::new();
        };
        let events = if sub.logs {
            self.chain.logs(n, removed)
        } else {
            vec![block]
        };
        events
            .into_iter()
            .map(|event| {
                json!({
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": sub.id, "result": event},
                })
            })
            .collect()
    }

    /// The notifications announcing block `n` to the subscription whose id is `id`.
    fn notifications(&self, id: &Value, n: u64) -> Vec<Value> {
        let subs = self.subs.borrow();
        subs.iter()
            .find(|s| Some(s.id.as_str()) == id.as_str())
            .map(|s| self.notify(s, n, false))
            .unwrap_or_default()
    }

    /// The result of one call (`None` = JSON `null`), or an error message.
    fn call(&self, session: Option<u64>, method: &str, params: &Value) -> Result<Value, String> {
        let chain = &self.chain;
        let number = |v: &Value| {
            v.as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        };
        Ok(match method {
            "eth_chainId" => json!("0x1"),
            "eth_blockNumber" => json!(format!("0x{:x}", chain.head())),
            "eth_getBlockByNumber" => number(&params[0])
                .and_then(|n| chain.block(n))
                .unwrap_or(Value::Null),
            "eth_getLogs" => {
                let from = number(&params[0]["fromBlock"]).unwrap_or(chain.head());
                let to = number(&params[0]["toBlock"])
                    .unwrap_or(chain.head())
                    .min(chain.head());
                self.ranges.borrow_mut().push((from, to));
                let limit = self.max_logs_range.get();
                if limit > 0 && to.saturating_sub(from) + 1 > limit {
                    return Err(format!("block range too large: at most {limit} blocks"));
                }
                Value::Array((from..=to).flat_map(|n| chain.logs(n, false)).collect())
            }
            "eth_subscribe" => {
                let session = session.ok_or("subscriptions need a WebSocket")?;
                let logs = match params[0].as_str() {
                    Some("newHeads") => false,
                    Some("logs") => true,
                    _ => return Err("unsupported subscription".into()),
                };
                let n = self.next.get() + 1;
                self.next.set(n);
                let id = format!("0xfeed{n:04x}");
                self.subs.borrow_mut().push(Sub {
                    session,
                    id: id.clone(),
                    logs,
                });
                json!(id)
            }
            "eth_unsubscribe" => {
                let id = params[0].as_str().unwrap_or("");
                let mut subs = self.subs.borrow_mut();
                let before = subs.len();
                subs.retain(|s| s.id != id);
                json!(subs.len() < before)
            }
            _ => return Err(format!("{method} is not scripted")),
        })
    }

    fn answer(&self, transport: &'static str, session: Option<u64>, call: &Value) -> Value {
        let method = call["method"].as_str().unwrap_or("").to_string();
        self.calls.borrow_mut().push((transport, method.clone()));
        match self.call(session, &method, &call["params"]) {
            Ok(result) => json!({"jsonrpc": "2.0", "id": call["id"], "result": result}),
            Err(message) => json!({"jsonrpc": "2.0", "id": call["id"],
                "error": {"code": -32601, "message": message}}),
        }
    }
}

async fn serve(mut stream: TcpStream, state: Rc<NodeState>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (head_end, length) = loop {
            if let Some(found) = request_frame(&buf) {
                break found;
            }
            let (res, b) = read_more(&mut stream, buf, 4096).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        };
        if let Ok(upgrade) = handshake::validate_request(&buf[..head_end]) {
            buf.drain(..head_end);
            let (res, _) = write_all(&mut stream, handshake::accept_response(&upgrade)).await;
            if res.is_ok() {
                session(stream, buf, state).await;
            }
            return;
        }
        while buf.len() < head_end + length {
            let (res, b) = read_more(&mut stream, buf, 4096).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        }
        let body: Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).expect("Lasso sends JSON");
        buf.drain(..head_end + length);
        let reply = match &body {
            Value::Array(calls) => Value::Array(
                calls
                    .iter()
                    .map(|c| state.answer("http", None, c))
                    .collect(),
            ),
            call => state.answer("http", None, call),
        }
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        let (res, _) = write_all(
            &mut stream,
            [head.into_bytes(), reply.into_bytes()].concat(),
        )
        .await;
        if res.is_err() {
            return;
        }
    }
}

/// One WebSocket session: calls answered in order, notifications queued by [`Node::announce_block`].
async fn session(stream: TcpStream, mut buf: Vec<u8>, state: Rc<NodeState>) {
    let id = state.next.get() + 1;
    state.next.set(id);
    let (tx, mut rx) = mpsc::unbounded::<Vec<u8>>();
    state.sessions.borrow_mut().insert(id, tx);
    let (mut rd, mut wr) = stream.into_split();
    monoio::spawn(async move {
        while let Some(framed) = rx.next().await {
            if framed.is_empty() {
                break;
            }
            if wr.write_all(framed).await.0.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    'read: loop {
        while let Ok(Some((f, used))) = frame::decode(&buf, 1 << 20, true) {
            buf.drain(..used);
            match f.opcode {
                frame::OP_TEXT => {
                    let Ok(call) = serde_json::from_slice::<Value>(&f.payload) else {
                        continue;
                    };
                    let reply = state.answer("ws", Some(id), &call);
                    let mut out = vec![reply.clone()];
                    if call["method"] == "eth_subscribe" && state.eager.get() {
                        out.extend(state.notifications(&reply["result"], state.chain.head()));
                    }
                    state.send(id, &out);
                }
                frame::OP_PING => {
                    if let Some(out) = state.sessions.borrow().get(&id) {
                        let mut framed = Vec::new();
                        frame::encode(&mut framed, frame::OP_PONG, &f.payload, None);
                        let _ = out.unbounded_send(framed);
                    }
                }
                frame::OP_CLOSE => break 'read,
                _ => {}
            }
        }
        let (res, b) = read_more(&mut rd, buf, 4096).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            break;
        }
    }
    if let Some(out) = state.sessions.borrow_mut().remove(&id) {
        let _ = out.unbounded_send(Vec::new());
    }
    state.subs.borrow_mut().retain(|s| s.session != id);
}
