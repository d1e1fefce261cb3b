//! Consistent heads for the clients of one node. `eth_blockNumber` never goes backwards: the answer is at least the
//! worker's floor, the highest of the chain's consensus head, the highest head any worker answered (merged through
//! the routing table each interval) and the highest this worker answered. With `pin_latest` on a chain, `latest`
//! (or a missing block) in a state read is replaced by that head before routing, so consecutive reads see one block
//! whichever provider serves them.

use std::rc::Rc;

use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use crate::config::Chain;
use crate::error::RpcError;
use crate::evm::methods;
use crate::rpc::meta::Meta;
use crate::rpc::subcall::forward_single;
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::telemetry::trace::RequestTrace;
use crate::wire::jsonrpc::{self, CallView};

/// The head this worker's clients may be shown for `chain`: never lower than one shown before; `None` while unknown.
pub(crate) fn head(worker: &Worker, chain: &Chain) -> Option<u64> {
    let routing = worker.routing.borrow();
    let table = &routing.table;
    let consensus = table.chain_heads.get(chain.gid).copied().flatten();
    let merged = table.chain_floors.get(chain.gid).copied().unwrap_or(0);
    let local = routing.head_floors.get(chain.gid).copied().unwrap_or(0);
    let best = consensus.unwrap_or(0).max(merged).max(local);
    (best > 0 || consensus.is_some()).then_some(best)
}

/// Raises this worker's floor for `chain` to `n`.
fn raise(worker: &Worker, chain: &Chain, n: u64) {
    let mut routing = worker.routing.borrow_mut();
    let floors = &mut routing.head_floors;
    if floors.len() <= chain.gid {
        floors.resize(chain.gid + 1, 0);
    }
    floors[chain.gid] = floors[chain.gid].max(n);
}

/// Answers `eth_blockNumber`: the provider's head, raised to the floor when the provider is behind it.
pub(crate) async fn block_number(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    trace: Option<&RequestTrace>,
) -> Result<Vec<u8>, RpcError> {
    let reply = forward_single(worker, target, chain, body, call, meta, trace).await?;
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    Ok(floored(worker, chain, &reply, client_id).unwrap_or(reply))
}

/// An `eth_blockNumber` reply object checked against the floor: a replacement answering the floor (under
/// `client_id`) when the provider is behind it; `None` when the reply stands (its head then raises the floor).
pub(crate) fn floored(
    worker: &Worker,
    chain: &Chain,
    reply: &[u8],
    client_id: &[u8],
) -> Option<Vec<u8>> {
    // The result read in place: a quantity is a plain string (an escaped one is not read, and the reply stands).
    let result = sonic_rs::get(reply, ["result"]).ok()?;
    let quantity = result.as_raw_str().strip_prefix('"')?.strip_suffix('"')?;
    let answered = methods::parse_quantity(quantity)?;
    let floor = head(worker, chain).unwrap_or(0);
    if answered >= floor {
        raise(worker, chain, answered);
        return None;
    }
    worker.stats.borrow_mut().indexing.heads_floored += 1;
    Some(jsonrpc::result_response(
        client_id,
        format!("\"0x{floor:x}\"").as_bytes(),
    ))
}

/// With `pin_latest`, the call with `latest` (or its missing block parameter) replaced by the head: a new single
/// call body (same id, method and other parameters); `None` when nothing is to be replaced or the head is unknown.
pub(crate) fn pin_latest(
    worker: &Worker,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Option<Vec<u8>> {
    if !chain.indexing.pin_latest {
        return None;
    }
    let index = methods::block_param_index(&call.method)?;
    let raw = call.params.clone().map_or(&b"[]"[..], |r| &body[r]);
    let params: sonic_rs::Value = sonic_rs::from_slice(raw).ok()?;
    let params = params.as_array()?;
    let latest = match params.get(index) {
        Some(v) => v.as_str() == Some("latest"),
        // A missing block means `latest` (but a block-by-number call without its block is left to the provider).
        None => params.len() == index && index > 0,
    };
    if !latest {
        return None;
    }
    let pinned = head(worker, chain)?;
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",");
    if let Some(id) = call.id.clone() {
        out.extend_from_slice(b"\"id\":");
        out.extend_from_slice(&body[id]);
        out.push(b',');
    }
    out.extend_from_slice(b"\"method\":");
    out.extend_from_slice(sonic_rs::to_string(&*call.method).ok()?.as_bytes());
    out.extend_from_slice(b",\"params\":[");
    for i in 0..params.len().max(index + 1) {
        if i > 0 {
            out.push(b',');
        }
        if i == index {
            out.extend_from_slice(format!("\"0x{pinned:x}\"").as_bytes());
        } else {
            out.extend_from_slice(sonic_rs::to_string(params.get(i)?).ok()?.as_bytes());
        }
    }
    out.extend_from_slice(b"]}");
    Some(out)
}
