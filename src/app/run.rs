//! The per-core run loop of one worker: its control task (snapshots, shutdown, retirement, harvests, new tables),
//! pool maintenance, the cancel-safe accept loop that hands each connection to the edge, and the drain at the end.
//! It owns the worker's shard and its subscription hub.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use monoio::net::TcpListener;

use crate::shard::control::Control;
use crate::shard::state::{ConnectionGuard, Worker};
use crate::subscriptions::hub::Hub;

/// How long a retired worker keeps long-lived (WebSocket) connections after a reload.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs a worker until shutdown and drain complete.
pub async fn run(
    worker: Rc<Worker>,
    listener: TcpListener,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    // The worker's subscriptions live beside its shard, not in it: the hub's feeds use the shard, never the reverse.
    let ws = &worker.config.websocket;
    let hub = Rc::new(Hub::new(
        (ws.max_total_queued_bytes / worker.shared.workers.max(1)).max(ws.max_queued_bytes),
    ));
    {
        let worker = worker.clone();
        let hub = hub.clone();
        monoio::spawn(async move {
            while let Some(msg) = control.next().await {
                match msg {
                    Control::Snapshot(reply) => {
                        let mut stats = worker.stats.borrow().clone();
                        stats.worker = worker.index;
                        stats.ws = hub.ws_stats(worker.ws_clients.get());
                        stats.cache = worker.cache_stats();
                        let _ = reply.send(stats);
                    }
                    Control::Shutdown => worker.begin_drain(),
                    Control::Retire(ack) => {
                        worker.retire_acks.borrow_mut().push(ack);
                        worker.begin_retire();
                    }
                    Control::Harvest(reply) => {
                        let _ = reply.send(worker.routing.borrow_mut().harvest());
                    }
                    Control::Table(table) => worker.install_table(table),
                    Control::Finality(update) => {
                        crate::rpc::reuse::on_finality(&worker, update).await
                    }
                }
            }
        });
    }
    {
        let worker = worker.clone();
        monoio::spawn(async move {
            while !worker.draining.get() {
                monoio::time::sleep(Duration::from_secs(5)).await;
                worker.upstream.maintain();
            }
        });
    }
    // Routing events this worker buffered for SSE subscribers go out as one chunk per profile shortly after the
    // first one (the task waits without a timer while nobody listens).
    monoio::spawn(async move {
        loop {
            crate::telemetry::events::flush_due().await;
            monoio::time::sleep(crate::telemetry::events::FLUSH_EVERY).await;
            crate::telemetry::events::flush_local();
        }
    });
    if !worker.config.access.keys.is_empty() {
        let worker = worker.clone();
        monoio::spawn(async move {
            while !worker.draining.get() {
                let every = crate::config::defaults::ACCESS_USAGE_FLUSH_MS;
                monoio::time::sleep(Duration::from_millis(every)).await;
                crate::access::usage::flush();
            }
            crate::access::usage::flush();
        });
    }
    let settings = &worker.config.server;
    // Accepts are cancel-safe: on shutdown or retirement the pending accept is cancelled and awaited, so a
    // connection the kernel handed over in that instant is still served, never leaked unanswered.
    let (soft, hard) = (settings.soft_max_connections, settings.hard_max_connections);
    while !worker.winding_down() {
        let canceller = monoio::io::Canceller::new();
        let mut pending = Box::pin(listener.cancelable_accept(canceller.handle()));
        let stop = Box::pin(async {
            futures_util::future::select(
                Box::pin(worker.drain_started.notified()),
                Box::pin(worker.retire_started.notified()),
            )
            .await;
        });
        let accepted = match futures_util::future::select(&mut pending, stop).await {
            futures_util::future::Either::Left((accepted, _)) => accepted,
            futures_util::future::Either::Right(_) => {
                let _ = canceller.cancel();
                pending.await
            }
        };
        match accepted {
            Ok((stream, peer)) => accept(&worker, &hub, stream, peer.ip(), soft, hard),
            Err(e) if worker.winding_down() => {
                tracing::debug!(worker = worker.index, error = %e, "accept ended");
            }
            Err(e) => {
                tracing::warn!(worker = worker.index, error = %e, "accept failed");
                // Out of descriptors or similar: back off briefly rather than spin.
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    for ack in worker.retire_acks.borrow_mut().drain(..) {
        let _ = ack.send(());
    }
    let all_closed = || async {
        while worker.live_connections.get() > 0 {
            worker.connection_closed.notified().await;
        }
    };
    if worker.retiring.get() && !worker.draining.get() {
        // Retired by a reload: WebSocket sessions may run on (and keep their subscriptions) until they close,
        // a shutdown arrives, or the retire timeout passes; then they get 1001 like at shutdown.
        let shutdown = worker.drain_started.notified();
        let wait = async {
            monoio::select! {
                _ = all_closed() => {},
                _ = shutdown => {},
            }
        };
        let _ = monoio::time::timeout(RETIRE_TIMEOUT, wait).await;
        worker.begin_drain();
    }
    if monoio::time::timeout(settings.drain_timeout, all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = worker.index,
            connections = worker.live_connections.get(),
            "drain timeout reached; closing remaining connections"
        );
    }
}

fn accept(
    worker: &Rc<Worker>,
    hub: &Rc<Hub>,
    stream: monoio::net::TcpStream,
    ip: std::net::IpAddr,
    soft: usize,
    hard: usize,
) {
    let open = worker.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let guard = ConnectionGuard::new(worker.clone());
    let _ = stream.set_nodelay(true);
    let (worker, hub) = (worker.clone(), hub.clone());
    if open > hard {
        monoio::spawn(async move {
            crate::edge::conn::refuse_overloaded(&worker, stream, "too many connections").await;
            drop(guard);
        });
        return;
    }
    let per_ip = worker.config.server.max_connections_per_ip;
    let Some(peer) = worker.shared.peers.admit(ip, per_ip) else {
        monoio::spawn(async move {
            crate::edge::conn::refuse_overloaded(
                &worker,
                stream,
                "too many connections from this address",
            )
            .await;
            drop(guard);
        });
        return;
    };
    monoio::spawn(async move {
        crate::edge::conn::serve_connection(worker, hub, stream, open <= soft).await;
        drop(peer);
        drop(guard);
    });
}
