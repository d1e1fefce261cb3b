//! What one worker knows of each chain's finality: the head and the finalized head the monitor last reported, and a
//! reorg epoch that moves on every reorg. An answer is kept as final only at or below the finalized head; an answer
//! fetched across a reorg (the epoch moved while it was in flight) is not kept at all.

/// A chain's finality as the monitor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalityUpdate {
    /// Global chain index.
    pub chain: usize,
    pub head: u64,
    pub finalized: u64,
    /// A reorg replaced the blocks from this height up.
    pub reorg_from: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainFinality {
    pub head: Option<u64>,
    pub finalized: Option<u64>,
    pub epoch: u64,
}

/// Block hashes this worker learnt heights of (from block answers), at most this many; past it they are forgotten.
pub const MAX_KNOWN_BLOCKS: usize = 65_536;

/// Every chain's finality on one worker (indexed by global chain index), and the heights of block hashes seen in
/// answers, so that a state read at a block hash can be tagged with its height.
#[derive(Debug, Default)]
pub struct Finality {
    chains: Vec<ChainFinality>,
    blocks: rustc_hash::FxHashMap<(u32, Box<str>), u64>,
}

impl Finality {
    pub fn new(chains: usize) -> Self {
        Finality {
            chains: vec![ChainFinality::default(); chains],
            blocks: Default::default(),
        }
    }

    pub fn chain(&self, chain: usize) -> ChainFinality {
        self.chains.get(chain).copied().unwrap_or_default()
    }

    /// Applies an update; returns the height to purge from when it reports a reorg.
    pub fn apply(&mut self, u: FinalityUpdate) -> Option<u64> {
        let c = self.chains.get_mut(u.chain)?;
        c.head = Some(u.head);
        // The finalized head never goes back.
        c.finalized = Some(c.finalized.map_or(u.finalized, |f| f.max(u.finalized)));
        if let Some(from) = u.reorg_from {
            c.epoch += 1;
            let chain = u.chain as u32;
            self.blocks.retain(|(c, _), h| *c != chain || *h < from);
        }
        u.reorg_from
    }

    /// Remembers that `hash` (lower case) is the block at `height` on `chain`.
    pub fn learn_block(&mut self, chain: u32, hash: &str, height: u64) {
        if self.blocks.len() >= MAX_KNOWN_BLOCKS {
            self.blocks.clear();
        }
        self.blocks
            .insert((chain, hash.to_ascii_lowercase().into()), height);
    }

    /// The height of block `hash` on `chain`, if an answer told it.
    pub fn block_height(&self, chain: u32, hash: &str) -> Option<u64> {
        self.blocks
            .get(&(chain, hash.to_ascii_lowercase().into()))
            .copied()
    }

    /// Whether an answer about `height` is final on `chain`.
    pub fn is_final(&self, chain: usize, height: u64) -> bool {
        self.chain(chain).finalized.is_some_and(|f| height <= f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalized_heads_only_advance_and_reorgs_move_the_epoch() {
        let mut f = Finality::new(2);
        assert!(
            !f.is_final(0, 0),
            "nothing is final before the monitor reports"
        );
        let up = |head, finalized, reorg_from| FinalityUpdate {
            chain: 0,
            head,
            finalized,
            reorg_from,
        };
        assert_eq!(f.apply(up(100, 90, None)), None);
        assert!(f.is_final(0, 90) && !f.is_final(0, 91) && !f.is_final(1, 1));
        f.learn_block(0, "0xAA", 94);
        f.learn_block(0, "0xbb", 95);
        assert_eq!(f.block_height(0, "0xaa"), Some(94));
        assert_eq!(f.apply(up(101, 80, Some(95))), Some(95));
        assert_eq!(f.block_height(0, "0xaa"), Some(94));
        assert_eq!(
            f.block_height(0, "0xbb"),
            None,
            "forgotten from the reorg up"
        );
        assert_eq!(f.chain(0).finalized, Some(90));
        assert_eq!(f.chain(0).epoch, 1);
    }
}
