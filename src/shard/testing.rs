//! The in-process test tier's support: a shard built from configuration text inside a unit test ([`shard`]), and
//! scripted providers ([`Scripted`]) — small HTTP/1.1 JSON-RPC servers on `127.0.0.1:0` running on the test's own
//! runtime, answering each call as the test's script says (result, error, delay, status, order of batch replies)
//! and recording every body they received. [`on_both_drivers`] runs a test on io_uring and on the legacy driver.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use monoio::net::{TcpListener, TcpStream};

use crate::routing::table::RoutingTable;
use crate::shard::state::{Shared, Worker};
use crate::wire::http::io::{read_more, write_all};

/// Runs `test` on an io_uring runtime (when the kernel allows it) and on the legacy (epoll) driver.
pub(crate) fn on_both_drivers<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        rt.block_on(test());
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("the legacy driver always builds")
        .block_on(test());
}

/// A worker (shard 0 of one) for `yaml`, with no monitor and no other workers around it.
pub(crate) fn shard(yaml: &str) -> Rc<Worker> {
    let config = crate::config::load_str(yaml, std::path::Path::new("test.yml"), &|_| None)
        .unwrap_or_else(|e| panic!("test config: {e}"));
    let config = Arc::new(config);
    let (supervisor, _) = std::sync::mpsc::channel();
    let (control, _) = mpsc::unbounded();
    let shared = Arc::new(Shared {
        initial_table: Arc::new(RoutingTable::empty(
            config.providers.len(),
            config.profiles.iter().map(|p| p.chains.len()).sum(),
        )),
        config,
        started: Instant::now(),
        node_id: "test".into(),
        region: None,
        workers: 1,
        controls: vec![control],
        connections: Arc::new(AtomicUsize::new(0)),
        peers: Arc::default(),
        supervisor,
        generation: 1,
        tls: crate::upstream::conn::tls_connector(None).expect("webpki roots"),
        started_epoch_ms: 0,
        log_sample_rate: 0.0,
    });
    Rc::new(Worker::new(0, shared))
}

/// How a scripted provider answers one call (`method`, upstream `id` as raw JSON).
#[derive(Clone)]
pub(crate) enum Answer {
    Result(&'static str),
    Error(i32, &'static str),
    /// Wait this long, then answer with the inner answer.
    After(Duration, Box<Answer>),
    /// Answer the whole HTTP request with this status and an empty body.
    Status(u16),
}

type Script = dyn Fn(&str) -> Answer;

/// How a scripted provider answers a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batches {
    /// One reply per call, in request order.
    InOrder,
    /// One reply per call, in reverse order.
    Reversed,
    /// Refused: one JSON-RPC error object (HTTP 200), as providers without batch support answer.
    Refused,
}

/// A scripted JSON-RPC provider.
pub(crate) struct Scripted {
    pub url: String,
    /// Every request body received, in arrival order.
    pub received: Rc<RefCell<Vec<String>>>,
}

impl Scripted {
    /// Starts a provider answering each call by `script(method)`; batch replies come in reverse order when
    /// `reverse_batches`.
    pub(crate) fn start(script: impl Fn(&str) -> Answer + 'static, reverse_batches: bool) -> Self {
        let batches = if reverse_batches {
            Batches::Reversed
        } else {
            Batches::InOrder
        };
        Self::start_with(script, batches)
    }

    /// Starts a provider answering each call by `script(method)` and batches as `batches` says.
    pub(crate) fn start_with(script: impl Fn(&str) -> Answer + 'static, batches: Batches) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a scripted provider");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Rc::new(RefCell::new(Vec::new()));
        let script: Rc<Script> = Rc::new(script);
        let log = received.clone();
        monoio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                monoio::spawn(serve(stream, script.clone(), log.clone(), batches));
            }
        });
        Scripted { url, received }
    }

    /// How many requests whose body mentions `needle` it received.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.received
            .borrow()
            .iter()
            .filter(|b| b.contains(needle))
            .count()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Rc<Script>,
    log: Rc<RefCell<Vec<String>>>,
    batches: Batches,
) {
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
        while buf.len() < head_end + length {
            let (res, b) = read_more(&mut stream, buf, 4096).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        log.borrow_mut().push(body.clone());
        let (status, reply) = answer(&body, &*script, batches).await;
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
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

/// `(end of head, content length)` once a whole head is buffered.
pub(crate) fn request_frame(buf: &[u8]) -> Option<(usize, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    Some((end, length))
}

/// The HTTP status and body answering `body` (one call or a batch).
async fn answer(body: &str, script: &Script, batches: Batches) -> (u16, String) {
    let value: serde_json::Value = serde_json::from_str(body).expect("Lasso sends JSON");
    if value.is_array() && batches == Batches::Refused {
        let refusal = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"batch requests are not supported"}}"#;
        return (200, refusal.to_string());
    }
    let calls = match &value {
        serde_json::Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let mut replies = Vec::new();
    for call in &calls {
        let method = call["method"].as_str().unwrap_or("");
        let mut answer = script(method);
        while let Answer::After(delay, then) = answer {
            monoio::time::sleep(delay).await;
            answer = *then;
        }
        let id = call["id"].to_string();
        replies.push(match answer {
            Answer::Result(r) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{r}}}"#),
            Answer::Error(code, message) => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":"{message}"}}}}"#
            ),
            Answer::Status(status) => return (status, String::new()),
            Answer::After(..) => unreachable!("delays are awaited above"),
        });
    }
    if batches == Batches::Reversed {
        replies.reverse();
    }
    match value {
        serde_json::Value::Array(_) => (200, format!("[{}]", replies.join(","))),
        _ => (200, replies.pop().unwrap_or_default()),
    }
}

/// Waits until `condition` holds, checking every few milliseconds; panics naming `what` after `within`.
pub(crate) async fn until(what: &str, within: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true within {} ms",
            within.as_millis()
        );
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}
