//! A worker's routing state: its copy of the merged table, its own breakers and cool-downs, and its recorder.

use std::sync::Arc;
use std::time::Instant;

use crate::evm::methods::MethodKey;
use crate::routing::merger::Harvest;
use crate::routing::recorder::Recorder;
use crate::routing::router::LocalHealth;
use crate::routing::table::RoutingTable;

/// A worker's routing state: its copy of the merged table, its own breakers and cool-downs, and its recorder.
pub struct RoutingState {
    pub table: Arc<RoutingTable>,
    pub health: LocalHealth,
    pub recorder: Recorder,
    /// Unsupported (provider, method) pairs found since the last harvest.
    pub new_unsupported: Vec<(u32, MethodKey)>,
    /// The highest head this worker answered per chain (global chain index): `eth_blockNumber` never goes below it.
    pub head_floors: Vec<u64>,
}

impl RoutingState {
    /// Hands over the samples and health findings since the last harvest.
    pub fn harvest(&mut self) -> Harvest {
        let now = Instant::now();
        Harvest {
            recorder: self.recorder.take(),
            breakers_open: self
                .health
                .breakers
                .iter()
                .enumerate()
                .filter_map(|(pid, b)| b.open_until().filter(|u| *u > now).map(|u| (pid as u32, u)))
                .collect(),
            cooldowns: self
                .health
                .cooldown_until
                .iter()
                .enumerate()
                .filter_map(|(pid, u)| u.filter(|u| *u > now).map(|u| (pid as u32, u)))
                .collect(),
            unsupported: std::mem::take(&mut self.new_unsupported),
            head_floors: self.head_floors.clone(),
        }
    }
}
