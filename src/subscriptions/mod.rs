//! WebSocket subscriptions shared per worker: the registry of client subscriptions and shared upstream feeds, and
//! each feed's state machine (resubscribe on drop, stall or lag; backfill; dedupe) ([`hub`]).

pub mod hub;
