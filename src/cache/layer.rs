//! The interface of a response cache layer: get and put by key, with a time to live and a block-height tag, and a
//! purge of one chain's entries from a height up (a reorg). The embedded per-core store ([`super::memory`])
//! implements it; a shared layer (Redis) can be added behind the same calls. Answers are stored without their
//! JSON-RPC id: each client's id is spliced in when an answer is served.

use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Height tag of answers whose block height is not known (state at a block hash): dropped by any purge.
pub const UNKNOWN_HEIGHT: u64 = u64::MAX;

/// One JSON-RPC reply object with its id cut out: `body[..id.start] + client id + body[id.end..]` is the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub body: Rc<[u8]>,
    pub id: Range<usize>,
}

impl Answer {
    /// The reply with `client_id` in place of the stored id.
    pub fn with_id(&self, client_id: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + client_id.len());
        out.extend_from_slice(&self.body[..self.id.start]);
        out.extend_from_slice(client_id);
        out.extend_from_slice(&self.body[self.id.end..]);
        out
    }

    /// Bytes this answer holds.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// What to keep with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Global chain index.
    pub chain: u32,
    /// The highest block height the answer depends on ([`UNKNOWN_HEIGHT`] when not known).
    pub height: u64,
    pub ttl: Duration,
}

/// A cache layer. Methods take `&self`: a layer lives on one core (interior mutability, no locks) or talks to a
/// shared service; `async` so a remote layer can wait for its service (the embedded one never does).
#[allow(async_fn_in_trait)]
pub trait CacheLayer {
    /// The answer kept under `key`, if one is and it has not expired.
    async fn get(&self, key: &[u8], now: Instant) -> Option<Answer>;
    /// Keeps `answer` under `key` (replacing any), within the layer's bound.
    async fn put(&self, key: &[u8], answer: Answer, tag: Tag, now: Instant);
    /// Drops `chain`'s entries at `height` and above; returns how many were dropped (where known).
    async fn purge_from(&self, chain: u32, height: u64) -> usize;
}
