//! WebSocket subscriptions shared per worker: the client-facing hub ([`hub`]), the client connections it sends to
//! ([`client`]), the tables the hub and its feeds share ([`registry`]) and each shared upstream feed's state machine
//! (resubscribe on drop, stall or lag; backfill; dedupe) ([`feed`]).

pub mod client;
pub(crate) mod feed;
pub mod hub;
pub(crate) mod registry;
#[cfg(test)]
mod tests;
