//! The monitor's finality tracker for one chain, feeding the response cache: it polls one provider's `latest` and
//! `finalized` blocks once per head-poll interval, computes the finalized head (the `finalized` tag, capped at
//! `head - finality_depth` when the chain sets a depth; `head - finality_depth` alone, default 64, when the
//! provider has no such tag), remembers the hashes it saw above the finalized head, and detects reorgs: a head
//! with another hash at a height it saw (or whose parent differs from the hash it saw below), or a previous head
//! the chain no longer has. It then walks down (one `eth_getBlockByNumber` per height it saw) to the lowest height
//! whose hash changed; where it has no hash to compare, the whole unfinalized range counts as replaced. Reorgs and
//! new finalized heads go to every worker as [`FinalityUpdate`]s.

use std::collections::BTreeMap;
use std::future::Future;

use crate::cache::finality::FinalityUpdate;
use crate::config::defaults::DEFAULT_FINALITY_DEPTH;

/// Heights whose hashes are remembered, at most.
const MAX_REMEMBERED: usize = 1024;

/// A block as the poll sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockHead {
    pub number: u64,
    pub hash: String,
    pub parent: String,
}

impl BlockHead {
    /// Reads `number`, `hash` and `parentHash` from an `eth_getBlockByNumber` reply body.
    pub(crate) fn from_reply(body: &[u8]) -> Option<BlockHead> {
        use sonic_rs::JsonValueTrait;
        let field = |name: &str| -> Option<String> {
            let v = sonic_rs::get(body, ["result", name]).ok()?;
            v.as_str().map(str::to_ascii_lowercase)
        };
        let number = field("number")?;
        Some(BlockHead {
            number: u64::from_str_radix(number.strip_prefix("0x")?, 16).ok()?,
            hash: field("hash")?,
            parent: field("parentHash")?,
        })
    }
}

/// What one chain's tracker remembers between polls.
pub(crate) struct Tracker {
    pub chain: usize,
    depth: Option<u64>,
    seen: BTreeMap<u64, String>,
    finalized: u64,
    last: Option<(u64, u64)>,
}

impl Tracker {
    pub(crate) fn new(chain: usize, depth: Option<u64>) -> Self {
        Tracker {
            chain,
            depth,
            seen: BTreeMap::new(),
            finalized: 0,
            last: None,
        }
    }

    /// One poll: `head` is the provider's latest block, `tagged` its `finalized` block number (if it has the tag),
    /// `block(n)` fetches the provider's block at `n`. Returns the update to send, if anything changed.
    pub(crate) async fn poll<F, Fut>(
        &mut self,
        head: BlockHead,
        tagged: Option<u64>,
        block: F,
    ) -> Option<FinalityUpdate>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Option<BlockHead>>,
    {
        let by_depth = |d: u64| head.number.saturating_sub(d);
        let finalized = match (tagged, self.depth) {
            (Some(t), Some(d)) => t.min(by_depth(d)),
            (Some(t), None) => t,
            (None, d) => by_depth(d.unwrap_or(DEFAULT_FINALITY_DEPTH)),
        };
        // The highest remembered height whose hash the chain no longer has.
        let mut changed: Option<u64> = None;
        if self.seen.get(&head.number).is_some_and(|h| *h != head.hash) {
            changed = Some(head.number);
        } else if head.number > 0
            && self
                .seen
                .get(&(head.number - 1))
                .is_some_and(|h| *h != head.parent)
        {
            changed = Some(head.number - 1);
        } else if let Some((&top, old)) =
            self.seen.range(..head.number.saturating_sub(1)).next_back()
        {
            // The previous head, below the parent: is it still on the chain?
            if let Some(now) = block(top).await {
                if now.hash != *old {
                    changed = Some(top);
                }
            }
        }
        let (reorg_from, fetched) = match changed {
            None => (None, Vec::new()),
            Some(m) => {
                let (from, fetched) = self.fork_point(m, &block).await;
                (Some(from), fetched)
            }
        };
        if let Some(from) = reorg_from {
            self.seen.retain(|&k, _| k < from);
            self.seen.extend(fetched);
            tracing::info!(
                chain = self.chain,
                from,
                head = head.number,
                "reorg detected: cached answers from this height up are dropped"
            );
        }
        self.seen.insert(head.number, head.hash.clone());
        if head.number > 0 {
            self.seen.insert(head.number - 1, head.parent.clone());
        }
        let finalized = finalized.max(self.finalized);
        self.finalized = finalized;
        self.seen.retain(|&k, _| k + 1 >= finalized);
        while self.seen.len() > MAX_REMEMBERED {
            let first = *self.seen.keys().next().expect("not empty");
            self.seen.remove(&first);
        }
        let now = (head.number, finalized);
        if reorg_from.is_none() && self.last == Some(now) {
            return None;
        }
        self.last = Some(now);
        Some(FinalityUpdate {
            chain: self.chain,
            head: head.number,
            finalized,
            reorg_from,
        })
    }

