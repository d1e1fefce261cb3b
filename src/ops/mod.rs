//! The operator's plane: JSON status and metrics ([`api`]), Prometheus exposition ([`prometheus`]), live
//! configuration ([`admin`]), the operator dashboard ([`dashboard`]) and the cluster view across nodes
//! ([`cluster`], its requests signed by [`signature`]; peers' routing events in [`cluster_events`]), all refusing in
//! one envelope ([`error`]) and authenticating through [`auth`] (failed attempts logged and limited per client
//! address).

pub mod admin;
pub mod admin_keys;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod cluster_events;
pub mod dashboard;
pub mod error;
pub mod prometheus;
pub mod signature;
pub mod snapshot;
