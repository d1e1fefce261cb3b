//! Stateful filters stay on the provider that made them. A filter lives in one node's memory, so
//! `eth_newFilter`/`eth_newBlockFilter`/`eth_newPendingTransactionFilter` go to one provider, never hedged and never
//! re-sent once they may have arrived (a second node would leak a filter), and the id handed to the client carries
//! that provider: `0x` + a 4-hex-digit tag of (chain, provider id) + the provider's own id digits. The calls that
//! use a filter (`eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`) are sent to that provider only,
//! with its own id; when it is no longer configured, the client gets "filter not found", which clients answer by
//! creating a new filter. The tag is the same on every worker, node and configuration generation.

use sonic_rs::JsonValueTrait;

use crate::config::{Chain, Config};
use crate::error::RpcError;
use crate::wire::jsonrpc::{self, CallView};

/// Digits of the provider tag in a client-facing filter id.
const TAG_DIGITS: usize = 4;

/// Methods that create a filter on the node that answers.
pub(crate) fn creates_filter(method: &str) -> bool {
    matches!(
        method,
        "eth_newFilter" | "eth_newBlockFilter" | "eth_newPendingTransactionFilter"
    )
}

/// Methods that use a filter made earlier (its id is the first parameter).
fn uses_filter(method: &str) -> bool {
    matches!(
        method,
        "eth_getFilterChanges" | "eth_getFilterLogs" | "eth_uninstallFilter"
    )
}

/// The 16-bit tag of a provider of a chain (FNV-1a).
fn tag(chain: &str, provider: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in chain.bytes().chain([0]).chain(provider.bytes()) {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

/// The client-facing id of filter `id` (a `0x` hex string from provider `pid`); `None` if it is not hex.
pub(crate) fn wrap(config: &Config, pid: usize, id: &str) -> Option<String> {
    let digits = id.strip_prefix("0x")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let p = &config.providers[pid];
    Some(format!("0x{:04x}{digits}", tag(&p.chain, &p.id)))
}

/// A filter-using call's provider and the provider's own id.
pub(crate) struct Sticky {
    pub pid: usize,
    pub provider_id: String,
}

/// Where a filter-using call must go: `Ok(None)` for any other call (or an id Lasso did not hand out), an error
/// when the provider that made the filter is gone.
pub(crate) fn sticky(
    config: &Config,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Result<Option<Sticky>, RpcError> {
    if !uses_filter(&call.method) {
        return Ok(None);
    }
    let Some(id) = call
        .params
        .clone()
        .and_then(|r| sonic_rs::from_slice::<Vec<sonic_rs::Value>>(&body[r]).ok())
        .and_then(|params| params.first().and_then(|v| v.as_str().map(str::to_string)))
    else {
        return Ok(None);
    };
    let Some(digits) = id.strip_prefix("0x").filter(|d| d.len() > TAG_DIGITS) else {
        return Ok(None);
    };
    let Ok(wanted) = u16::from_str_radix(&digits[..TAG_DIGITS], 16) else {
        return Ok(None);
    };
    let pid = chain.providers.iter().copied().find(|&pid| {
        let p = &config.providers[pid];
        tag(&p.chain, &p.id) == wanted
    });
    match pid {
        Some(pid) => Ok(Some(Sticky {
            pid,
            provider_id: format!("0x{}", &digits[TAG_DIGITS..]),
        })),
        None => Err(RpcError::FilterNotFound),
    }
}

/// The upstream form of a filter-using call: the provider's own filter id, our upstream id.
pub(crate) fn upstream_call(call: &CallView<'_>, sticky: &Sticky, uid: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(uid).as_bytes());
    out.extend_from_slice(b",\"method\":");
    out.extend_from_slice(crate::error::json_string(&call.method).as_bytes());
    out.extend_from_slice(b",\"params\":[");
    out.extend_from_slice(crate::error::json_string(&sticky.provider_id).as_bytes());
    out.extend_from_slice(b"]}");
}

/// Writes the upstream form of `call` with upstream id `uid`: rewritten for a filter-using call, else the client's
/// call with our id.
pub(crate) fn write_upstream(
    config: &Config,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    uid: u64,
    out: &mut Vec<u8>,
) {
    match sticky(config, chain, body, call) {
        Ok(Some(s)) => upstream_call(call, &s, uid, out),
        _ => jsonrpc::with_upstream_id(body, call, uid, out),
    }
}

/// The client's reply to a filter-creating call answered by `pid`: its result id wrapped with the provider's tag.
/// Anything else (an error, a non-hex id) passes unchanged.
pub(crate) fn wrap_reply(config: &Config, pid: usize, reply: Vec<u8>) -> Vec<u8> {
    let Ok(value) = sonic_rs::from_slice::<sonic_rs::Value>(&reply) else {
        return reply;
    };
    let Some(wrapped) = value
        .get("result")
        .and_then(|r| r.as_str())
        .and_then(|id| wrap(config, pid, id))
    else {
        return reply;
    };
    let id = value
        .get("id")
        .and_then(|id| sonic_rs::to_vec(id).ok())
        .unwrap_or_else(|| b"null".to_vec());
    jsonrpc::result_response(&id, crate::error::json_string(&wrapped).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_differ_between_providers() {
        assert_eq!(tag("ethereum", "p1"), tag("ethereum", "p1"));
        assert_ne!(tag("ethereum", "p1"), tag("ethereum", "p2"));
        assert_ne!(tag("ethereum", "p1"), tag("polygon", "p1"));
    }
}
