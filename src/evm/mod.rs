//! Ethereum JSON-RPC knowledge with no I/O and no policy: which methods exist, their classes (reads, writes,
//! subscriptions, filters), block tags and heights, hex quantities ([`methods`]); which answers may be shared in flight or kept, about which block ([`reuse`]).

pub mod keccak;
pub mod methods;
pub mod reuse;
