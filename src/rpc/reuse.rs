//! Reusing answers in the pipeline, before and after forwarding one call: a cached answer is served with the
//! client's id; otherwise identical reads in flight on this worker share one upstream call (the first leads, the
//! others follow and each gets its own id back); the outcome is kept when the policy allows it. What may be reused
//! is `evm::reuse`; what the worker holds is `cache::WorkerCache`; the chain's policy is `config::cache`.
//!
//! Kept: successful answers (never errors), empty ones only with `cache_empty`, no larger than
//! `cache.max_entry_bytes`, about blocks at or below the chain's finalized head for `finalized_ttl_ms`, about newer
//! blocks (or a block whose height is not known) for `unfinalized_ttl_ms`; an answer fetched while a reorg was
//! reported is not kept. Requests pinned to one provider are never reused: the client asked for that provider.

use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use crate::cache::finality::FinalityUpdate;
use crate::cache::inflight::{Join, Outcome};
use crate::cache::layer::{Answer, CacheLayer, Tag, UNKNOWN_HEIGHT};
use crate::config::{Chain, MethodRule};
use crate::error::RpcError;
use crate::evm::reuse::{
    AnswerHeight, Reuse, answer_height, deterministic_read, is_empty_result, reuse,
    state_block_hash,
};
use crate::rpc::forward::Forwarded;
use crate::rpc::target::{Pick, Target};
use crate::shard::state::Worker;
use crate::upstream::stream::BodyTail;
use crate::wire::jsonrpc::{CallView, ReplyView};

/// One call that may be reused, and how.
pub(crate) struct Prepared {
    key: Vec<u8>,
    reuse: Reuse,
    rule: MethodRule,
    gid: usize,
    /// Share with identical calls in flight.
    multiplex: bool,
    /// Read from and fill the cache.
    keep: bool,
    /// The chain's reorg epoch when the call started.
    epoch: u64,
    /// A block answer: its hash and height are remembered for state reads at that hash.
    block: bool,
}

impl Prepared {
    /// Its answer may be read from and kept in the cache (then it is read whole, never streamed).
    pub(crate) fn keeps(&self) -> bool {
        self.keep
    }
}

