//! `eth_getLogs` over ranges providers refuse. The filter's `fromBlock`/`toBlock` are resolved to numbers (tags
//! `latest`/`pending` to the consistent head of `heads`, `earliest` to 0, a missing bound to `latest`). A range within
//! the limit goes untouched (split only if refused); a range longer than the chain's `max_logs_range` (lowered by any
//! of its providers' own) is cut into chunks sent concurrently
//! (`logs_concurrency` at a time, each routed like a client's call) and the answers are joined in block order. A
//! chunk a provider refuses as too large ("query returned more than 10000 results", "block range too large",
//! "response size exceeded") is bisected by block range, and a single block still too large by its address list.
//! All or nothing: any chunk failing fails the request (its provider's error, or `LogQueryTooLarge`), within
//! `logs_max_requests` upstream calls and `upstream.max_response_bytes` of joined answer. Filters by `blockHash`
//! (EIP-234) and ranges with tags that cannot be resolved (`safe`, `finalized`, an unknown head) pass untouched.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use futures_util::StreamExt;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use crate::config::Chain;
use crate::error::RpcError;
use crate::evm::methods;
use crate::rpc::heads;
use crate::rpc::meta::Meta;
use crate::rpc::subcall::{Answer, ask, forward_single};
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::telemetry::trace::RequestTrace;
use crate::wire::jsonrpc::{self, CallView};

/// One piece of a split query: a block range and, when split by address, a share of the address list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    from: u64,
    to: u64,
    /// Raw JSON of the `address` member for this piece (`None` = as the client gave it, or absent).
    address: Option<Vec<String>>,
}

/// The client's filter with its range resolved.
struct Query {
    /// Raw JSON of every member but `fromBlock`, `toBlock` and `address`: `"key":value`.
    members: Vec<String>,
    /// The client's `address` member as raw JSON strings (one entry for a single address), if any.
    addresses: Option<Vec<String>>,
    from: u64,
    to: u64,
}

/// Why a split query failed.
enum Failure {
    Lasso(RpcError),
    /// A provider's JSON-RPC error reply (id 1): the answer, with the client's id.
    Provider(Vec<u8>),
}

/// Shared by a query's pieces: upstream calls left and joined bytes so far.
struct Limits {
    calls_left: Cell<usize>,
    bytes: Cell<usize>,
    max_bytes: usize,
}

/// Provider messages saying a log query is too large for it (its range, its result count or its answer size).
const TOO_LARGE: &[&str] = &[
    "query returned more than",
    "range too large",
    "range is too large",
    "range is too wide",
    "range too wide",
    "too many blocks",
    "too many results",
    "response size exceeded",
    "response size should not",
    "log response size",
    "exceed maximum block range",
    "exceeds maximum block range",
    "maximum block range",
    "block range limit",
];

/// True for a provider error saying this query is too large for it (not, say, a range beyond the head).
fn too_large(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    TOO_LARGE.iter().any(|n| m.contains(n))
}

/// The longest range sent as one call: the chain's `max_logs_range` lowered by any of its providers' (0 = none).
fn range_limit(worker: &Worker, chain: &Chain) -> u64 {
    let own = chain
        .providers
        .iter()
        .filter_map(|&p| worker.config.providers[p].max_logs_range)
        .filter(|&l| l > 0)
        .min();
    match (chain.indexing.max_logs_range, own) {
        (0, Some(l)) => l,
        (c, Some(l)) => c.min(l),
        (c, None) => c,
    }
}

fn bound(value: Option<&sonic_rs::Value>, head: Option<u64>) -> Option<u64> {
    let Some(v) = value else {
        return head;
    };
    match v.as_str()? {
        "latest" | "pending" => head,
        "earliest" => Some(0),
        text => methods::parse_quantity(text),
    }
}

