//! The monitor thread: its own monoio runtime, off the request path. It checks every provider's `eth_chainId` at
//! start (a provider on the wrong chain is disabled with a clear log line), polls `eth_blockNumber` per provider to
//! track consensus heads and lag, drives the merger every merge interval (harvest every worker, fold, publish the
//! new routing table to every worker), tracks each caching chain's finalized head and reorgs for the response cache
//! (`app::finality`), and writes benchmark snapshots periodically and at shutdown.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::join_all;

use crate::app::finality::{BlockHead, Tracker};
use crate::config::{Config, Provider};
use crate::evm::methods::MethodKey;
use crate::routing::merger::{Harvest, Inheritance, Merger};
use crate::routing::recorder::SampleKind;
use crate::routing::table::RoutingTable;
use crate::shard::control::Control;
use crate::shard::state::Shared;
use crate::upstream::UpstreamClient;

/// What the monitor is asked to do from outside.
pub enum MonitorCommand {
    /// Start merging: the workers are up.
    Attach(Arc<Shared>),
    /// Write a final snapshot and stop.
    Stop(std::sync::mpsc::Sender<()>),
    /// Hand what routing knows to the generation about to replace this one (the monitor keeps running).
    Bequeath(std::sync::mpsc::Sender<Inheritance>),
}

struct Monitor {
    config: Arc<Config>,
    client: UpstreamClient,
    merger: RefCell<Merger>,
    /// Samples from the monitor's own probes, folded with the workers' at the next merge.
    probes: RefCell<Harvest>,
    shared: RefCell<Option<Arc<Shared>>>,
    chain_checked: RefCell<Vec<bool>>,
}

