//! Where client bytes enter: the HTTP/1.1 connection loop ([`conn`]), the endpoint table every request goes through
//! ([`dispatch`]) and the WebSocket client session ([`ws_session`]).

pub mod conn;
pub mod dispatch;
pub mod sse;
pub mod ws_session;
#[cfg(test)]
mod tests;
