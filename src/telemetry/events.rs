//! Routing-decision events: a process-wide registry of subscribers, each with a queue bounded in bytes, read by the
//! Server-Sent Events endpoint `GET /api/events/:profile` (`edge::sse`); at most [`MAX_SUBSCRIBERS`]. The proxy
//! offers one event per client request (profile, API key id, chain, method, provider chosen, strategy, latency,
//! retries, hedging, outcome, and this node's id and region) only while at least one subscriber exists: the check is
//! one relaxed atomic load. A subscriber names one profile and only ever receives that profile's events.
//!
//! The request path takes no lock and wakes no other thread. Each worker keeps, in a thread-local, a snapshot of the
//! subscribers per profile (rebuilt when the registry's generation moves, i.e. on a (un)registration) and, per
//! profile, a buffer of ready SSE frames bounded by [`EVENTS_WORKER_BUFFER_BYTES`]. The worker's flush task
//! ([`flush_due`], [`flush_local`], run by `app::run`) hands each buffer to the profile's subscribers as one chunk
//! [`EVENTS_FLUSH_MS`] after the first event buffered (or at once when half the buffer is used), so a subscriber
//! costs a few wake-ups and writes per second, not one per request; idle, the task sleeps without a timer. Plain
//! successful events past `server.event_stream_successes_per_s` per worker, profile and second are counted ([`sampled_out`]) and
//! never serialised; failures, retries, failovers and hedges are always kept (within the byte bounds).
//!
//! Across a cluster (`crate::ops::cluster_events`), a peer that has subscribers asks this node for the events of their
//! profiles: from then on (for [`CLUSTER_EVENTS_INTEREST_MS`] after its last ask) this node also keeps those
//! profiles' events (sampled as above) in a byte-bounded outbox ([`export`]), which the peer drains and republishes to
//! its own subscribers ([`publish_remote`], never into its own outbox, so nothing loops). The request path only ever
//! tries the outbox's lock: when it is held, the event is dropped and counted, never waited for.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::mpsc;

pub use crate::telemetry::routing_event::{MAX_CLIENT_TEXT, RoutingEvent};

use crate::config::defaults::{
    CLUSTER_EVENTS_BUFFER_BYTES, CLUSTER_EVENTS_INTEREST_MS, EVENTS_FLUSH_MS,
    EVENTS_WORKER_BUFFER_BYTES,
};

/// Bytes of events queued per subscriber before new ones are dropped (a slow reader loses events, never memory).
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Subscribers at once, process-wide; past it a new stream is refused (idle streams cannot lock the server).
pub const MAX_SUBSCRIBERS: usize = 64;
/// A comment line is sent this often so proxies and clients see the stream alive.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a worker holds buffered events (see [`EVENTS_FLUSH_MS`]).
pub const FLUSH_EVERY: Duration = Duration::from_millis(EVENTS_FLUSH_MS);

static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);
/// Bumped under the registry's write lock on every (un)registration: workers rebuild their snapshot when it moves.
static GENERATION: AtomicU64 = AtomicU64::new(1);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SAMPLED_OUT: AtomicU64 = AtomicU64::new(0);
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

/// A subscriber's queue: chunks of SSE frames, and the bytes queued in it.
struct Sink {
    tx: mpsc::UnboundedSender<Arc<str>>,
    queued: Arc<AtomicUsize>,
}

impl Sink {
    /// Queues `chunk` (holding `events` events) unless the queue would pass [`QUEUE_BYTES`] (then they are dropped).
    fn send(&self, chunk: &Arc<str>, events: u64) {
        if self.queued.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > QUEUE_BYTES {
            self.queued.fetch_sub(chunk.len(), Ordering::Relaxed);
            DROPPED.fetch_add(events, Ordering::Relaxed);
            return;
        }
        if self.tx.unbounded_send(chunk.clone()).is_err() {
            self.queued.fetch_sub(chunk.len(), Ordering::Relaxed);
        }
    }
}