fn hex_result(body: &[u8]) -> Option<u64> {
    let view = crate::wire::jsonrpc::inspect_reply(body).ok()?;
    if view.kind != crate::wire::jsonrpc::ReplyKind::Result {
        return None;
    }
    let result = sonic_rs::get(&body[view.span.clone()], ["result"]).ok()?;
    let s = sonic_rs::JsonValueTrait::as_str(&result)?;
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

impl Monitor {
    async fn call(&self, p: &Provider, method: &str, timeout: Duration) -> Option<u64> {
        let body =
            format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{method}\",\"params\":[]}}");
        let started = Instant::now();
        let result = self.client.post(p, body.as_bytes(), timeout, true).await;
        let latency = started.elapsed();
        // A well-formed reply counts as answered for routing, whatever its value; the value matters only here.
        let (kind, value) = match result {
            Ok(resp) if resp.status == 429 => (SampleKind::RateLimited, None),
            Ok(resp) if (200..300).contains(&resp.status) => {
                match crate::wire::jsonrpc::inspect_reply(&resp.body) {
                    Ok(_) => (SampleKind::Answered, hex_result(&resp.body)),
                    Err(_) => (SampleKind::Failed, None),
                }
            }
            _ => (SampleKind::Failed, None),
        };
        self.probes
            .borrow_mut()
            .recorder
            .record(p.pid, MethodKey::of(method), kind, latency);
        value
    }

    /// Checks `eth_chainId` of every provider not yet checked; wrong chains are disabled.
    async fn check_chain_ids(&self, timeout: Duration) {
        let pending: Vec<&Provider> = self
            .config
            .providers
            .iter()
            .filter(|p| !self.chain_checked.borrow()[p.pid])
            .collect();
        let checks = pending
            .iter()
            .map(|p| async move { (*p, self.call(p, "eth_chainId", timeout).await) });
        for (p, answer) in join_all(checks).await {
            let Some(id) = answer else { continue };
            self.chain_checked.borrow_mut()[p.pid] = true;
            if id != p.chain_id {
                tracing::error!(
                    provider = %p.id, chain = %p.chain, profile = %p.profile,
                    reported = format!("0x{id:x}"), expected = format!("0x{:x}", p.chain_id),
                    "provider serves another chain: disabled"
                );
                self.merger.borrow_mut().set_disabled(
                    p.pid,
                    Some(format!(
                        "reports chain id 0x{id:x}, expected 0x{:x}",
                        p.chain_id
                    )),
                );
            }
        }
    }

    async fn poll_heads(&self, chain_gid: usize) {
        let providers: Vec<&Provider> = self
            .config
            .providers
            .iter()
            .filter(|p| p.chain_gid == chain_gid)
            .collect();
        let timeout = self
            .config
            .upstream
            .request_timeout
            .min(Duration::from_secs(5));
        let polls = providers
            .iter()
            .map(|p| async move { (*p, self.call(p, "eth_blockNumber", timeout).await) });
        for (p, head) in join_all(polls).await {
            if let Some(head) = head {
                self.merger.borrow_mut().set_head(p.pid, head);
            }
        }
    }

    /// One provider's block at `tag` (`latest`, `finalized`, a hex number), for the finality tracker.
    async fn block(&self, p: &Provider, tag: String) -> Option<BlockHead> {
        let body = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_getBlockByNumber\",\"params\":[\"{tag}\",false]}}"
        );
        let timeout = self
            .config
            .upstream
            .request_timeout
            .min(Duration::from_secs(5));
        let resp = self
            .client
            .post(p, body.as_bytes(), timeout, true)
            .await
            .ok()?;
        if !(200..300).contains(&resp.status) {
            return None;
        }
        BlockHead::from_reply(&resp.body)
    }

    /// One finality poll of a chain (`app::finality`): the first provider that answers (the last one that did,
    /// first); an update goes to every worker.
    async fn track_finality(&self, tracker: &mut Tracker, preferred: &mut usize) {
        let Some(shared) = self.shared.borrow().clone() else {
            return;
        };
        let providers: Vec<&Provider> = self
            .config
            .providers
            .iter()
            .filter(|p| p.chain_gid == tracker.chain)
            .collect();
        for attempt in 0..providers.len() {
            let i = (*preferred + attempt) % providers.len();
            let p = providers[i];
            let Some(head) = self.block(p, "latest".into()).await else {
                continue;
            };
            *preferred = i;
            let tagged = self.block(p, "finalized".into()).await.map(|b| b.number);
            let update = tracker
                .poll(head, tagged, |n| self.block(p, format!("0x{n:x}")))
                .await;
            if let Some(update) = update {
                for control in &shared.controls {
                    let _ = control.unbounded_send(Control::Finality(update));
                }
            }
            return;
        }
    }

    async fn merge(&self) {
        let Some(shared) = self.shared.borrow().clone() else {
            return;
        };
        let mut receivers = Vec::with_capacity(shared.controls.len());
        for control in &shared.controls {
            let (tx, rx) = oneshot::channel();
            if control.unbounded_send(Control::Harvest(tx)).is_ok() {
                receivers.push(rx);
            }
        }
        let wait = self
            .config
            .routing
            .merge_interval
            .max(Duration::from_millis(100));
        let mut harvests: Vec<Harvest> = Vec::with_capacity(receivers.len() + 1);
        for rx in receivers {
            if let Ok(Ok(h)) = monoio::time::timeout(wait, rx).await {
                harvests.push(h);
            }
        }
        harvests.push(std::mem::take(&mut *self.probes.borrow_mut()));
        let table = {
            let mut merger = self.merger.borrow_mut();
            merger.fold(harvests, Instant::now());
            Arc::new(merger.table())
        };
        for control in &shared.controls {
            let _ = control.unbounded_send(Control::Table(table.clone()));
        }
    }

    fn snapshot(&self) {
        let Some(dir) = &self.config.routing.snapshots_dir else {
            return;
        };
        let summaries = self.merger.borrow().summaries();
        match crate::routing::snapshot::write(
            dir,
            &self.config,
            &summaries,
            self.config.routing.snapshot_retention,
        ) {
            Ok(path) => tracing::debug!(path = %path.display(), "benchmark snapshot written"),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not write benchmark snapshot")
            }
        }
    }
}

