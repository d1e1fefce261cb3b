//! The state of request coalescing on one worker: calls waiting to be sent, per provider and method class, and the
//! providers that refused a batch. The upstream client holds it; [`super::coalesce`] fills and drains it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_channel::oneshot;

use super::error::{UpstreamError, UpstreamResponse};
use crate::evm::methods::MethodClass;

pub(super) struct Waiter {
    pub(super) body: Vec<u8>,
    pub(super) uid: u64,
    pub(super) timeout: Duration,
    pub(super) reply: oneshot::Sender<Result<UpstreamResponse, UpstreamError>>,
}

/// Calls waiting to be sent, per provider and method class.
#[derive(Default)]
pub struct Coalescer {
    pub(super) queues: RefCell<HashMap<(usize, MethodClass), Vec<Waiter>>>,
    /// Providers that refused a batch.
    pub(super) no_batch: RefCell<HashSet<usize>>,
}
