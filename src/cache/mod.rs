//! Reusing answers on one core: in-flight multiplexing of identical reads ([`inflight`]) and the finality-aware
//! response cache behind a small layer interface ([`layer`]): the embedded per-core store ([`memory`]), keys in
//! canonical form ([`key`]) and each chain's finality as the monitor reports it ([`finality`]). What may be reused
//! is `evm::reuse`; the policy (TTLs per chain and method) is `config::cache`; the pipeline's use of it is
//! `rpc::reuse`. [`WorkerCache`] is what one worker owns of all this.

pub mod finality;
pub mod inflight;
pub mod key;
pub mod layer;
pub mod memory;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Counters of reuse on one worker beyond the store's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseCounters {
    /// Reads answered from another read's upstream call.
    pub multiplexed: u64,
    /// Requests that asked to bypass the cache.
    pub bypassed: u64,
    /// Reorgs reported by the monitor.
    pub reorgs: u64,
}

/// One worker's cache state.
pub struct WorkerCache {
    pub inflight: Rc<inflight::InFlight>,
    pub store: memory::Embedded,
    pub finality: RefCell<finality::Finality>,
    pub counters: Cell<ReuseCounters>,
}

impl WorkerCache {
    /// A worker's share: `max_bytes / workers`.
    pub fn new(max_bytes: usize, workers: usize, chains: usize) -> Self {
        WorkerCache {
            inflight: Rc::new(inflight::InFlight::default()),
            store: memory::Embedded::new(max_bytes / workers.max(1)),
            finality: RefCell::new(finality::Finality::new(chains)),
            counters: Cell::new(ReuseCounters::default()),
        }
    }

    pub fn count(&self, f: impl FnOnce(&mut ReuseCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }
}