/// The client's filter resolved, or `None` when it passes untouched.
fn resolve(worker: &Worker, chain: &Chain, params: &[u8]) -> Option<Query> {
    let params: sonic_rs::Value = sonic_rs::from_slice(params).ok()?;
    let params = params.as_array()?;
    if params.len() != 1 {
        return None;
    }
    let filter = params.first()?.as_object()?;
    if filter.get(&"blockHash").is_some() {
        return None;
    }
    let head = heads::head(worker, chain);
    let from = bound(filter.get(&"fromBlock"), head)?;
    let to = bound(filter.get(&"toBlock"), head)?;
    if from > to {
        return None;
    }
    let mut members = Vec::new();
    let mut addresses = None;
    for (key, value) in filter.iter() {
        match key {
            "fromBlock" | "toBlock" => {}
            "address" => {
                addresses = Some(match value.as_array() {
                    Some(list) => list
                        .iter()
                        .map(|a| sonic_rs::to_string(a).ok())
                        .collect::<Option<Vec<_>>>()?,
                    None => vec![sonic_rs::to_string(value).ok()?],
                });
            }
            _ => members.push(format!(
                "{}:{}",
                sonic_rs::to_string(key).ok()?,
                sonic_rs::to_string(value).ok()?
            )),
        }
    }
    Some(Query {
        members,
        addresses,
        from,
        to,
    })
}

impl Query {
    fn params(&self, piece: &Piece) -> String {
        let mut out = String::from("[{");
        for m in &self.members {
            out.push_str(m);
            out.push(',');
        }
        if let Some(list) = piece.address.as_ref().or(self.addresses.as_ref()) {
            out.push_str("\"address\":[");
            out.push_str(&list.join(","));
            out.push_str("],");
        }
        out.push_str(&format!(
            "\"fromBlock\":\"0x{:x}\",\"toBlock\":\"0x{:x}\"}}]",
            piece.from, piece.to
        ));
        out
    }
}

/// The chunks of `from..=to` of at most `limit` blocks (one chunk when `limit` is 0).
fn chunks(from: u64, to: u64, limit: u64) -> Vec<(u64, u64)> {
    if limit == 0 {
        return vec![(from, to)];
    }
    let mut out = Vec::new();
    let mut start = from;
    loop {
        let end = start.saturating_add(limit - 1).min(to);
        out.push((start, end));
        if end == to {
            return out;
        }
        start = end + 1;
    }
}

