//! Indexer-grade handling of single calls before the ordinary path (`subcall::forward_single`): `eth_getLogs`
//! splitting (`logs_split`), consistent heads and `latest` pinned to them (`heads`), safe sends and the highest
//! pending nonce (`sends`).

use std::rc::Rc;

use crate::config::Chain;
use crate::error::RpcError;
use crate::rpc::meta::Meta;
use crate::rpc::subcall::{Forwarding, forward_call};
use crate::rpc::target::Target;
use crate::rpc::{heads, logs_split, sends};
use crate::shard::state::Worker;
use crate::upstream::stream::BodyTail;
use crate::wire::jsonrpc::{self, CallView, RequestBody};

/// True when `call` is served by this module rather than as a plain forward (a batch member then goes alone;
/// `eth_blockNumber` stays in its sub-batch, its answer raised to the floor by `heads::floored`, and so does an
/// `eth_getLogs` within the split limit, bisected by `logs_split::get_logs_after` if refused).
pub(crate) fn serves_alone(
    worker: &Worker,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> bool {
    match call.method.as_ref() {
        "eth_sendRawTransaction" => true,
        "eth_getLogs" => logs_split::splits_at_once(worker, chain, body, call),
        "eth_getTransactionCount" if chain.indexing.highest_pending_nonce => true,
        _ => heads::pin_latest(worker, chain, body, call).is_some(),
    }
}

/// Serves one single call (not answered locally) through the plan's providers, with the client's id restored.
pub(crate) async fn serve(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    how: Forwarding<'_>,
) -> Result<(Vec<u8>, Option<BodyTail>), RpcError> {
    match call.method.as_ref() {
        "eth_getLogs" if how.stream && !logs_split::splits_at_once(worker, chain, body, call) => {
            // Within the split limit: the client's own query, whose large answer may stream; a refusal as too
            // large is an error reply (never streamed) and is then bisected without sending the query again.
            let (reply, tail) = forward_call(worker, target, chain, body, call, meta, how).await?;
            if tail.is_some() || !logs_split::refused(&reply) {
                return Ok((reply, tail));
            }
            let first = Some(reply);
            let split = logs_split::get_logs_after(
                worker, target, chain, body, call, None, how.trace, first,
            );
            return whole(split.await);
        }
        "eth_getLogs" => {
            return whole(
                logs_split::get_logs(worker, target, chain, body, call, meta, how.trace).await,
            );
        }
        "eth_blockNumber" => {
            return whole(
                heads::block_number(worker, target, chain, body, call, meta, how.trace).await,
            );
        }
        "eth_sendRawTransaction" => {
            return whole(
                sends::send_raw(worker, target, chain, body, call, meta, how.trace).await,
            );
        }
        "eth_getTransactionCount" => {
            if let Some(answer) = sends::pending_nonce(worker, target, chain, body, call).await {
                return whole(answer);
            }
        }
        _ => {}
    }
    if let Some(pinned) = heads::pin_latest(worker, chain, body, call) {
        if let Ok(RequestBody::Single(pinned_call)) = jsonrpc::parse_request(&pinned) {
            worker.stats.borrow_mut().indexing.latest_pinned += 1;
            return forward_call(worker, target, chain, &pinned, &pinned_call, meta, how).await;
        }
    }
    forward_call(worker, target, chain, body, call, meta, how).await
}

/// An answer Lasso read whole (nothing left to stream).
fn whole(answer: Result<Vec<u8>, RpcError>) -> Result<(Vec<u8>, Option<BodyTail>), RpcError> {
    answer.map(|reply| (reply, None))
}
