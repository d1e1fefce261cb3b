//! The proxy's one client-facing error type, [`RpcError`], and the single table that maps every error to its JSON-RPC
//! code and HTTP status. Every layer (HTTP parsing, routing, upstream) converts its own failure into an `RpcError`
//! here, so what a client sees for a given cause is decided in exactly one place.

use std::fmt::Write as _;

/// Lasso's own JSON-RPC error codes (EIP-1474 ranges where one fits, -32010.. for proxy conditions).
pub mod codes {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const LIMIT_EXCEEDED: i32 = -32005;
    pub const RESOURCE_NOT_FOUND: i32 = -32001;
    pub const METHOD_NOT_SUPPORTED: i32 = -32004;
    pub const ALL_PROVIDERS_FAILED: i32 = -32010;
    pub const NO_PROVIDER_AVAILABLE: i32 = -32011;
    pub const DEADLINE_EXCEEDED: i32 = -32012;
    pub const OVERLOADED: i32 = -32013;
    /// Missing or unknown client API key (HTTP 401).
    pub const KEY_REQUIRED: i32 = -32014;
    /// The client's key may not use this profile, chain, origin or method (HTTP 403).
    pub const KEY_FORBIDDEN: i32 = -32015;
    /// The node-level "filter not found" code geth uses (clients re-create the filter on it).
    pub const FILTER_NOT_FOUND: i32 = -32000;
}

/// What kind of resource a route named that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Chain,
    Profile,
    Provider,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Chain => "chain",
            ResourceKind::Profile => "profile",
            ResourceKind::Provider => "provider",
        }
    }
}

/// One failed attempt against one provider, reported in `data.attempts` when every provider failed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub provider: String,
    pub error: String,
}

