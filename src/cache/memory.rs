//! The embedded cache layer: one store per core, owned by that core's worker, read and written without locks or
//! atomics (a `RefCell` on one thread).
//!
//! # Why per core, not one sharded store for the process
//! Lasso's cores share nothing on the request path. A process-wide sharded map would put a lock (or at least an
//! atomic and a cache-line transfer) on every hit and every put, and a hit would often read memory another core
//! wrote. Per-core stores cost a miss per core for the first read of an answer (at most `workers` upstream calls
//! per distinct key, the same bound as in-flight multiplexing) and the process bound is split evenly
//! (`cache.max_bytes / workers` each); in exchange a hit is a hash lookup, an LRU relink and a copy, on memory the
//! core owns. `benches/cache.rs` measures it (2-core machine under load, so ratios more than absolutes): a hit in
//! this store 141 ns, in a `Mutex`-guarded map (one shard of a sharded store) 263 ns uncontended and 810 ns with two
//! threads reading it; a whole pipeline hit 1.6 us against 45 us for the same call forwarded to a loopback provider. Indexers re-read the same finalized data many times over many connections, so the
//! per-core misses are few against the hits; a shared layer across nodes (Redis) is where sharing pays.
//!
//! # Bound and eviction
//! Every entry counts its key, its answer and a fixed overhead for the map and list nodes
//! ([`ENTRY_OVERHEAD`]); past the bound the least recently used entries are evicted. Expired entries are dropped
//! when read. A purge (reorg) scans this core's entries once: reorgs are rare and the scan touches only this core.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::cache::layer::{Answer, CacheLayer, Tag};

/// Bytes counted per entry on top of its key and answer: the slot (96 bytes), the map entry, the two reference
/// counts and the slack of the growing slot vector and map, measured by `tests/cache_memory.rs` (about 240 bytes).
pub const ENTRY_OVERHEAD: usize = 256;

const NIL: usize = usize::MAX;

struct Slot {
    key: Rc<[u8]>,
    answer: Answer,
    chain: u32,
    height: u64,
    expires: Instant,
    prev: usize,
    next: usize,
}

impl Slot {
    fn size(&self) -> usize {
        self.key.len() + self.answer.len() + ENTRY_OVERHEAD
    }
}

/// Counters of one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub evictions: u64,
    pub expired: u64,
    pub purged: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// A byte-bounded LRU map of answers with expiry and height tags.
pub struct MemoryStore {
    map: FxHashMap<Rc<[u8]>, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    bytes: usize,
    max_bytes: usize,
    counters: StoreCounters,
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> Self {
        MemoryStore {
            map: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            max_bytes,
            counters: StoreCounters::default(),
        }
    }

    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            entries: self.map.len() as u64,
            bytes: self.bytes as u64,
            ..self.counters
        }
    }

    fn slot(&self, i: usize) -> &Slot {
        self.slots[i].as_ref().expect("linked slot is live")
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        self.slots[i].as_mut().expect("linked slot is live")
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = {
            let s = self.slot(i);
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slot_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slot_mut(n).prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        let old = self.head;
        {
            let s = self.slot_mut(i);
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slot_mut(o).prev = i,
        }
        self.head = i;
    }

    fn remove(&mut self, i: usize) {
        self.unlink(i);
        let slot = self.slots[i].take().expect("removed slot is live");
        self.bytes -= slot.size();
        self.map.remove(&slot.key);
        self.free.push(i);
    }

    /// The answer under `key` unless missing or expired (an expired one is dropped).
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<Answer> {
        let Some(&i) = self.map.get(key) else {
            self.counters.misses += 1;
            return None;
        };
        if self.slot(i).expires <= now {
            self.remove(i);
            self.counters.expired += 1;
            self.counters.misses += 1;
            return None;
        }
        self.unlink(i);
        self.push_front(i);
        self.counters.hits += 1;
        Some(self.slot(i).answer.clone())
    }

    /// Keeps `answer` under `key`, evicting the least recently used entries past the bound. An entry larger than
    /// the whole bound is not kept.
    pub fn put(&mut self, key: &[u8], answer: Answer, tag: Tag, now: Instant) {
        let size = key.len() + answer.len() + ENTRY_OVERHEAD;
        if let Some(&i) = self.map.get(key) {
            self.remove(i);
        }
        if size > self.max_bytes || tag.ttl.is_zero() {
            return;
        }
        while self.bytes + size > self.max_bytes && self.tail != NIL {
            self.remove(self.tail);
            self.counters.evictions += 1;
        }
        let key: Rc<[u8]> = Rc::from(key);
        let slot = Slot {
            key: key.clone(),
            answer,
            chain: tag.chain,
            height: tag.height,
            expires: now + tag.ttl,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.bytes += size;
        self.counters.stored += 1;
    }

    /// Drops `chain`'s entries tagged `height` or above.
    pub fn purge_from(&mut self, chain: u32, height: u64) -> usize {
        let doomed: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .filter(|s| s.chain == chain && s.height >= height)
                    .map(|_| i)
            })
            .collect();
        for &i in &doomed {
            self.remove(i);
        }
        self.counters.purged += doomed.len() as u64;
        doomed.len()
    }
}

