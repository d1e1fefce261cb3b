//! What a provider exchange comes to: the answer ([`UpstreamResponse`]) or what failed ([`UpstreamError`]) and
//! whether the request may have reached the provider ([`FailureKind`]), which decides whether a write may be retried.

use std::time::Duration;

/// What went wrong talking to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// DNS, TCP connect or TLS handshake failed: the request never left.
    Connect,
    /// No complete answer within the attempt timeout.
    Timeout,
    /// The connection broke while sending or receiving.
    Reset,
    /// The provider spoke malformed HTTP.
    Protocol,
    /// The response exceeded `max_response_bytes`.
    TooLarge,
    /// Answers being received on this worker already hold its share of `max_buffered_response_bytes`: this exchange
    /// was given up (the provider is not at fault; the request ends with a "limit exceeded" error).
    Budget,
}

/// An upstream failure, with whether the request may have reached the provider.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: FailureKind,
    pub message: String,
    pub may_have_reached: bool,
}

impl UpstreamError {
    pub fn new(kind: FailureKind, message: impl Into<String>, may_have_reached: bool) -> Self {
        UpstreamError {
            kind,
            message: message.into(),
            may_have_reached,
        }
    }
}

/// A complete upstream HTTP response (body decoded from chunked/gzip).
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<Duration>,
}
