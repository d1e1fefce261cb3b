//! Routing-decision events: a process-wide bus of per-subscriber bounded queues, read by the Server-Sent Events
//! endpoint `GET /api/events/:profile` (`edge::sse`), bounded in bytes per subscriber and in subscribers. The proxy
//! publishes one event per client request (profile, API key id, chain, method, provider
//! chosen, strategy, latency, retries, hedging, outcome, and this node's id and region) only while at least one
//! subscriber exists: the check is one relaxed atomic load, and nothing is allocated when nobody listens. A
//! subscriber names one profile and only ever receives that profile's events.
//!
//! Across a cluster (`crate::ops::cluster_events`), a peer that has subscribers asks this node for the events of their
//! profiles: from then on (for [`CLUSTER_EVENTS_INTEREST_MS`] after its last ask) this node also keeps those
//! profiles' events in a byte-bounded outbox ([`export`]), which the peer drains and republishes to its own
//! subscribers ([`publish_remote`], never into its own outbox, so nothing loops). The request path only ever tries the
//! outbox's lock: when it is held, the event is dropped and counted, never waited for.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_channel::mpsc;

use serde::Serialize;

use crate::config::defaults::{CLUSTER_EVENTS_BUFFER_BYTES, CLUSTER_EVENTS_INTEREST_MS};

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
/// Whether a peer asked for events recently (checked before [`REMOTE`] on the request path).
static REMOTE_ANY: AtomicBool = AtomicBool::new(false);
/// Profiles peers asked for, each with the Unix time (ms) its interest ends.
static REMOTE: RwLock<Vec<(String, u64)>> = RwLock::new(Vec::new());
static OUTBOX: Mutex<Outbox> = Mutex::new(Outbox {
    next_seq: 1,
    bytes: 0,
    events: VecDeque::new(),
});

/// The events kept for peers: sequence numbers, newest last, bounded in bytes (the oldest dropped first).
struct Outbox {
    next_seq: u64,
    bytes: usize,
    events: VecDeque<(u64, Arc<str>, Arc<str>)>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether a peer currently wants `profile`'s events.
fn remote_wants(profile: &str) -> bool {
    if !REMOTE_ANY.load(Ordering::Relaxed) {
        return false;
    }
    let now = now_ms();
    let remote = REMOTE.read().unwrap_or_else(|p| p.into_inner());
    if remote.iter().all(|(_, until)| *until <= now) {
        drop(remote);
        if let Ok(mut remote) = REMOTE.try_write() {
            remote.retain(|(_, until)| *until > now);
            REMOTE_ANY.store(!remote.is_empty(), Ordering::Relaxed);
        }
        return false;
    }
    remote.iter().any(|(p, until)| p == profile && *until > now)
}

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
    SUBSCRIBERS.load(Ordering::Relaxed) > 0 || REMOTE_ANY.load(Ordering::Relaxed)
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
    /// The id of the API key used (`null` without a key): keys are per tenant, so a profile's stream only ever
    /// shows the keys used on that profile.
    pub key_id: Option<&'a str>,
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

/// Whether anyone listens to `profile`, here or on a peer (checked before building an event).
pub fn wanted(profile: &str) -> bool {
    active()
        && (REGISTRY
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s.profile == profile)
            || remote_wants(profile))
}

/// The profiles this node's own subscribers follow (what to ask peers for).
pub fn local_profiles() -> Vec<String> {
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<String> = reg.iter().map(|s| s.profile.clone()).collect();
    out.sort();
    out.dedup();
    out
}

/// Publishes one routing decision to the subscribers of its profile, and to the outbox when a peer wants it (a
/// no-op when nobody does).
pub fn publish(event: &RoutingEvent<'_>) {
    if !active() {
        return;
    }
    let remote = remote_wants(event.profile);
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let local = reg.iter().any(|s| s.profile == event.profile);
    if !local && !remote {
        return;
    }
    let Ok(json) = sonic_rs::to_string(event) else {
        return;
    };
    let json: Arc<str> = json.into();
    if remote {
        keep_for_peers(event.profile, &json);
    }
    if local {
        deliver(&reg, event.profile, &json);
    }
}

/// Publishes an event received from a peer (raw JSON of its `profile`) to this node's subscribers only.
pub fn publish_remote(profile: &str, json: Arc<str>) {
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    deliver(&reg, profile, &json);
}

