//! The JSON-RPC request lifecycle, transport-neutral, one phase per file: the URL grammar that names a target
//! ([`target`]); the pipeline that runs the phases ([`pipeline`]): planning a call ([`plan`]), forwarding it with
//! failover and hedging ([`forward`]) one attempt at a time ([`attempt`]), batches ([`batch`]), filters kept on the provider that made them ([`filters`]), answers reused from the cache or an identical call in flight ([`reuse`]), the answer
//! ([`reply`]) and the observe step ([`observe`]); and the routing metadata a client may ask for ([`meta`]). Single
//! calls pass through [`indexing`] first: split log queries ([`logs_split`]), consistent heads ([`heads`]), safe sends
//! ([`sends`]), built on the calls Lasso makes itself ([`subcall`]).

pub(crate) mod attempt;
pub(crate) mod batch;
pub(crate) mod filters;
pub(crate) mod forward;
pub(crate) mod heads;
pub(crate) mod indexing;
pub(crate) mod logs_split;
pub mod meta;
pub(crate) mod observe;
pub mod pipeline;
pub(crate) mod plan;
pub mod reply;
pub(crate) mod reuse;
pub(crate) mod sends;
pub(crate) mod subcall;
pub mod target;

#[cfg(test)]
mod coalesce_tests;
#[cfg(test)]
mod test_client;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod indexing_tests;
#[cfg(test)]
mod reuse_tests;