/// The embedded layer of one worker.
pub struct Embedded(RefCell<MemoryStore>);

impl Embedded {
    pub fn new(max_bytes: usize) -> Self {
        Embedded(RefCell::new(MemoryStore::new(max_bytes)))
    }

    pub fn counters(&self) -> StoreCounters {
        self.0.borrow().counters()
    }
}

impl CacheLayer for Embedded {
    async fn get(&self, key: &[u8], now: Instant) -> Option<Answer> {
        self.0.borrow_mut().get(key, now)
    }

    async fn put(&self, key: &[u8], answer: Answer, tag: Tag, now: Instant) {
        self.0.borrow_mut().put(key, answer, tag, now)
    }

    async fn purge_from(&self, chain: u32, height: u64) -> usize {
        self.0.borrow_mut().purge_from(chain, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(n: usize) -> Answer {
        let body = format!("{{\"id\":0,\"result\":\"{}\"}}", "x".repeat(n));
        Answer {
            body: Rc::from(body.as_bytes()),
            id: 6..7,
        }
    }

    fn tag(chain: u32, height: u64, ttl_ms: u64) -> Tag {
        Tag {
            chain,
            height,
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    #[test]
    fn answers_expire_after_their_ttl() {
        let mut s = MemoryStore::new(1 << 20);
        let t0 = Instant::now();
        s.put(b"a", answer(10), tag(0, 5, 100), t0);
        assert_eq!(
            s.get(b"a", t0 + Duration::from_millis(99)),
            Some(answer(10))
        );
        assert_eq!(s.get(b"a", t0 + Duration::from_millis(100)), None);
        let c = s.counters();
        assert_eq!(
            (c.hits, c.misses, c.expired, c.entries, c.bytes),
            (1, 1, 1, 0, 0)
        );
    }

    #[test]
    fn the_byte_bound_evicts_least_recently_used() {
        let entry = 1 + answer(100).len() + ENTRY_OVERHEAD;
        let mut s = MemoryStore::new(entry * 3);
        let now = Instant::now();
        for k in [b"a", b"b", b"c"] {
            s.put(k, answer(100), tag(0, 1, 60_000), now);
        }
        assert!(s.get(b"a", now).is_some(), "a is now the most recent");
        s.put(b"d", answer(100), tag(0, 1, 60_000), now);
        assert!(s.get(b"b", now).is_none(), "b was least recently used");
        for k in [b"a", b"c", b"d"] {
            assert!(s.get(k, now).is_some());
        }
        let c = s.counters();
        assert_eq!(c.evictions, 1);
        assert_eq!(c.bytes as usize, entry * 3);
        assert!(c.bytes as usize <= entry * 3);
        // Larger than the whole bound: not kept, nothing evicted for it.
        s.put(b"e", answer(entry * 3), tag(0, 1, 60_000), now);
        assert!(s.get(b"e", now).is_none());
        assert_eq!(s.counters().evictions, 1);
    }

    #[test]
    fn a_purge_drops_a_chains_heights_from_the_reorg_up() {
        let mut s = MemoryStore::new(1 << 20);
        let now = Instant::now();
        for h in 1..=10u64 {
            s.put(
                format!("0-{h}").as_bytes(),
                answer(1),
                tag(0, h, 60_000),
                now,
            );
            s.put(
                format!("1-{h}").as_bytes(),
                answer(1),
                tag(1, h, 60_000),
                now,
            );
        }
        s.put(
            b"unknown",
            answer(1),
            tag(0, crate::cache::layer::UNKNOWN_HEIGHT, 60_000),
            now,
        );
        assert_eq!(s.purge_from(0, 8), 4, "8, 9, 10 and the unknown height");
        for h in 1..=10u64 {
            assert_eq!(
                s.get(format!("0-{h}").as_bytes(), now).is_some(),
                h < 8,
                "chain 0 height {h}"
            );
            assert!(
                s.get(format!("1-{h}").as_bytes(), now).is_some(),
                "other chain kept"
            );
        }
        assert!(s.get(b"unknown", now).is_none());
    }

    #[test]
    fn replacing_a_key_keeps_the_byte_count_true() {
        let mut s = MemoryStore::new(1 << 20);
        let now = Instant::now();
        s.put(b"k", answer(10), tag(0, 1, 1000), now);
        s.put(b"k", answer(20), tag(0, 1, 1000), now);
        assert_eq!(s.counters().entries, 1);
        assert_eq!(
            s.counters().bytes as usize,
            1 + answer(20).len() + ENTRY_OVERHEAD
        );
        assert_eq!(
            s.get(b"k", now).unwrap().with_id(b"\"x\""),
            br#"{"id":"x","result":"xxxxxxxxxxxxxxxxxxxx"}"#
        );
    }
}
