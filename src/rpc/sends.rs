//! Safe sends. `eth_sendRawTransaction` is answered idempotently: the transaction's hash is `keccak256` of its raw
//! bytes, so a provider saying it already has it ("already known", "known transaction", "already imported"), or
//! "nonce too low" for a transaction `eth_getTransactionByHash` then finds, or a send whose answer was lost, counts
//! as success with that hash. With `broadcast_sends` the transaction goes to every healthy provider of the chain, once
//! each, concurrently. A write is never sent twice to one provider (no retry, no hedge; see `forward`). With
//! `highest_pending_nonce`, `eth_getTransactionCount(address, "pending")` asks every healthy provider and answers
//! the highest count.

use std::rc::Rc;

use futures_util::future::join_all;
use sonic_rs::JsonValueTrait;

use crate::config::Chain;
use crate::error::{Attempt, RpcError};
use crate::evm::keccak;
use crate::evm::methods::{self, MethodClass};
use crate::routing::breaker::BreakerState;
use crate::routing::health;
use crate::rpc::meta::Meta;
use crate::rpc::plan::plan;
use crate::rpc::subcall::{Answer, ask, ask_provider, forward_single};
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::telemetry::trace::RequestTrace;
use crate::wire::jsonrpc::{self, CallView};

/// Provider messages meaning "I have this transaction already".
const KNOWN_MESSAGES: &[&str] = &[
    "already known",
    "known transaction",
    "alreadyknown",
    "already imported",
    "transaction already exists",
    "tx already in mempool",
];

fn is_known(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    KNOWN_MESSAGES.iter().any(|k| m.contains(k))
}

fn nonce_too_low(message: &str) -> bool {
    message.to_ascii_lowercase().contains("nonce too low")
}

/// The hash of the raw transaction in `params` (`["0x..."]`), if it is one.
fn transaction_hash(params: &[u8]) -> Option<String> {
    let params: Vec<String> = sonic_rs::from_slice(params).ok()?;
    let raw = keccak::from_hex(params.first()?)?;
    (!raw.is_empty()).then(|| keccak::to_hex(&keccak::keccak256(&raw)))
}

/// True when a provider of the chain knows transaction `hash` (in its pool or chain).
async fn known(worker: &Rc<Worker>, target: Target, chain: &Chain, hash: &str) -> bool {
    let params = format!("[\"{hash}\"]");
    match ask(
        worker,
        target,
        chain,
        "eth_getTransactionByHash",
        &params,
        None,
    )
    .await
    {
        Ok(reply) => matches!(Answer::of(&reply), Some(Answer::Result(r)) if r.trim() != "null"),
        Err(_) => false,
    }
}

/// The candidates of a call whose breakers are not open (all of them if every one is).
fn healthy(worker: &Worker, candidates: &[usize]) -> Vec<usize> {
    let routing = worker.routing.borrow();
    let closed: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&p| health::breaker_state(&routing, p) != BreakerState::Open)
        .collect();
    if closed.is_empty() {
        candidates.to_vec()
    } else {
        closed
    }
}

/// Answers `eth_sendRawTransaction`.
pub(crate) async fn send_raw(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    trace: Option<&RequestTrace>,
) -> Result<Vec<u8>, RpcError> {
    let params = call.params.clone().map_or(&b"[]"[..], |r| &body[r]);
    let Some(hash) = transaction_hash(params) else {
        return forward_single(worker, target, chain, body, call, meta, trace).await;
    };
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    let success = || {
        worker.stats.borrow_mut().indexing.sends_idempotent += 1;
        jsonrpc::result_response(client_id, format!("\"{hash}\"").as_bytes())
    };
    if chain.indexing.broadcast_sends {
        return broadcast(worker, target, chain, body, call, &hash, client_id).await;
    }
    match forward_single(worker, target, chain, body, call, meta, trace).await {
        Ok(reply) => match Answer::of(&reply) {
            Some(Answer::Error(_, m)) if is_known(&m) => Ok(success()),
            Some(Answer::Error(_, m)) if nonce_too_low(&m) => {
                if known(worker, target, chain, &hash).await {
                    Ok(success())
                } else {
                    Ok(reply)
                }
            }
            _ => Ok(reply),
        },
        // The send may have arrived before its answer was lost: the network may have it.
        Err(e) => {
            if known(worker, target, chain, &hash).await {
                Ok(success())
            } else {
                Err(e)
            }
        }
    }
}

