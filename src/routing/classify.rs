//! The classification table: what an upstream attempt's outcome means for the client, the retry, the breaker and the
//! statistics. Every rule (HTTP status, JSON-RPC error code, provider-specific messages) lives here and nowhere else.

use std::time::Duration;

use crate::upstream::FailureKind;

/// What kind of provider failure counts against the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    Connect,
    Timeout,
    /// Reset, 5xx, malformed body.
    Server,
    /// The reply cannot serve this request (ids that do not match it, an answer over the size limit): the request
    /// goes elsewhere, but a client can provoke this at will, so it never counts against the provider's breaker.
    Reply,
}

impl FailureClass {
    pub fn from_transport(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Connect => FailureClass::Connect,
            FailureKind::Timeout => FailureClass::Timeout,
            FailureKind::Reset | FailureKind::Protocol => FailureClass::Server,
            FailureKind::TooLarge | FailureKind::Budget => FailureClass::Reply,
        }
    }
}

/// The meaning of one upstream outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Category {
    /// A result: return it.
    Success,
    /// A JSON-RPC error that is the answer (revert, invalid params, nonce too low...): return as-is, never retry.
    Deterministic,
    /// Throttled: cool the provider down (honouring Retry-After), no breaker penalty, try the next.
    RateLimited { retry_after: Option<Duration> },
    /// The provider cannot serve this method or block: try the next, no penalty, remember per method.
    Capability,
    /// The provider cannot serve this one request (a block it has not seen yet, a log range or answer too large for
    /// it): try the next, no penalty, nothing remembered (the next request may be fine).
    ThisRequest,
    /// The provider is failing: breaker penalty, retry reads elsewhere.
    ProviderFailure(FailureClass),
}

impl Category {
    /// True when the request should go to the next provider (for reads).
    pub fn retry_elsewhere(&self) -> bool {
        matches!(
            self,
            Category::RateLimited { .. }
                | Category::Capability
                | Category::ThisRequest
                | Category::ProviderFailure(_)
        )
    }
}

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

const RATE_LIMIT_MESSAGES: &[&str] = &[
    "rate limit",
    "rate-limit",
    "ratelimit",
    "too many requests",
    "request limit",
    "requests limit",
    "exceeded its compute units",
    "compute units per second",
    "capacity exceeded",
    "throughput",
    "daily request count exceeded",
    "credits",
    "quota",
    "try again later",
    "limit reached",
];

const CAPABILITY_MESSAGES: &[&str] = &[
    "method not found",
    "method not supported",
    "not supported",
    "unsupported method",
    "does not exist/is not available",
    "is not available",
    "not whitelisted",
    "missing trie node",
    "historical state",
    "pruned",
    "archive",
];

/// Errors about one request, not the method: a block the provider has not seen (yet), a log query too large for it.
const THIS_REQUEST_MESSAGES: &[&str] = &[
    "header not found",
    "unknown block",
    "block not found",
    "query returned more than",
    "block range",
    "range too large",
    "range is too large",
    "too many blocks",
    "too many results",
    "response size exceeded",
    "response size should not",
    "log response size",
    "exceed maximum block range",
];

const DETERMINISTIC_MESSAGES: &[&str] = &[
    "execution reverted",
    "revert",
    "insufficient funds",
    "nonce too low",
    "nonce too high",
    "already known",
    "replacement transaction underpriced",
    "intrinsic gas too low",
    "gas required exceeds",
    "invalid opcode",
    "out of gas",
    "invalid argument",
    "invalid params",
    "cannot unmarshal",
    "transaction underpriced",
    "max fee per gas less than block base fee",
];

/// Classifies a JSON-RPC error object from a provider.
pub fn classify_rpc_error(code: i64, message: &str) -> Category {
    let m = message.to_ascii_lowercase();
    if code == 3 || contains_any(&m, DETERMINISTIC_MESSAGES) {
        return Category::Deterministic;
    }
    if code == -32005
        || code == -32007
        || code == -32029
        || code == 429
        || contains_any(&m, RATE_LIMIT_MESSAGES)
    {
        // -32005 also means "query returned more than N results" at some providers: that is capability.
        if contains_any(&m, THIS_REQUEST_MESSAGES) {
            return Category::ThisRequest;
        }
        if contains_any(&m, CAPABILITY_MESSAGES) {
            return Category::Capability;
        }
        return Category::RateLimited { retry_after: None };
    }
    if contains_any(&m, THIS_REQUEST_MESSAGES) {
        return Category::ThisRequest;
    }
    if code == -32601 || code == -32004 || contains_any(&m, CAPABILITY_MESSAGES) {
        return Category::Capability;
    }
    if code == -32603
        || code == -32002
        || m.contains("internal error")
        || m.contains("timeout")
        || m.contains("timed out")
    {
        return Category::ProviderFailure(FailureClass::Server);
    }
    Category::Deterministic
}

/// Classifies an HTTP status for which the body was not a usable JSON-RPC reply.
pub fn classify_http_failure(status: u16, retry_after: Option<Duration>) -> Category {
    match status {
        429 => Category::RateLimited { retry_after },
        // Some providers send 503 + Retry-After when throttling.
        503 if retry_after.is_some() => Category::RateLimited { retry_after },
        _ => Category::ProviderFailure(FailureClass::Server),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let rows: &[(i64, &str, Category)] = &[
            (
                3,
                "execution reverted: Ownable: caller is not the owner",
                Category::Deterministic,
            ),
            (-32000, "execution reverted", Category::Deterministic),
            (-32000, "nonce too low", Category::Deterministic),
            (
                -32000,
                "insufficient funds for gas * price + value",
                Category::Deterministic,
            ),
            (
                -32602,
                "invalid argument 0: hex string without 0x prefix",
                Category::Deterministic,
            ),
            (
                -32005,
                "daily request count exceeded, request rate limited",
                Category::RateLimited { retry_after: None },
            ),
            (
                429,
                "Your app has exceeded its compute units per second capacity",
                Category::RateLimited { retry_after: None },
            ),
            (
                -32007,
                "request limit reached",
                Category::RateLimited { retry_after: None },
            ),
            (
                -32005,
                "query returned more than 10000 results",
                Category::ThisRequest,
            ),
            (
                -32601,
                "the method eth_foo does not exist/is not available",
                Category::Capability,
            ),
            (
                -32000,
                "missing trie node 1234 (path ) state 0x... is not available",
                Category::Capability,
            ),
            (-32000, "header not found", Category::ThisRequest),
            (
                -32000,
                "block range is too wide, maximum 1000",
                Category::ThisRequest,
            ),
            (
                -32603,
                "internal error",
                Category::ProviderFailure(FailureClass::Server),
            ),
            (
                -32000,
                "request timed out",
                Category::ProviderFailure(FailureClass::Server),
            ),
            (-32000, "something odd", Category::Deterministic),
        ];
        for (code, message, expected) in rows {
            assert_eq!(
                &classify_rpc_error(*code, message),
                expected,
                "{code} {message}"
            );
        }
        assert_eq!(
            classify_http_failure(429, Some(Duration::from_secs(2))),
            Category::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            classify_http_failure(502, None),
            Category::ProviderFailure(FailureClass::Server)
        );
        assert!(Category::Capability.retry_elsewhere());
        assert!(!Category::Deterministic.retry_elsewhere());
    }
}