/// True when `call` is an `eth_getLogs` longer than the split limit (split before anything is sent).
pub(crate) fn splits_at_once(
    worker: &Worker,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> bool {
    let limit = range_limit(worker, chain);
    let params = call.params.clone().map_or(&b"[]"[..], |r| &body[r]);
    limit > 0 && resolve(worker, chain, params).is_some_and(|q| q.to - q.from >= limit)
}

/// True when a reply object is a provider's refusal of a log query as too large.
pub(crate) fn refused(reply: &[u8]) -> bool {
    matches!(Answer::of(reply), Some(Answer::Error(_, m)) if too_large(&m))
}

/// Answers `eth_getLogs`: split and joined when its range can be resolved, else forwarded untouched.
pub(crate) async fn get_logs(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    trace: Option<&RequestTrace>,
) -> Result<Vec<u8>, RpcError> {
    get_logs_after(worker, target, chain, body, call, meta, trace, None).await
}

/// [`get_logs`] when the client's whole query may already have been answered: `first` is that answer (a reply
/// object under the client's id), a refusal then bisected without sending the whole query again.
// The request's parts (target, chain, body, call), its metadata and trace, and the answer already in hand.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn get_logs_after(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    trace: Option<&RequestTrace>,
    first: Option<Vec<u8>>,
) -> Result<Vec<u8>, RpcError> {
    let params = call.params.clone().map_or(&b"[]"[..], |r| &body[r]);
    let Some(query) = resolve(worker, chain, params) else {
        return forward_single(worker, target, chain, body, call, meta, trace).await;
    };
    let settings = &chain.indexing;
    let limit = range_limit(worker, chain);
    let whole = Piece {
        from: query.from,
        to: query.to,
        address: None,
    };
    let mut calls_left = settings.logs_max_requests;
    let pieces: Vec<Piece> = if limit == 0 || query.to - query.from < limit {
        // Within the limit: the client's own query, untouched (its tags as the provider reads them); split only if
        // refused as too large.
        let reply = match first {
            Some(reply) => reply,
            None => forward_single(worker, target, chain, body, call, meta, trace).await?,
        };
        match bisect(&query, &whole) {
            Some(halves) if refused(&reply) => {
                calls_left = calls_left.saturating_sub(1);
                let mut stats = worker.stats.borrow_mut();
                stats.indexing.logs_subrequests += 1;
                stats.indexing.logs_bisections += 1;
                halves.into()
            }
            _ => return Ok(reply),
        }
    } else {
        // Counted before any is built: a client's range may be any u64 span.
        let needed = ((query.to - query.from) / limit).saturating_add(1);
        if needed > settings.logs_max_requests as u64 {
            return Err(RpcError::LogQueryTooLarge(format!(
                "blocks {}..{} need {needed} calls of at most {limit} blocks; the limit is {} (logs_max_requests)",
                query.from, query.to, settings.logs_max_requests
            )));
        }
        chunks(query.from, query.to, limit)
            .into_iter()
            .map(|(from, to)| Piece {
                from,
                to,
                address: None,
            })
            .collect()
    };
    let limits = Limits {
        calls_left: Cell::new(calls_left),
        bytes: Cell::new(0),
        max_bytes: worker.config.upstream.max_response_bytes,
    };
    worker.stats.borrow_mut().indexing.logs_split += 1;
    let query = &query;
    let limits = &limits;
    let results: Vec<Result<Vec<String>, Failure>> = futures_util::stream::iter(pieces)
        .map(|piece| fetch(worker, target, chain, query, piece, limits))
        .buffered(settings.logs_concurrency)
        .collect()
        .await;
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    let mut joined = String::with_capacity(limits.bytes.get() + 2);
    joined.push('[');
    for result in results {
        match result {
            Ok(parts) => {
                for part in parts {
                    if joined.len() > 1 {
                        joined.push(',');
                    }
                    joined.push_str(&part);
                }
            }
            Err(Failure::Lasso(e)) => return Err(e),
            Err(Failure::Provider(reply)) => return Ok(with_client_id(reply, client_id)),
        }
    }
    joined.push(']');
    Ok(jsonrpc::result_response(client_id, joined.as_bytes()))
}

/// A reply object (id 1) with the client's id.
fn with_client_id(reply: Vec<u8>, client_id: &[u8]) -> Vec<u8> {
    match jsonrpc::inspect_reply(&reply) {
        Ok(view) => {
            let mut out = Vec::with_capacity(reply.len() + client_id.len());
            jsonrpc::restore_id(&reply, &view, client_id, &mut out);
            out
        }
        Err(_) => reply,
    }
}

type Fetched<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, Failure>> + 'a>>;

