//! Messages from other threads to a worker: snapshots for the status page, shutdown and retirement, routing harvests
//! newly merged tables, and chain finality for the response cache. A worker's control task (in `app::run`) is the only reader.

use std::sync::Arc;

use futures_channel::oneshot;

use crate::routing::merger::Harvest;
use crate::routing::table::RoutingTable;
use crate::telemetry::stats::ProviderStats;

/// A message from another thread to a worker.
pub enum Control {
    /// Send back a copy of this worker's counters.
    Snapshot(oneshot::Sender<ProviderStats>),
    /// Stop accepting, drain connections, and return.
    Shutdown,
    /// A newer configuration took over: stop accepting, let HTTP connections finish their current request, keep
    /// WebSocket sessions until they end (or the retire timeout), then return.
    /// The sender is told once this worker no longer accepts connections.
    Retire(std::sync::mpsc::Sender<()>),
    /// Hand over the samples and health findings since the last harvest.
    Harvest(oneshot::Sender<Harvest>),
    /// A newly merged routing table.
    Table(Arc<RoutingTable>),
    /// A chain's head and finalized head, and a reorg if one happened (the response cache follows it).
    Finality(crate::cache::finality::FinalityUpdate),
}