/// Every error a client can receive from Lasso.
#[derive(Debug, Clone)]
pub enum RpcError {
    Parse(String),
    InvalidRequest(String),
    InvalidParams(String),
    BodyTooLarge {
        limit: usize,
    },
    HeadersTooLarge {
        limit: usize,
    },
    MethodNotAllowed,
    UnknownPath,
    NotFound {
        kind: ResourceKind,
        name: String,
    },
    UnknownStrategy(String),
    SubscriptionOverHttp {
        method: String,
        ws_path: String,
    },
    MethodNotSupported {
        method: String,
    },
    AllProvidersFailed {
        attempts: Vec<Attempt>,
    },
    NoProviderAvailable {
        reason: String,
    },
    DeadlineExceeded {
        attempts: Vec<Attempt>,
    },
    Overloaded(&'static str),
    /// A per-connection limit (in-flight requests, subscriptions) was reached.
    LimitExceeded(String),
    /// A filter id whose provider is no longer configured.
    FilterNotFound,
    /// A WebSocket upgrade sent from a browser origin outside `server.cors_origins`.
    OriginNotAllowed,
    /// The provider's answer could not be buffered: answers being received on this worker already hold its share of
    /// `upstream.max_buffered_response_bytes`.
    ResponseBudget,
    /// The profile needs a client API key and none, or an unknown one, was presented.
    KeyRequired,
    /// The presented key may not use this profile, chain, origin or method (what is named).
    KeyForbidden(&'static str),
    /// Over a key's or a client address's rate limit (`access`): retry after this long.
    RateLimited {
        retry_after_ms: u64,
    },
    /// An `eth_getLogs` that could not be answered whole within Lasso's limits for splitting it (sub-requests,
    /// answer bytes) or whose range no provider takes even as a single block.
    LogQueryTooLarge(String),
}

impl RpcError {
    /// The JSON-RPC error code: the one table of codes.
    pub fn code(&self) -> i32 {
        use codes::*;
        match self {
            RpcError::Parse(_) => PARSE_ERROR,
            RpcError::InvalidParams(_) => INVALID_PARAMS,
            RpcError::LimitExceeded(_)
            | RpcError::ResponseBudget
            | RpcError::RateLimited { .. }
            | RpcError::LogQueryTooLarge(_) => LIMIT_EXCEEDED,
            RpcError::InvalidRequest(_)
            | RpcError::BodyTooLarge { .. }
            | RpcError::HeadersTooLarge { .. }
            | RpcError::MethodNotAllowed
            | RpcError::OriginNotAllowed
            | RpcError::UnknownStrategy(_) => INVALID_REQUEST,
            RpcError::UnknownPath | RpcError::SubscriptionOverHttp { .. } => METHOD_NOT_FOUND,
            RpcError::NotFound { .. } => RESOURCE_NOT_FOUND,
            RpcError::MethodNotSupported { .. } => METHOD_NOT_SUPPORTED,
            RpcError::AllProvidersFailed { .. } => ALL_PROVIDERS_FAILED,
            RpcError::NoProviderAvailable { .. } => NO_PROVIDER_AVAILABLE,
            RpcError::DeadlineExceeded { .. } => DEADLINE_EXCEEDED,
            RpcError::Overloaded(_) => OVERLOADED,
            RpcError::FilterNotFound => FILTER_NOT_FOUND,
            RpcError::KeyRequired => KEY_REQUIRED,
            RpcError::KeyForbidden(_) => KEY_FORBIDDEN,
        }
    }

    /// The HTTP status when this error is the whole response (inside a batch the batch is 200).
    pub fn http_status(&self) -> u16 {
        match self {
            RpcError::Parse(_)
            | RpcError::InvalidRequest(_)
            | RpcError::InvalidParams(_)
            | RpcError::UnknownStrategy(_) => 400,
            RpcError::LimitExceeded(_) | RpcError::RateLimited { .. } => 429,
            RpcError::BodyTooLarge { .. } => 413,
            RpcError::HeadersTooLarge { .. } => 431,
            RpcError::MethodNotAllowed => 405,
            RpcError::OriginNotAllowed | RpcError::KeyForbidden(_) => 403,
            RpcError::KeyRequired => 401,
            RpcError::UnknownPath | RpcError::NotFound { .. } => 404,
            RpcError::SubscriptionOverHttp { .. }
            | RpcError::MethodNotSupported { .. }
            | RpcError::FilterNotFound
            | RpcError::LogQueryTooLarge(_) => 200,
            RpcError::AllProvidersFailed { .. } => 502,
            RpcError::NoProviderAvailable { .. }
            | RpcError::Overloaded(_)
            | RpcError::ResponseBudget => 503,
            RpcError::DeadlineExceeded { .. } => 504,
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> String {
        match self {
            RpcError::Parse(detail) => format!("Parse error: {detail}"),
            RpcError::InvalidRequest(detail) => format!("Invalid request: {detail}"),
            RpcError::InvalidParams(detail) => format!("Invalid params: {detail}"),
            RpcError::LimitExceeded(detail) => format!("Limit exceeded: {detail}"),
            RpcError::BodyTooLarge { limit } => {
                format!("Invalid request: body exceeds the limit of {limit} bytes")
            }
            RpcError::HeadersTooLarge { limit } => {
                format!("Invalid request: headers exceed the limit of {limit} bytes")
            }
            RpcError::MethodNotAllowed => "Invalid request: use POST for JSON-RPC".to_string(),
            RpcError::OriginNotAllowed => {
                "Invalid request: this origin may not open WebSocket sessions".to_string()
            }
            RpcError::UnknownPath => "Method not found: no such endpoint".to_string(),
            RpcError::NotFound { kind, name } => format!("Unknown {}: '{name}'", kind.as_str()),
            RpcError::UnknownStrategy(name) => format!(
                "Invalid request: unknown strategy '{name}'; expected one of fastest, cheapest, \
                 load-balanced, round-robin, latency-weighted, priority"
            ),
            RpcError::SubscriptionOverHttp { method, ws_path } => format!(
                "Method not found: {method} needs a WebSocket connection; connect to {ws_path}"
            ),
            RpcError::MethodNotSupported { method } => {
                format!("Method not supported: no provider of this chain serves {method}")
            }
            RpcError::AllProvidersFailed { attempts } => {
                format!("All providers failed ({} attempts)", attempts.len())
            }
            RpcError::NoProviderAvailable { reason } => format!("No provider available: {reason}"),
            RpcError::DeadlineExceeded { .. } => {
                "Request timed out waiting for providers".to_string()
            }
            RpcError::Overloaded(why) => format!("Server unavailable: {why}"),
            RpcError::ResponseBudget => {
                "Limit exceeded: provider answers being received exceed the \
                buffer budget; retry later"
                    .to_string()
            }
            RpcError::KeyRequired => {
                "Unauthorized: this profile needs a valid API key (Authorization: Bearer, X-Lasso-Key or ?key=)"
                    .to_string()
            }
            RpcError::KeyForbidden(what) => format!("Forbidden: this API key may not use this {what}"),
            RpcError::RateLimited { retry_after_ms } => {
                format!("Limit exceeded: rate limit reached; retry after {retry_after_ms} ms")
            }
            RpcError::LogQueryTooLarge(detail) => format!("Log query too large: {detail}"),
            RpcError::FilterNotFound => {
                "filter not found: the provider that created it is no longer \
                available; create a new filter"
                    .to_string()
            }
        }
    }

    /// The `data` member as raw JSON, when the error carries one.
    pub fn data_json(&self) -> Option<String> {
        match self {
            RpcError::NotFound { kind, name } => Some(format!(
                "{{\"kind\":\"{}\",\"name\":{}}}",
                kind.as_str(),
                json_string(name)
            )),
            RpcError::AllProvidersFailed { attempts } | RpcError::DeadlineExceeded { attempts } => {
                let mut out = String::from("{\"attempts\":[");
                for (i, a) in attempts.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        "{{\"provider\":{},\"error\":{}}}",
                        json_string(&a.provider),
                        json_string(&a.error)
                    );
                }
                out.push_str("]}");
                Some(out)
            }
            RpcError::NoProviderAvailable { reason } => {
                Some(format!("{{\"reason\":{}}}", json_string(reason)))
            }
            RpcError::RateLimited { retry_after_ms } => {
                Some(format!("{{\"retry_after_ms\":{retry_after_ms}}}"))
            }
            _ => None,
        }
    }

    /// A complete JSON-RPC error response object with the given raw JSON id (`null` when unknown).
    pub fn to_response(&self, raw_id: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        out.extend_from_slice(if raw_id.is_empty() { b"null" } else { raw_id });
        out.extend_from_slice(b",\"error\":{\"code\":");
        out.extend_from_slice(self.code().to_string().as_bytes());
        out.extend_from_slice(b",\"message\":");
        out.extend_from_slice(json_string(&self.message()).as_bytes());
        if let Some(data) = self.data_json() {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data.as_bytes());
        }
        out.extend_from_slice(b"}}");
        out
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.code())
    }
}