/// The logs of one piece, as the inner members of its JSON array (in order), bisecting what a provider refuses.
fn fetch<'a>(
    worker: &'a Rc<Worker>,
    target: Target,
    chain: &'a Chain,
    query: &'a Query,
    piece: Piece,
    limits: &'a Limits,
) -> Fetched<'a> {
    Box::pin(async move {
        let left = limits.calls_left.get();
        if left == 0 {
            return Err(Failure::Lasso(RpcError::LogQueryTooLarge(format!(
                "splitting blocks {}..{} needs more than {} calls (logs_max_requests)",
                query.from, query.to, chain.indexing.logs_max_requests
            ))));
        }
        limits.calls_left.set(left - 1);
        worker.stats.borrow_mut().indexing.logs_subrequests += 1;
        let reply = ask(
            worker,
            target,
            chain,
            "eth_getLogs",
            &query.params(&piece),
            None,
        )
        .await
        .map_err(Failure::Lasso)?;
        match Answer::of(&reply) {
            Some(Answer::Result(raw)) => {
                let inner = raw.trim();
                let inner = inner
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .map(str::trim)
                    .ok_or_else(|| Failure::Provider(reply.clone()))?;
                let total = limits.bytes.get() + inner.len() + 1;
                if total > limits.max_bytes {
                    return Err(Failure::Lasso(RpcError::LogQueryTooLarge(format!(
                        "the logs of blocks {}..{} exceed {} bytes (upstream.max_response_bytes)",
                        query.from, query.to, limits.max_bytes
                    ))));
                }
                limits.bytes.set(total);
                Ok(if inner.is_empty() {
                    Vec::new()
                } else {
                    vec![inner.to_string()]
                })
            }
            Some(Answer::Error(_, message)) if too_large(&message) => {
                let halves = bisect(query, &piece).ok_or_else(|| {
                    Failure::Lasso(RpcError::LogQueryTooLarge(format!(
                        "block {} alone is refused by the providers: {message}",
                        piece.from
                    )))
                })?;
                worker.stats.borrow_mut().indexing.logs_bisections += 1;
                let mut parts = Vec::new();
                for half in halves {
                    parts.extend(fetch(worker, target, chain, query, half, limits).await?);
                }
                Ok(parts)
            }
            _ => Err(Failure::Provider(reply)),
        }
    })
}

/// The two halves of a refused piece: by block range, or for a single block by its address list.
fn bisect(query: &Query, piece: &Piece) -> Option<[Piece; 2]> {
    if piece.from < piece.to {
        let mid = piece.from + (piece.to - piece.from) / 2;
        return Some([
            Piece {
                to: mid,
                ..piece.clone()
            },
            Piece {
                from: mid + 1,
                ..piece.clone()
            },
        ]);
    }
    let list = piece.address.as_ref().or(query.addresses.as_ref())?;
    if list.len() < 2 {
        return None;
    }
    let (a, b) = list.split_at(list.len() / 2);
    Some([
        Piece {
            address: Some(a.to_vec()),
            ..piece.clone()
        },
        Piece {
            address: Some(b.to_vec()),
            ..piece.clone()
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_into_whole_chunks() {
        assert_eq!(chunks(5, 5, 1000), vec![(5, 5)]);
        assert_eq!(
            chunks(0, 2500, 1000),
            vec![(0, 999), (1000, 1999), (2000, 2500)]
        );
        assert_eq!(chunks(0, 1999, 1000), vec![(0, 999), (1000, 1999)]);
        assert_eq!(chunks(7, 9000, 0), vec![(7, 9000)]);
        assert_eq!(
            chunks(u64::MAX - 1, u64::MAX, 1000),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn refusals_are_told_from_missing_blocks() {
        assert!(too_large("query returned more than 10000 results"));
        assert!(too_large("Block range is too large"));
        assert!(too_large(
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"
        ));
        assert!(!too_large("header not found"));
        assert!(!too_large("block range extends beyond current head block"));
        assert!(!too_large("execution reverted"));
    }

    #[test]
    fn a_single_block_is_bisected_by_address() {
        let query = Query {
            members: vec![],
            addresses: Some(vec!["\"0xa\"".into(), "\"0xb\"".into(), "\"0xc\"".into()]),
            from: 1,
            to: 1,
        };
        let piece = Piece {
            from: 1,
            to: 1,
            address: None,
        };
        let [a, b] = bisect(&query, &piece).unwrap();
        assert_eq!(a.address.as_deref(), Some(&["\"0xa\"".to_string()][..]));
        assert_eq!(b.address.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            query.params(&a),
            r#"[{"address":["0xa"],"fromBlock":"0x1","toBlock":"0x1"}]"#
        );
        let one = Query {
            addresses: Some(vec!["\"0xa\"".into()]),
            ..query
        };
        assert!(bisect(&one, &piece).is_none());
    }
}
