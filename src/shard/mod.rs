//! The per-core context of one worker: its configuration generation, routing state, upstream pools and counters
//! ([`state`]), the messages other threads send it ([`control`]) and the single-threaded notification primitive its
//! tasks wait on ([`sync`]). The per-address connection counts ([`peers`]) are process-wide, read at accept only. A shard lives in an `Rc` on its own thread; nothing in it is shared with another core
//! except through messages.

pub mod control;
pub mod peers;
pub mod state;
pub mod sync;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
pub(crate) mod testing_chain;