    /// The lowest height replaced by a reorg first seen at `m`: walking down while remembered hashes differ; where
    /// nothing is remembered (or the provider does not answer), everything above the finalized head. Also returns
    /// the blocks fetched on the way (the chain as it is now).
    async fn fork_point<F, Fut>(&self, m: u64, block: &F) -> (u64, Vec<(u64, String)>)
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Option<BlockHead>>,
    {
        let floor = self.finalized + 1;
        let mut fetched = Vec::new();
        let mut k = m;
        while k > floor {
            let below = k - 1;
            let Some(old) = self.seen.get(&below) else {
                return (floor, fetched);
            };
            match block(below).await {
                Some(now) if now.hash == *old => return (k, fetched),
                Some(now) => {
                    fetched.push((below, now.hash));
                    k = below;
                }
                None => return (floor, fetched),
            }
        }
        (floor.min(m), fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A chain by height -> hash, reorged by bumping a version.
    struct Fake(RefCell<HashMap<u64, u32>>);

    impl Fake {
        fn hash(&self, n: u64) -> String {
            format!("0x{n:x}-{}", self.0.borrow().get(&n).copied().unwrap_or(0))
        }
        fn head(&self, n: u64) -> BlockHead {
            BlockHead {
                number: n,
                hash: self.hash(n),
                parent: self.hash(n.saturating_sub(1)),
            }
        }
        fn reorg(&self, from: u64, to: u64) {
            for n in from..=to {
                *self.0.borrow_mut().entry(n).or_default() += 1;
            }
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        crate::app::thread::block_on(false, f)
    }

    #[test]
    fn reorgs_are_found_down_to_the_first_changed_height() {
        let chain = Fake(RefCell::new(HashMap::new()));
        let fetch = |n: u64| {
            let b = chain.head(n);
            async move { Some(b) }
        };
        let mut t = Tracker::new(3, Some(10));
        // Heads 100..=105 seen one by one.
        for n in 100..=105 {
            let u = run(t.poll(chain.head(n), None, fetch)).unwrap();
            assert_eq!(
                (u.chain, u.head, u.finalized, u.reorg_from),
                (3, n, n - 10, None)
            );
        }
        assert_eq!(
            run(t.poll(chain.head(105), None, fetch)),
            None,
            "nothing changed"
        );
        // The last three blocks replaced; same height.
        chain.reorg(103, 105);
        let u = run(t.poll(chain.head(105), None, fetch)).unwrap();
        assert_eq!(u.reorg_from, Some(103));
        // The chain moved on by several blocks and a previous head was replaced meanwhile.
        chain.reorg(104, 110);
        let u = run(t.poll(chain.head(110), Some(90), fetch)).unwrap();
        assert_eq!(u.reorg_from, Some(104));
        assert_eq!(
            u.finalized, 95,
            "the tag (90) is lower than head - depth (100), and never goes back from 95"
        );
        // Nothing remembered below the change: everything unfinalized counts as replaced.
        let mut fresh = Tracker::new(0, Some(10));
        run(fresh.poll(chain.head(110), None, fetch));
        chain.reorg(107, 110);
        let u = run(fresh.poll(chain.head(110), None, fetch)).unwrap();
        assert_eq!(u.reorg_from, Some(101), "finalized 100 + 1");
    }
}
