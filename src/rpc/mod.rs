//! The JSON-RPC request lifecycle, transport-neutral: the URL grammar that names a target ([`target`]), the pipeline
//! (parse, answer locally, plan, forward with failover and hedging, restore ids, reply: [`pipeline`]) and the routing
//! metadata a client may ask for ([`meta`]).

pub mod meta;
pub mod pipeline;
pub mod target;
