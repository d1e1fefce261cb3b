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

/// Every chain's finality on one worker (indexed by global chain index).
#[derive(Debug, Default)]
pub struct Finality {
    chains: Vec<ChainFinality>,
}

impl Finality {
    pub fn new(chains: usize) -> Self {
        Finality {
            chains: vec![ChainFinality::default(); chains],
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
        if u.reorg_from.is_some() {
            c.epoch += 1;
        }
        u.reorg_from
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
        assert_eq!(f.apply(up(101, 80, Some(95))), Some(95));
        assert_eq!(f.chain(0).finalized, Some(90));
        assert_eq!(f.chain(0).epoch, 1);
    }
}