/// Sends the transaction to every healthy provider once; success when any accepted it or already had it.
async fn broadcast(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    hash: &str,
    client_id: &[u8],
) -> Result<Vec<u8>, RpcError> {
    let plan = plan(worker, target, chain, body, call)?;
    let pids = healthy(worker, &plan.candidates);
    worker.stats.borrow_mut().indexing.sends_broadcast += 1;
    let params = call.params.clone().map_or("[]".to_string(), |r| {
        String::from_utf8_lossy(&body[r]).into_owned()
    });
    let timeout = worker
        .config
        .routing
        .deadline(MethodClass::Write)
        .min(worker.upstream.settings().request_timeout);
    let sends = pids.iter().map(|&pid| {
        ask_provider(
            worker,
            pid,
            "eth_sendRawTransaction",
            &params,
            true,
            timeout,
        )
    });
    let replies = join_all(sends).await;
    let mut failures = Vec::new();
    let mut first_error: Option<Vec<u8>> = None;
    let mut nonce_low = false;
    for (&pid, reply) in pids.iter().zip(replies) {
        match reply {
            Ok(reply) => match Answer::of(&reply) {
                Some(Answer::Result(_)) => {
                    return Ok(jsonrpc::result_response(
                        client_id,
                        format!("\"{hash}\"").as_bytes(),
                    ));
                }
                Some(Answer::Error(_, m)) if is_known(&m) => {
                    worker.stats.borrow_mut().indexing.sends_idempotent += 1;
                    return Ok(jsonrpc::result_response(
                        client_id,
                        format!("\"{hash}\"").as_bytes(),
                    ));
                }
                Some(Answer::Error(_, m)) => {
                    nonce_low |= nonce_too_low(&m);
                    first_error.get_or_insert(reply);
                }
                None => failures.push(Attempt {
                    provider: worker.config.providers[pid].id.clone(),
                    error: "not a JSON-RPC answer".into(),
                }),
            },
            Err(error) => failures.push(Attempt {
                provider: worker.config.providers[pid].id.clone(),
                error,
            }),
        }
    }
    if (nonce_low || first_error.is_none()) && known(worker, target, chain, hash).await {
        worker.stats.borrow_mut().indexing.sends_idempotent += 1;
        return Ok(jsonrpc::result_response(
            client_id,
            format!("\"{hash}\"").as_bytes(),
        ));
    }
    match first_error {
        Some(reply) => {
            let view = jsonrpc::inspect_reply(&reply)
                .map_err(|_| RpcError::AllProvidersFailed { attempts: vec![] })?;
            let mut out = Vec::with_capacity(reply.len());
            jsonrpc::restore_id(&reply, &view, client_id, &mut out);
            Ok(out)
        }
        None => Err(RpcError::AllProvidersFailed { attempts: failures }),
    }
}

/// With `highest_pending_nonce`, answers `eth_getTransactionCount(address, "pending")` with the highest count of
/// the chain's healthy providers; `None` for any other call.
pub(crate) async fn pending_nonce(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Option<Result<Vec<u8>, RpcError>> {
    if !chain.indexing.highest_pending_nonce {
        return None;
    }
    let raw = call.params.clone().map(|r| &body[r])?;
    let params: sonic_rs::Value = sonic_rs::from_slice(raw).ok()?;
    if params.get(1).and_then(|v| v.as_str()) != Some("pending") {
        return None;
    }
    let plan = match plan(worker, target, chain, body, call) {
        Ok(plan) => plan,
        Err(e) => return Some(Err(e)),
    };
    let pids = healthy(worker, &plan.candidates);
    let params = String::from_utf8_lossy(raw).into_owned();
    let timeout = worker
        .config
        .routing
        .deadline(MethodClass::Light)
        .min(worker.upstream.settings().request_timeout);
    let asks = pids.iter().map(|&pid| {
        ask_provider(
            worker,
            pid,
            "eth_getTransactionCount",
            &params,
            false,
            timeout,
        )
    });
    let highest = join_all(asks)
        .await
        .into_iter()
        .filter_map(|r| match Answer::of(&r.ok()?)? {
            Answer::Result(raw) => sonic_rs::from_str::<String>(&raw)
                .ok()
                .and_then(|s| methods::parse_quantity(&s)),
            Answer::Error(..) => None,
        })
        .max()?;
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    Some(Ok(jsonrpc::result_response(
        client_id,
        format!("\"0x{highest:x}\"").as_bytes(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_named_by_their_hash() {
        // keccak256(0x00), as any Ethereum library computes it.
        assert_eq!(
            transaction_hash(br#"["0x00"]"#).as_deref(),
            Some("0xbc36789e7a1e281436464229828f817d6612f7b477d66591ff96a9e064bcc98a")
        );
        assert_eq!(transaction_hash(br#"["0x0"]"#), None);
        assert_eq!(transaction_hash(b"[]"), None);
        assert!(is_known("already known"));
        assert!(is_known("Known transaction: 0xabc"));
        assert!(nonce_too_low("nonce too low: next nonce 5, tx nonce 4"));
        assert!(!is_known("insufficient funds"));
    }
}
