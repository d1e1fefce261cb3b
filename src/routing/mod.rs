//! Measured routing: per-worker recorders ([`recorder`]) harvested by the merger ([`merger`]) into an immutable
//! routing table ([`table`]) that every worker reads locally; provider selection by strategy ([`router`]); outcome
//! classification ([`classify`]); breakers and cool-downs ([`breaker`]); what one attempt's outcome changes
//! ([`health`]); warm starts from disk ([`snapshot`]). Routing state changes only through the functions of this plane.

pub mod breaker;
pub mod classify;
pub mod health;
pub mod merger;
pub mod recorder;
pub mod router;
pub mod snapshot;
pub mod state;
pub mod table;