/// How `call` may be reused, or `None` when it is forwarded as usual.
pub(crate) fn prepare(
    worker: &Worker,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Option<Prepared> {
    let multiplex = worker.config.cache.multiplex;
    let rule = chain.cache.rule(&call.method);
    if !(multiplex || rule.enabled)
        || !matches!(target.pick, Pick::Strategy(_))
        || !deterministic_read(&call.method)
    {
        return None;
    }
    let params: Option<sonic_rs::Value> = match call.params.clone() {
        Some(r) => Some(sonic_rs::from_slice(&body[r]).ok()?),
        None => None,
    };
    let mut reuse = reuse(&call.method, params.as_ref());
    if !reuse.shareable() {
        return None;
    }
    if reuse == Reuse::InAnswer(AnswerHeight::Unknown) {
        // State at a block hash: at that block's height when a block answer told it.
        let finality = worker.cache.finality.borrow();
        if let Some(h) = state_block_hash(&call.method, params.as_ref())
            .and_then(|hash| finality.block_height(chain.gid as u32, hash))
        {
            reuse = Reuse::At(h);
        }
    }
    if target.cache_bypass && rule.enabled && reuse.keepable() {
        worker.cache.count(|c| c.bypassed += 1);
    }
    let keep = rule.enabled && reuse.keepable() && !target.cache_bypass;
    if !(multiplex || keep) {
        return None;
    }
    Some(Prepared {
        key: crate::cache::key::key(chain.gid as u32, &call.method, params.as_ref()),
        reuse,
        rule,
        gid: chain.gid,
        multiplex,
        keep,
        epoch: worker.cache.finality.borrow().chain(chain.gid).epoch,
        block: matches!(&*call.method, "eth_getBlockByNumber" | "eth_getBlockByHash"),
    })
}

/// The reply object of a forwarded call, its id cut out.
pub(crate) fn answer_of(forwarded: &Forwarded) -> Answer {
    answer_at(&forwarded.body, &forwarded.views[0])
}

/// A whole reply object Lasso built or restored (under any id) as an answer to share or keep.
pub(crate) fn answer_of_reply(reply: Vec<u8>) -> Result<Answer, RpcError> {
    let view = crate::wire::jsonrpc::inspect_reply(&reply).map_err(|e| {
        RpcError::LogQueryTooLarge(format!("the joined answer could not be read: {e:?}"))
    })?;
    Ok(answer_at(&reply, &view))
}

/// The reply object `view` of `body`, its id cut out.
pub(crate) fn answer_at(body: &[u8], view: &ReplyView) -> Answer {
    Answer {
        body: Rc::from(&body[view.span.clone()]),
        id: (view.id.start - view.span.start)..(view.id.end - view.span.start),
    }
}

/// The cached answer of a prepared call, if it may be read from the cache and is there (batch members; they are
/// not multiplexed: a sub-batch travels as one).
pub(crate) async fn cached(worker: &Worker, p: &Prepared) -> Option<Answer> {
    if !p.keep {
        return None;
    }
    worker.cache.store.get(&p.key, Instant::now()).await
}

/// What a fetch for a reusable call brought: an answer read whole (shared with followers and kept as the policy
/// allows), or a large answer streaming to this client (its first bytes, the client's id spliced in, and the rest).
/// A streamed answer is neither shared nor kept: its followers ask for themselves, as they would for any answer too
/// large to copy (see [`copies`]).
pub(crate) enum Fetched {
    Whole(Outcome),
    Streamed(Vec<u8>, BodyTail),
}

/// Serves a prepared call: from the cache, from an identical call in flight, or by `fetch` (then kept when the
/// policy allows). The reply object under `client_id`, and the rest of it when it streams.
pub(crate) async fn serve<F, Fut>(
    worker: &Rc<Worker>,
    p: Prepared,
    client_id: &[u8],
    fetch: F,
) -> Result<(Vec<u8>, Option<BodyTail>), RpcError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Fetched>,
{
    if p.keep {
        if let Some(answer) = worker.cache.store.get(&p.key, Instant::now()).await {
            return Ok((answer.with_id(client_id), None));
        }
    }
    if p.multiplex {
        match worker.cache.inflight.join(&p.key) {
            Join::Follow(rx) => {
                if let Ok(outcome) = rx.await {
                    worker.cache.count(|c| c.multiplexed += 1);
                    return outcome.map(|a| (a.with_id(client_id), None));
                }
                // The leader went away without an answer (or streamed it): ask ourselves.
            }
            Join::Lead(lead) => {
                return match fetch().await {
                    // Dropping `lead` releases the followers: they ask for themselves.
                    Fetched::Streamed(first, tail) => Ok((first, Some(tail))),
                    Fetched::Whole(outcome) => {
                        keep(worker, &p, &outcome).await;
                        lead.finish(&outcome, copies(worker, &outcome));
                        outcome.map(|a| (a.with_id(client_id), None))
                    }
                };
            }
        }
    }
    match fetch().await {
        Fetched::Streamed(first, tail) => Ok((first, Some(tail))),
        Fetched::Whole(outcome) => {
            keep(worker, &p, &outcome).await;
            outcome.map(|a| (a.with_id(client_id), None))
        }
    }
}

/// How many followers may get a copy of `outcome`: each follower's reply is a copy of the answer, as its own
/// upstream answer would have been, so the copies handed out at once fit half of what is free of the worker's
/// budget of buffered answer bytes; the followers past that make the call themselves, under that budget (a flood of
/// identical reads for a large answer is bounded as a flood of distinct ones is).
fn copies(worker: &Worker, outcome: &Outcome) -> usize {
    match outcome {
        Ok(answer) => {
            let budget = worker.upstream.budget();
            budget.limit().saturating_sub(budget.used()) / 2 / answer.len().max(1)
        }
        Err(_) => usize::MAX,
    }
}

/// Keeps a successful answer when the policy allows it.
pub(crate) async fn keep(worker: &Worker, p: &Prepared, outcome: &Outcome) {
    let Ok(answer) = outcome else { return };
    if !p.keep || answer.len() > worker.config.cache.max_entry_bytes {
        return;
    }
    // Errors are never kept: only replies with a `result`.
    let Ok(result) = sonic_rs::get(&answer.body[..], ["result"]) else {
        return;
    };
    let result = result.as_raw_str().as_bytes();
    if !p.rule.cache_empty && is_empty_result(result) {
        return;
    }
    let height = match p.reuse {
        Reuse::At(h) => h,
        Reuse::InAnswer(AnswerHeight::Unknown) => UNKNOWN_HEIGHT,
        // Not in a block yet (a pending transaction), or empty: kept as unknown only when empty results are.
        Reuse::InAnswer(from) => match answer_height(result, from) {
            Some(h) => h,
            None if is_empty_result(result) => UNKNOWN_HEIGHT,
            None => return,
        },
        Reuse::InFlight | Reuse::Never => return,
    };
    let ttl = {
        let mut finality = worker.cache.finality.borrow_mut();
        if finality.chain(p.gid).epoch != p.epoch {
            // A reorg was reported while this call was in flight: its answer may be from the abandoned branch.
            return;
        }
        if p.block && height != UNKNOWN_HEIGHT {
            if let Some(hash) = block_hash(result) {
                finality.learn_block(p.gid as u32, &hash, height);
            }
        }
        if height != UNKNOWN_HEIGHT && finality.is_final(p.gid, height) {
            p.rule.finalized_ttl
        } else {
            p.rule.unfinalized_ttl
        }
    };
    let tag = Tag {
        chain: p.gid as u32,
        height,
        ttl,
    };
    worker
        .cache
        .store
        .put(&p.key, answer.clone(), tag, Instant::now())
        .await;
}

/// The `hash` of a block answer's result.
fn block_hash(result: &[u8]) -> Option<String> {
    use sonic_rs::JsonValueTrait;
    let v = sonic_rs::get(result, ["hash"]).ok()?;
    v.as_str()
        .filter(|h| h.len() == 66 && h.starts_with("0x"))
        .map(str::to_string)
}

/// A chain's finality from the monitor: recorded, and a reorg purges the chain's answers from its height up.
pub(crate) async fn on_finality(worker: &Worker, update: FinalityUpdate) {
    let reorg = worker.cache.finality.borrow_mut().apply(update);
    if let Some(from) = reorg {
        worker.cache.count(|c| c.reorgs += 1);
        let purged = worker
            .cache
            .store
            .purge_from(update.chain as u32, from)
            .await;
        tracing::debug!(
            worker = worker.index,
            chain = update.chain,
            from,
            purged,
            "reorg: cached answers purged"
        );
    }
}