struct Subscriber {
    id: u64,
    /// Profiles are keyed by name, never by index: an index means another profile after a reload inserts one.
    profile: String,
    sink: Arc<Sink>,
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

/// Events dropped for lack of room (a worker's buffer, a subscriber's queue, the outbox's lock), as last flushed.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Plain successful events not published (past `server.event_stream_successes_per_s`), as last flushed.
pub fn sampled_out() -> u64 {
    SAMPLED_OUT.load(Ordering::Relaxed)
}

/// Unregisters its subscriber when dropped.
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
        reg.retain(|s| s.id != self.0);
        SUBSCRIBERS.store(reg.len(), Ordering::Relaxed);
        GENERATION.fetch_add(1, Ordering::Release);
    }
}

/// A subscriber's end: its registration, its queue (chunks of SSE `data:` frames), and the bytes queued in it.
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
        sink: Arc::new(Sink {
            tx,
            queued: queued.clone(),
        }),
    });
    SUBSCRIBERS.store(reg.len(), Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Release);
    Some((Registration(id), rx, queued))
}

/// One profile's state on one worker: its subscribers as of the snapshot, the frames waiting for the next flush and
/// how many plain successful events may still be published.
struct Slot {
    profile: Box<str>,
    sinks: Vec<Arc<Sink>>,
    frames: String,
    events: u64,
    tokens: u32,
}

impl Slot {
    fn new(profile: &str, allowance: u32) -> Slot {
        Slot {
            profile: profile.into(),
            sinks: Vec::new(),
            frames: String::new(),
            events: 0,
            tokens: allowance,
        }
    }

    /// Hands the buffered frames to the subscribers as one chunk.
    fn flush(&mut self) {
        if self.frames.is_empty() {
            return;
        }
        let chunk: Arc<str> = Arc::from(self.frames.as_str());
        for sink in &self.sinks {
            sink.send(&chunk, self.events);
        }
        self.frames.clear();
        self.events = 0;
        // A burst's buffer is not kept for ever.
        if self.frames.capacity() > EVENTS_WORKER_BUFFER_BYTES / 4 {
            self.frames = String::new();
        }
    }
}

/// One worker's view of the bus (a thread-local: workers are threads).
struct Local {
    generation: u64,
    slots: Vec<Slot>,
    /// Plain successful events per profile and second (the worker's configuration, as last offered).
    allowance: u32,
    dropped: u64,
    sampled_out: u64,
    /// Events were offered since the last flush: the flush task is due.
    armed: bool,
    waker: Option<Waker>,
    refilled: Option<Instant>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            generation: 0,
            slots: Vec::new(),
            allowance: 0,
            dropped: 0,
            sampled_out: 0,
            armed: false,
            waker: None,
            refilled: None,
        })
    };
}

impl Local {
    /// Rebuilds the per-profile subscriber lists when the registry changed (buffered frames are flushed first).
    fn refresh(&mut self) {
        let generation = GENERATION.load(Ordering::Acquire);
        if generation == self.generation {
            return;
        }
        for slot in &mut self.slots {
            slot.flush();
        }
        let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
        let mut slots: Vec<Slot> = Vec::new();
        for s in reg.iter() {
            let i = match slots.iter().position(|slot| *slot.profile == *s.profile) {
                Some(i) => i,
                None => {
                    let mut slot = Slot::new(&s.profile, self.allowance);
                    if let Some(old) = self.slots.iter().find(|o| *o.profile == *s.profile) {
                        slot.tokens = old.tokens;
                    }
                    slots.push(slot);
                    slots.len() - 1
                }
            };
            slots[i].sinks.push(s.sink.clone());
        }
        drop(reg);
        self.slots = slots;
        self.generation = generation;
    }

    /// Marks the flush task due; returns its waker to wake once the thread-local is released.
    fn arm(&mut self) -> Option<Waker> {
        if self.armed {
            return None;
        }
        self.armed = true;
        self.waker.take()
    }