/// Appends to the outbox unless its lock is held (then the event is dropped: the request path never waits).
fn keep_for_peers(profile: &str, json: &Arc<str>) {
    let Ok(mut outbox) = OUTBOX.try_lock() else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let seq = outbox.next_seq;
    outbox.next_seq += 1;
    outbox.bytes += json.len() + profile.len();
    outbox.events.push_back((seq, profile.into(), json.clone()));
    while outbox.bytes > CLUSTER_EVENTS_BUFFER_BYTES {
        let Some((_, p, j)) = outbox.events.pop_front() else {
            break;
        };
        outbox.bytes -= j.len() + p.len();
    }
}

/// Events kept for a peer, as [`export`] answers them.
pub struct Exported {
    /// The sequence number to ask from next time.
    pub next: u64,
    /// Events of the profiles asked for, oldest first (raw JSON).
    pub events: Vec<Arc<str>>,
}

/// Registers a peer's interest in `profiles` (for [`CLUSTER_EVENTS_INTEREST_MS`]) and returns their kept events from
/// sequence number `since` on, at most `max_bytes` of them. `since` 0 (a first ask), or one this node never issued
/// (it restarted), starts from now.
pub fn export(profiles: &[&str], since: u64, max_bytes: usize) -> Exported {
    let until = now_ms() + CLUSTER_EVENTS_INTEREST_MS;
    {
        let mut remote = REMOTE.write().unwrap_or_else(|p| p.into_inner());
        for p in profiles {
            match remote.iter_mut().find(|(name, _)| name == p) {
                Some(entry) => entry.1 = until,
                None => remote.push((p.to_string(), until)),
            }
        }
        REMOTE_ANY.store(!remote.is_empty(), Ordering::Relaxed);
    }
    let outbox = OUTBOX.lock().unwrap_or_else(|p| p.into_inner());
    if since == 0 || since > outbox.next_seq {
        return Exported {
            next: outbox.next_seq,
            events: Vec::new(),
        };
    }
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut next = outbox.next_seq;
    for (seq, profile, json) in outbox.events.iter().filter(|(seq, _, _)| *seq >= since) {
        if bytes + json.len() > max_bytes && !events.is_empty() {
            next = *seq;
            break;
        }
        if profiles.contains(&&**profile) {
            bytes += json.len();
            events.push(json.clone());
        }
    }
    Exported { next, events }
}

fn deliver(reg: &[Subscriber], profile: &str, json: &Arc<str>) {
    for s in reg.iter().filter(|s| s.profile == profile) {
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

    fn event<'a>(profile: &'a str, method: &'a str) -> RoutingEvent<'a> {
        RoutingEvent {
            ts_ms: 1,
            profile,
            key_id: None,
            chain: "c",
            method,
            provider: Some("p"),
            strategy: "fastest",
            latency_us: 1,
            upstream_us: 1,
            retries: 0,
            hedged: false,
            ok: true,
            status: 200,
            source_node: "n",
            source_region: None,
            worker: 0,
        }
    }

    #[test]
    fn peers_get_only_the_profiles_they_asked_for_from_where_they_left_off() {
        // A first ask registers interest and starts from now.
        let first = export(&["exp-a"], 0, 1 << 20);
        assert!(first.events.is_empty());
        publish(&event("exp-a", "m1"));
        publish(&event("exp-b", "m2"));
        publish(&event("exp-a", "m3"));
        let got = export(&["exp-a"], first.next, 1 << 20);
        let texts: Vec<&str> = got.events.iter().map(|e| &**e).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].contains("\"m1\"") && texts[1].contains("\"m3\""),
            "{texts:?}"
        );
        assert!(!texts.iter().any(|t| t.contains("exp-b")));
        // Nothing twice; a cursor this node never issued starts from now.
        assert!(export(&["exp-a"], got.next, 1 << 20).events.is_empty());
        assert!(export(&["exp-a"], u64::MAX, 1 << 20).events.is_empty());
    }

    #[test]
    fn the_outbox_is_bounded_in_bytes_and_answers_are_too() {
        let first = export(&["exp-bound"], 0, 1 << 20);
        let method = "m".repeat(100);
        for _ in 0..(2 * CLUSTER_EVENTS_BUFFER_BYTES / 100) {
            publish(&event("exp-bound", &method));
        }
        let bytes = OUTBOX.lock().unwrap().bytes;
        assert!(bytes <= CLUSTER_EVENTS_BUFFER_BYTES, "{bytes}");
        // The oldest went first: the cursor of the first ask is gone, and an answer stops at its byte bound.
        let got = export(&["exp-bound"], first.next, 64 * 1024);
        let sent: usize = got.events.iter().map(|e| e.len()).sum();
        assert!(sent <= 64 * 1024 && !got.events.is_empty(), "{sent}");
        let rest = export(&["exp-bound"], got.next, 64 * 1024);
        assert!(!rest.events.is_empty());
    }
}
