//! The operator's plane: JSON status and metrics ([`api`]), Prometheus exposition ([`prometheus`]), live
//! configuration ([`admin`]) and the cluster view across nodes ([`cluster`]).

pub mod admin;
pub mod api;
pub mod cluster;
pub mod prometheus;
pub mod snapshot;