/// The running monitor thread.
pub struct MonitorHandle {
    commands: futures_channel::mpsc::UnboundedSender<MonitorCommand>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MonitorHandle {
    /// Hands the monitor the workers' shared state so it can start merging.
    pub fn attach(&self, shared: Arc<Shared>) {
        let _ = self.commands.unbounded_send(MonitorCommand::Attach(shared));
    }

    /// What routing knows now (merged first), for the next generation; `None` if the monitor does not answer in time.
    pub fn bequeath(&self) -> Option<Inheritance> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands
            .unbounded_send(MonitorCommand::Bequeath(tx))
            .ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// Writes a last snapshot and stops the thread (bounded wait).
    pub fn stop(mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self
            .commands
            .unbounded_send(MonitorCommand::Stop(tx))
            .is_ok()
        {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the monitor. It checks chain ids first (bounded by `check_timeout`) and returns the first routing table,
/// which already excludes providers on the wrong chain and carries the newest snapshot's latencies.
pub fn start(
    config: Arc<Config>,
    tls: monoio_rustls::TlsConnector,
    uring: bool,
    check_timeout: Duration,
    inherited: Option<Inheritance>,
) -> Result<(MonitorHandle, Arc<RoutingTable>), String> {
    let (commands, mut receiver) = futures_channel::mpsc::unbounded::<MonitorCommand>();
    let (first_table_tx, first_table_rx) = std::sync::mpsc::channel::<Arc<RoutingTable>>();
    let thread = std::thread::Builder::new()
        .name("lasso-monitor".into())
        .stack_size(crate::app::thread::WORKER_STACK_BYTES)
        .spawn(move || {
            let run = async move {
                let chains = config.chain_count();
                let mut merger = Merger::new(
                    config.routing.window_intervals,
                    config.routing.min_samples,
                    config.providers.iter().map(|p| p.chain_gid).collect(),
                    chains,
                );
                if let Some(dir) = &config.routing.snapshots_dir {
                    if let Some((path, prior)) = crate::routing::snapshot::load_newest(dir, &config) {
                        tracing::info!(path = %path.display(), entries = prior.len(), "loaded benchmark snapshot");
                        merger.set_prior(prior);
                    }
                }
                // A reload: what the previous generation measured of the providers that stay outranks any snapshot.
                if let Some(inherited) = inherited {
                    merger.inherit(inherited, &config);
                }
                let monitor = Rc::new(Monitor {
                    client: UpstreamClient::for_probes(&config, tls),
                    merger: RefCell::new(merger),
                    probes: RefCell::new(Harvest::default()),
                    shared: RefCell::new(None),
                    chain_checked: RefCell::new(vec![false; config.providers.len()]),
                    config,
                });
                monitor.check_chain_ids(check_timeout).await;
                let _ = first_table_tx.send(Arc::new(monitor.merger.borrow().table()));
                // Head polling, one task per chain.
                for (_, chain) in monitor.config.all_chains() {
                    let monitor = monitor.clone();
                    let gid = chain.gid;
                    let interval = chain.head_poll_interval;
                    monoio::spawn(async move {
                        loop {
                            monitor.poll_heads(gid).await;
                            monitor.check_chain_ids(check_timeout).await;
                            monoio::time::sleep(interval).await;
                        }
                    });
                }
                // Finality tracking for the response cache, one task per chain that caches.
                for (_, chain) in monitor.config.all_chains() {
                    let caches = chain.cache.enabled
                        || chain.cache.methods.iter().any(|(_, m)| m.enabled == Some(true));
                    if !caches {
                        continue;
                    }
                    let monitor = monitor.clone();
                    let mut tracker = Tracker::new(chain.gid, chain.finality_depth);
                    let interval = chain.head_poll_interval;
                    monoio::spawn(async move {
                        let mut preferred = 0;
                        loop {
                            monitor.track_finality(&mut tracker, &mut preferred).await;
                            monoio::time::sleep(interval).await;
                        }
                    });
                }
                {
                    let monitor = monitor.clone();
                    monoio::spawn(async move {
                        let mut tick = monoio::time::interval(monitor.config.routing.merge_interval);
                        let mut last_snapshot = Instant::now();
                        loop {
                            tick.tick().await;
                            monitor.merge().await;
                            if last_snapshot.elapsed() >= monitor.config.routing.snapshot_interval {
                                monitor.snapshot();
                                last_snapshot = Instant::now();
                            }
                        }
                    });
                }
                use futures_util::StreamExt;
                while let Some(command) = receiver.next().await {
                    match command {
                        MonitorCommand::Attach(shared) => *monitor.shared.borrow_mut() = Some(shared),
                        MonitorCommand::Bequeath(reply) => {
                            monitor.merge().await;
                            let _ = reply.send(monitor.merger.borrow().bequeath(&monitor.config));
                        }
                        MonitorCommand::Stop(done) => {
                            monitor.merge().await;
                            monitor.snapshot();
                            let _ = done.send(());
                            break;
                        }
                    }
                }
            };
            crate::app::thread::block_on(uring, run);
        })
        .map_err(|e| format!("cannot start the monitor thread: {e}"))?;
    let table = first_table_rx
        .recv_timeout(check_timeout + Duration::from_secs(5))
        .map_err(|_| "the monitor thread did not start".to_string())?;
    Ok((
        MonitorHandle {
            commands,
            thread: Some(thread),
        },
        table,
    ))
}
