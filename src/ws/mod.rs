//! WebSocket JSON-RPC on the same port as HTTP: RFC 6455 framing ([`frame`]), the opening handshake
//! ([`handshake`]), client sessions on `/ws/rpc/...` ([`session`]) and the proxy's own connections to providers'
//! WebSocket endpoints ([`upstream`]). Subscriptions themselves live in `crate::subscriptions`.

pub mod frame;
pub mod handshake;
pub mod session;
pub mod upstream;
