//! The process: the supervisor that owns configuration generations and worker threads ([`supervisor`]), the health
//! monitor and merger thread ([`monitor`]) and logging set-up ([`logging`]).

pub mod logging;
pub(crate) mod finality;
pub mod monitor;
pub mod run;
pub mod supervisor;
pub mod thread;