impl std::error::Error for RpcError {}

/// Encodes `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    sonic_rs::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_codes_and_statuses() {
        let rows: Vec<(RpcError, i32, u16)> = vec![
            (RpcError::Parse("x".into()), -32700, 400),
            (RpcError::InvalidRequest("x".into()), -32600, 400),
            (RpcError::BodyTooLarge { limit: 1 }, -32600, 413),
            (RpcError::HeadersTooLarge { limit: 1 }, -32600, 431),
            (RpcError::MethodNotAllowed, -32600, 405),
            (RpcError::UnknownPath, -32601, 404),
            (
                RpcError::NotFound {
                    kind: ResourceKind::Chain,
                    name: "x".into(),
                },
                -32001,
                404,
            ),
            (RpcError::UnknownStrategy("x".into()), -32600, 400),
            (
                RpcError::AllProvidersFailed { attempts: vec![] },
                -32010,
                502,
            ),
            (
                RpcError::NoProviderAvailable { reason: "r".into() },
                -32011,
                503,
            ),
            (RpcError::DeadlineExceeded { attempts: vec![] }, -32012, 504),
            (RpcError::Overloaded("draining"), -32013, 503),
            (RpcError::ResponseBudget, -32005, 503),
            (RpcError::LogQueryTooLarge("x".into()), -32005, 200),
        ];
        for (err, code, status) in rows {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.http_status(), status, "{err:?}");
            let body = err.to_response(b"7");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["id"], 7);
            assert_eq!(v["error"]["code"], code);
        }
    }

    #[test]
    fn attempts_are_reported_as_data() {
        let err = RpcError::AllProvidersFailed {
            attempts: vec![Attempt {
                provider: "p\"1".into(),
                error: "HTTP 500".into(),
            }],
        };
        let v: serde_json::Value = serde_json::from_slice(&err.to_response(b"")).unwrap();
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["data"]["attempts"][0]["provider"], "p\"1");
    }
}
