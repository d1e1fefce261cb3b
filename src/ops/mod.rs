//! The operator's plane: JSON status and metrics ([`api`]), Prometheus exposition ([`prometheus`]), live
//! configuration ([`admin`]) and the cluster view across nodes ([`cluster`]), all refusing in one envelope
//! ([`error`]).

pub mod admin;
pub mod api;
pub mod cluster;
pub mod error;
pub mod prometheus;
pub mod snapshot;