    /// Flushes every buffer, refills the plain-event allowances and folds the counters into the process totals.
    fn flush(&mut self) {
        for slot in &mut self.slots {
            slot.flush();
        }
        let now = Instant::now();
        let per_s = u64::from(self.allowance);
        let refill = match self.refilled {
            Some(at) => {
                let ms = now.saturating_duration_since(at).as_millis() as u64;
                (per_s * ms / 1000).min(per_s) as u32
            }
            // The allowances start full: the clock starts now.
            None => {
                self.refilled = Some(now);
                0
            }
        };
        if refill > 0 {
            for slot in &mut self.slots {
                slot.tokens = (slot.tokens + refill).min(self.allowance);
            }
            self.refilled = Some(now);
        }
        if self.dropped > 0 {
            DROPPED.fetch_add(std::mem::take(&mut self.dropped), Ordering::Relaxed);
        }
        if self.sampled_out > 0 {
            SAMPLED_OUT.fetch_add(std::mem::take(&mut self.sampled_out), Ordering::Relaxed);
        }
        self.armed = false;
    }
}

/// Resolves when this worker has offered events since its last [`flush_local`] (it waits without a timer).
pub async fn flush_due() {
    std::future::poll_fn(|cx| {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if local.armed {
                Poll::Ready(())
            } else {
                local.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    })
    .await
}

/// Hands this worker's buffered events to their subscribers (one chunk per profile) and counts what it dropped.
pub fn flush_local() {
    LOCAL.with(|local| local.borrow_mut().flush());
}

/// Whether an event is worth keeping beyond the plain-success allowance: a failure, a retry (failover) or a hedge.
pub fn notable(ok: bool, retries: u32, hedged: bool) -> bool {
    !ok || retries > 0 || hedged
}

/// Offers one routing decision of `profile` (made by `make`, only when it is to be published) to this worker's buffer
/// for the profile's subscribers, and to the outbox when a peer wants it. A no-op when nobody listens; plain
/// successes (`notable` false) past `allowance` per second (`server.event_stream_successes_per_s`) are counted, not
/// built.
pub fn publish<'a>(
    profile: &str,
    notable: bool,
    allowance: u32,
    make: impl FnOnce() -> RoutingEvent<'a>,
) {
    if !active() {
        return;
    }
    let remote = remote_wants(profile);
    let waker = LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        if local.allowance != allowance {
            // A new configuration (or the first event): the allowances start afresh.
            local.allowance = allowance;
            for slot in &mut local.slots {
                slot.tokens = allowance;
            }
        }
        local.refresh();
        let i = match local.slots.iter().position(|s| *s.profile == *profile) {
            Some(i) => i,
            None if remote => {
                local.slots.push(Slot::new(profile, allowance));
                local.slots.len() - 1
            }
            None => return None,
        };
        let local = &mut *local;
        if local.slots[i].sinks.is_empty() && !remote {
            return None;
        }
        let waker = local.arm();
        let slot = &mut local.slots[i];
        if !notable {
            if slot.tokens == 0 {
                local.sampled_out += 1;
                return waker;
            }
            slot.tokens -= 1;
        }
        if !remote && slot.frames.len() >= EVENTS_WORKER_BUFFER_BYTES {
            local.dropped += 1;
            return waker;
        }
        let event = make();
        if slot.sinks.is_empty() {
            let mut json = String::with_capacity(320);
            event.write_json(&mut json);
            keep_for_peers(profile, &json);
            return waker;
        }
        // Written in place as an SSE frame; taken back when it does not fit.
        let mark = slot.frames.len();
        slot.frames.push_str("data: ");
        event.write_json(&mut slot.frames);
        if remote {
            keep_for_peers(profile, &slot.frames[mark + 6..]);
        }
        slot.frames.push_str("\n\n");
        if slot.frames.len() > EVENTS_WORKER_BUFFER_BYTES {
            slot.frames.truncate(mark);
            local.dropped += 1;
            return waker;
        }
        slot.events += 1;
        if slot.frames.len() >= EVENTS_WORKER_BUFFER_BYTES / 2 {
            slot.flush();
        }
        waker
    });
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The profiles this node's own subscribers follow (what to ask peers for).
pub fn local_profiles() -> Vec<String> {
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<String> = reg.iter().map(|s| s.profile.clone()).collect();
    out.sort();
    out.dedup();
    out
}

/// Publishes an event received from a peer (raw JSON of its `profile`) to this node's subscribers only.
pub fn publish_remote(profile: &str, json: &str) {
    let chunk: Arc<str> = format!("data: {json}\n\n").into();
    let reg = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    for s in reg.iter().filter(|s| s.profile == profile) {
        s.sink.send(&chunk, 1);
    }
}

