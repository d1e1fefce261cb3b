//! Routing-decision events: a process-wide bus of per-subscriber bounded queues, read by the Server-Sent Events
//! endpoint `GET /api/events/:profile` (`edge::sse`), bounded in bytes per subscriber and in subscribers. The proxy
//! publishes one event per client request (profile, chain, method, provider
//! chosen, strategy, latency, retries, hedging, outcome, and this node's id and region) only while at least one
//! subscriber exists: the check is one relaxed atomic load, and nothing is allocated when nobody listens. A
//! subscriber names one profile and only ever receives that profile's events. Events are not forwarded between
//! cluster nodes (each node streams its own decisions; `source_node` says which).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_channel::mpsc;

use serde::Serialize;

/// Bytes of events queued per subscriber before new ones are dropped (a slow reader loses events, never memory).
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Subscribers at once, process-wide; past it a new stream is refused (idle streams cannot lock the server).
pub const MAX_SUBSCRIBERS: usize = 64;
/// A comment line is sent this often so proxies and clients see the stream alive.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static REGISTRY: RwLock<Vec<Subscriber>> = RwLock::new(Vec::new());

struct Subscriber {
    id: u64,
    /// Profiles are keyed by name, never by index: an index means another profile after a reload inserts one.
    profile: String,
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
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
        reg.retain(|s| s.id != self.0);
        SUBSCRIBERS.store(reg.len(), Ordering::Relaxed);
    }
}

/// A subscriber's end: its registration, its queue, and the bytes queued in it.
pub type Subscription = (
    Registration,
    mpsc::UnboundedReceiver<Arc<str>>,
    Arc<AtomicUsize>,
);

/// Registers a subscriber of `profile`; `None` when [`MAX_SUBSCRIBERS`] are registered already.
pub fn register(profile: &str) -> Option<Subscription> {
    let (tx, rx) = mpsc::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut reg = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    if reg.len() >= MAX_SUBSCRIBERS {
        return None;
    }
    reg.push(Subscriber {
        id,
        profile: profile.to_string(),
        tx,
        queued: queued.clone(),
    });
    SUBSCRIBERS.store(reg.len(), Ordering::Relaxed);
    Some((Registration(id), rx, queued))
}

/// One routing decision as subscribers see it. Client-supplied text (the method) is cut to
/// [`MAX_CLIENT_TEXT`] characters by [`RoutingEvent::client_text`].
#[derive(Serialize)]
pub struct RoutingEvent<'a> {
    pub ts_ms: u64,
    pub profile: &'a str,
    pub chain: &'a str,
    pub method: &'a str,
    pub provider: Option<&'a str>,
    pub strategy: &'a str,
    pub latency_us: u64,
    pub upstream_us: u64,
    pub retries: u32,
    pub hedged: bool,
    pub ok: bool,
    pub status: u16,
    pub source_node: &'a str,
    pub source_region: Option<&'a str>,
    pub worker: usize,
}

/// Characters of client-supplied text (a method name) kept in an event.
pub const MAX_CLIENT_TEXT: usize = 128;

impl RoutingEvent<'_> {
    /// `text` cut to [`MAX_CLIENT_TEXT`] characters (on a character boundary).
    pub fn client_text(text: &str) -> &str {
        match text.char_indices().nth(MAX_CLIENT_TEXT) {
            Some((cut, _)) => &text[..cut],
            None => text,
        }
    }
}

/// Whether anyone listens to `profile` (checked before building an event).
pub fn wanted(profile: &str) -> bool {
    active()
        && REGISTRY
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s.profile == profile)
}

/// Publishes one routing decision to the subscribers of its profile (a no-op without subscribers).
pub fn publish(event: &RoutingEvent<'_>) {
    if !active() {
        return;
    }
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    if !reg.iter().any(|s| s.profile == event.profile) {
        return;
    }
    let Ok(json) = sonic_rs::to_string(event) else {
        return;
    };
    let json: Arc<str> = json.into();
    for s in reg.iter().filter(|s| s.profile == event.profile) {
        if s.queued.fetch_add(json.len(), Ordering::Relaxed) + json.len() > QUEUE_BYTES {
            s.queued.fetch_sub(json.len(), Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if s.tx.unbounded_send(json.clone()).is_err() {
            s.queued.fetch_sub(json.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_counts_and_unregisters() {
        let before = subscribers();
        let (a, _rx_a, _) = register("alpha").unwrap();
        let (b, _rx_b, _) = register("beta").unwrap();
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
