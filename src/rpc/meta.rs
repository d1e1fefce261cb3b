//! Opt-in routing metadata for clients (`?include_meta=headers|body` or `X-Lasso-Include-Meta`): request id, strategy,
//! selected provider, candidates, retries, hedging, upstream and Lasso-overhead latency, breaker state. Headers mode
//! adds `x-lasso-request-id` and `x-lasso-meta`; body mode adds a `lasso_meta` member to each reply object.

use std::time::Duration;

use serde::Serialize;

use crate::config::Strategy;
use crate::routing::breaker::BreakerState;
use crate::rpc::reply::Reply;
use crate::rpc::target::Pick;
use crate::shard::state::Worker;

/// Whether and where the client asked for metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaMode {
    Off,
    Headers,
    Body,
}

impl MetaMode {
    /// From the query string (`include_meta=...`) or the `X-Lasso-Include-Meta` header; the query wins.
    pub fn from_request(query: &str, header: Option<&str>) -> MetaMode {
        let from_query = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "include_meta")
            .map(|(_, v)| v);
        match from_query.or(header).map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("headers") || v.eq_ignore_ascii_case("header") => {
                MetaMode::Headers
            }
            Some(v) if v.eq_ignore_ascii_case("body") => MetaMode::Body,
            _ => MetaMode::Off,
        }
    }
}

/// What one request's routing did.
#[derive(Debug, Clone)]
pub struct Meta {
    pub request_id: String,
    pub strategy: Option<Strategy>,
    pub pick_provider: bool,
    pub candidates: Vec<String>,
    pub provider: Option<String>,
    pub retries: u32,
    pub hedged: bool,
    pub upstream: Duration,
    pub breaker: BreakerState,
    /// Collected only for the routing-event stream: no request id, no candidate list (nobody reads them).
    pub events_only: bool,
}

#[derive(Serialize)]
struct MetaJson<'a> {
    request_id: &'a str,
    strategy: &'a str,
    selected_provider: Option<&'a str>,
    candidates: &'a [String],
    retries: u32,
    hedged: bool,
    upstream_latency_us: u64,
    lasso_overhead_us: u64,
    breaker_state: &'a str,
    worker: usize,
}

impl Meta {
    pub fn new(request_id: String, pick: Pick) -> Self {
        Meta {
            request_id,
            strategy: None,
            pick_provider: matches!(pick, Pick::Provider(_)),
            candidates: Vec::new(),
            provider: None,
            retries: 0,
            hedged: false,
            upstream: Duration::ZERO,
            breaker: BreakerState::Closed,
            events_only: false,
        }
    }

    /// What the routing-event stream needs of a request the client asked no metadata of and the access log skips.
    pub fn for_events(pick: Pick) -> Self {
        Meta {
            events_only: true,
            ..Meta::new(String::new(), pick)
        }
    }

    fn to_json(&self, total: Duration, worker: usize) -> Vec<u8> {
        let strategy = match (self.strategy, self.pick_provider) {
            (Some(s), _) => s.as_str(),
            (None, true) => "provider",
            (None, false) => "local",
        };
        let json = MetaJson {
            request_id: &self.request_id,
            strategy,
            selected_provider: self.provider.as_deref(),
            candidates: &self.candidates,
            retries: self.retries,
            hedged: self.hedged,
            upstream_latency_us: self.upstream.as_micros() as u64,
            lasso_overhead_us: total.saturating_sub(self.upstream).as_micros() as u64,
            breaker_state: self.breaker.as_str(),
            worker,
        };
        sonic_rs::to_vec(&json).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Adds the metadata to `reply` as the client asked.
    pub fn apply(
        self,
        mut reply: Reply,
        mode: MetaMode,
        total: Duration,
        worker: &Worker,
    ) -> Reply {
        let json = self.to_json(total, worker.index);
        reply
            .meta_headers
            .push(("x-lasso-request-id", self.request_id.clone()));
        if mode == MetaMode::Headers || reply.body.is_empty() {
            let json = String::from_utf8_lossy(&json).into_owned();
            reply.meta_headers.push(("x-lasso-meta", json));
            return reply;
        }
        reply.body = add_member(&reply.body, &json);
        reply
    }
}

/// Inserts `"lasso_meta":<json>` into the reply object, or into every object of a batch reply.
fn add_member(body: &[u8], json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + json.len() + 16);
    let insert = |obj: &[u8], out: &mut Vec<u8>| match obj.iter().rposition(|&b| b == b'}') {
        Some(end) => {
            out.extend_from_slice(&obj[..end]);
            out.extend_from_slice(b",\"lasso_meta\":");
            out.extend_from_slice(json);
            out.extend_from_slice(&obj[end..]);
        }
        None => out.extend_from_slice(obj),
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            out.push(b'[');
            for (i, item) in sonic_rs::to_array_iter(body).enumerate() {
                let Ok(item) = item else { return body.to_vec() };
                if i > 0 {
                    out.push(b',');
                }
                insert(item.as_raw_str().as_bytes(), &mut out);
            }
            out.push(b']');
        }
        _ => insert(body, &mut out),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_query_and_header() {
        assert_eq!(
            MetaMode::from_request("include_meta=body", None),
            MetaMode::Body
        );
        assert_eq!(
            MetaMode::from_request("a=1&include_meta=headers", Some("body")),
            MetaMode::Headers
        );
        assert_eq!(MetaMode::from_request("", Some("body")), MetaMode::Body);
        assert_eq!(MetaMode::from_request("", None), MetaMode::Off);
    }

    #[test]
    fn body_mode_adds_a_member_to_each_reply() {
        let single = add_member(br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#, br#"{"x":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&single).unwrap();
        assert_eq!(v["lasso_meta"]["x"], 1);
        assert_eq!(v["result"], "0x1");
        let batch = add_member(
            br#"[{"id":1,"result":1},{"id":2,"result":{"a":"}"}}]"#,
            br#"{"x":2}"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(v[1]["lasso_meta"]["x"], 2);
        assert_eq!(v[1]["result"]["a"], "}");
    }
}
