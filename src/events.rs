//! Routing-decision events: a process-wide bus of per-subscriber bounded queues and the Server-Sent Events endpoint
//! `GET /api/events/:profile`. The proxy publishes one event per client request (profile, chain, method, provider
//! chosen, strategy, latency, retries, hedging, outcome, and this node's id and region) only while at least one
//! subscriber exists: the check is one relaxed atomic load, and nothing is allocated when nobody listens. A
//! subscriber names one profile and only ever receives that profile's events. Events are not forwarded between
//! cluster nodes (each node streams its own decisions; `source_node` says which).

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use monoio::io::Splitable;
use monoio::net::TcpStream;
use serde::Serialize;

use crate::config::Chain;
use crate::errors::{ResourceKind, RpcError};
use crate::http::io::{read_more, write_all};
use crate::http::request::RequestHead;
use crate::http::response::{Response, write_head};
use crate::meta::Meta;
use crate::worker::Worker;

/// Events queued per subscriber before new ones are dropped (a slow reader loses events, never memory).
pub const QUEUE_CAP: usize = 1024;
/// A comment line is sent this often so proxies and clients see the stream alive.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static REGISTRY: RwLock<Vec<Subscriber>> = RwLock::new(Vec::new());

struct Subscriber {
    id: u64,
    profile: usize,
    tx: mpsc::UnboundedSender<Arc<str>>,
    queued: Arc<AtomicUsize>,
}

/// Whether anyone listens (cheap; checked on the request path).
#[inline]
pub fn active() -> bool {
    SUBSCRIBERS.load(Ordering::Relaxed) > 0
}

/// Current subscribers, process-wide.
pub fn subscribers() -> usize {
    SUBSCRIBERS.load(Ordering::Relaxed)
}

/// Events dropped because a subscriber's queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Unregisters its subscriber when dropped.
struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
        reg.retain(|s| s.id != self.0);
        SUBSCRIBERS.store(reg.len(), Ordering::Relaxed);
    }
}

fn register(
    profile: usize,
) -> (
    Registration,
    mpsc::UnboundedReceiver<Arc<str>>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = mpsc::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut reg = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    reg.push(Subscriber {
        id,
        profile,
        tx,
        queued: queued.clone(),
    });
    SUBSCRIBERS.store(reg.len(), Ordering::Relaxed);
    (Registration(id), rx, queued)
}

#[derive(Serialize)]
struct Event<'a> {
    ts_ms: u64,
    profile: &'a str,
    chain: &'a str,
    method: &'a str,
    provider: Option<&'a str>,
    strategy: &'a str,
    latency_us: u64,
    upstream_us: u64,
    retries: u32,
    hedged: bool,
    ok: bool,
    status: u16,
    source_node: &'a str,
    source_region: Option<&'a str>,
    worker: usize,
}

/// Publishes one routing decision to the subscribers of `profile` (a no-op without subscribers).
pub fn publish(
    worker: &Worker,
    profile: usize,
    chain: &Chain,
    method: &str,
    meta: &Meta,
    status: u16,
    latency: Duration,
) {
    if !active() {
        return;
    }
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    if !reg.iter().any(|s| s.profile == profile) {
        return;
    }
    let strategy = match meta.strategy {
        Some(s) => s.as_str(),
        None if meta.pick_provider => "provider",
        None => "-",
    };
    let event = Event {
        ts_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        profile: &worker.config.profiles[profile].name,
        chain: &chain.name,
        method,
        provider: meta.provider.as_deref(),
        strategy,
        latency_us: latency.as_micros() as u64,
        upstream_us: meta.upstream.as_micros() as u64,
        retries: meta.retries,
        hedged: meta.hedged,
        ok: status < 400,
        status,
        source_node: &worker.shared.node_id,
        source_region: worker.shared.region.as_deref(),
        worker: worker.index,
    };
    let Ok(json) = sonic_rs::to_string(&event) else {
        return;
    };
    let json: Arc<str> = json.into();
    for s in reg.iter().filter(|s| s.profile == profile) {
        if s.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE_CAP {
            s.queued.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if s.tx.unbounded_send(json.clone()).is_err() {
            s.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn reject(stream: &mut TcpStream, err: RpcError) {
    let resp = Response::json(err.http_status(), err.to_response(b"null"));
    let mut out = Vec::new();
    write_head(&mut out, &resp, false);
    out.extend_from_slice(&resp.body);
    let _ = write_all(stream, out).await;
}

/// Serves `GET /api/events/:profile` on a connection handed over after its request head: an event stream until the
/// client goes away or the worker drains.
pub async fn serve(worker: Rc<Worker>, mut stream: TcpStream, head: &RequestHead) {
    let name = head.path["/api/events/".len().min(head.path.len())..].trim_end_matches('/');
    let Some((profile, _)) = worker.config.profile(name) else {
        return reject(
            &mut stream,
            RpcError::NotFound {
                kind: ResourceKind::Profile,
                name: name.to_string(),
            },
        )
        .await;
    };
    if worker.draining.get() {
        return reject(&mut stream, RpcError::Overloaded("server is draining")).await;
    }
    let (registration, mut rx, queued) = register(profile);
    let head_bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n\
         : subscribed profile={name}\n\n"
    );
    let (mut rd, mut wr) = stream.into_split();
    if write_all(&mut wr, head_bytes.into_bytes()).await.0.is_err() {
        return;
    }
    // The client sends nothing more; a read returning tells that it went away. The reader stops (releasing its half
    // of the socket) when this function returns and drops `_stop`.
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    let (_stop, mut stop_rx) = oneshot::channel::<()>();
    monoio::spawn(async move {
        let mut buf = Vec::with_capacity(512);
        loop {
            let read = read_more(&mut rd, std::mem::take(&mut buf), 512);
            let (res, mut b) = monoio::select! {
                r = read => r,
                _ = &mut stop_rx => return,
            };
            match res {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    b.clear();
                    buf = b;
                }
            }
        }
        let _ = closed_tx.send(());
    });
    loop {
        if worker.draining.get() {
            break;
        }
        let drained = worker.drain_started.notified();
        let out = monoio::select! {
            ev = rx.next() => match ev {
                Some(json) => {
                    let mut out = format!("data: {json}\n\n");
                    queued.fetch_sub(1, Ordering::Relaxed);
                    while let Ok(more) = rx.try_recv() {
                        queued.fetch_sub(1, Ordering::Relaxed);
                        out.push_str("data: ");
                        out.push_str(&more);
                        out.push_str("\n\n");
                    }
                    out
                }
                None => break,
            },
            _ = monoio::time::sleep(KEEPALIVE) => ": keep-alive\n\n".to_string(),
            _ = &mut closed_rx => break,
            _ = drained => break,
        };
        if write_all(&mut wr, out.into_bytes()).await.0.is_err() {
            break;
        }
    }
    drop(registration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_counts_and_unregisters() {
        let before = subscribers();
        let (a, _rx_a, _) = register(0);
        let (b, _rx_b, _) = register(1);
        assert!(active());
        assert!(subscribers() >= before + 2);
        let ids = [a.0, b.0];
        drop(a);
        drop(b);
        assert!(
            REGISTRY
                .read()
                .unwrap()
                .iter()
                .all(|s| !ids.contains(&s.id))
        );
    }
}