/// Appends to the outbox unless its lock is held (then the event is dropped: the request path never waits).
fn keep_for_peers(profile: &str, json: &str) {
    let Ok(mut outbox) = OUTBOX.try_lock() else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let seq = outbox.next_seq;
    outbox.next_seq += 1;
    outbox.bytes += json.len() + profile.len();
    outbox.events.push_back((seq, profile.into(), json.into()));
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
        crate::telemetry::routing_event::sample(profile, method)
    }

    const ALLOWANCE: u32 = 50;

    fn offer(e: RoutingEvent<'_>) {
        let profile = e.profile;
        publish(profile, notable(e.ok, e.retries, e.hedged), ALLOWANCE, || e);
    }

    /// The chunks queued for a subscriber so far, as one text.
    fn received(rx: &mut mpsc::UnboundedReceiver<Arc<str>>) -> (String, usize) {
        let (mut text, mut chunks) = (String::new(), 0);
        while let Ok(chunk) = rx.try_recv() {
            text.push_str(&chunk);
            chunks += 1;
        }
        (text, chunks)
    }

    #[test]
    fn a_worker_hands_its_events_over_in_one_chunk_and_samples_plain_successes_only() {
        let (_reg, mut rx, queued) = register("local-cap").unwrap();
        let (_other, mut other_rx, _) = register("local-other").unwrap();
        let sampled = sampled_out();
        let plain = ALLOWANCE as usize + 100;
        for i in 0..plain {
            offer(event("local-cap", &format!("ok{i}")));
            if i % 40 == 0 {
                let mut failed = event("local-cap", "failed");
                failed.ok = false;
                failed.status = 502;
                offer(failed);
                let mut failover = event("local-cap", "failover");
                failover.retries = 1;
                offer(failover);
                let mut hedged = event("local-cap", "hedged");
                hedged.hedged = true;
                offer(hedged);
            }
        }
        // Nothing reaches the subscriber before the worker's flush; then one chunk.
        assert_eq!(received(&mut rx).1, 0);
        flush_local();
        let (text, chunks) = received(&mut rx);
        assert_eq!(chunks, 1, "{text}");
        assert_eq!(queued.load(Ordering::Relaxed), text.len());
        let frames: Vec<&str> = text.split_terminator("\n\n").collect();
        assert!(frames.iter().all(|f| f.starts_with("data: {")), "{text}");
        let count = |what: &str| text.matches(&format!("\"method\":\"{what}")).count();
        assert_eq!(count("ok"), ALLOWANCE as usize);
        let every = plain.div_ceil(40);
        assert_eq!(
            (count("failed"), count("failover"), count("hedged")),
            (every, every, every)
        );
        assert!(sampled_out() >= sampled + 100);
        // Another profile's subscriber saw nothing.
        assert_eq!(received(&mut other_rx).1, 0);
    }

    #[test]
    fn a_workers_buffer_and_a_subscribers_queue_are_bounded_in_bytes() {
        let (_reg, mut rx, queued) = register("local-bound").unwrap();
        let dropped_before = dropped();
        let method = "m".repeat(1000);
        for _ in 0..(4 * QUEUE_BYTES / 1000) {
            let mut e = event("local-bound", &method);
            e.ok = false;
            offer(e);
        }
        flush_local();
        assert!(queued.load(Ordering::Relaxed) <= QUEUE_BYTES);
        let mut total = 0;
        while let Ok(chunk) = rx.try_recv() {
            assert!(chunk.len() <= EVENTS_WORKER_BUFFER_BYTES, "{}", chunk.len());
            total += chunk.len();
        }
        assert!(total <= QUEUE_BYTES && total > QUEUE_BYTES / 2, "{total}");
        assert!(dropped() > dropped_before);
    }

    #[test]
    fn peers_get_only_the_profiles_they_asked_for_from_where_they_left_off() {
        // A first ask registers interest and starts from now.
        let first = export(&["exp-a"], 0, 1 << 20);
        assert!(first.events.is_empty());
        offer(event("exp-a", "m1"));
        offer(event("exp-b", "m2"));
        offer(event("exp-a", "m3"));
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
            let mut e = event("exp-bound", &method);
            e.retries = 1;
            offer(e);
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
