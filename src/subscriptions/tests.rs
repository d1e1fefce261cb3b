//! In-process tests of the shared feed state machine: a shard built from configuration text, scripted chain nodes
//! on loopback (HTTP and WebSocket, `shard::testing_chain`), the hub called directly with in-memory client
//! connections (no listener, no process). A feed's provider drops, stalls, lags or reorgs; each client must see every
//! block exactly once, in order, with no gap, under the subscription id Lasso gave it. Each test runs on io_uring and
//! on the legacy driver.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use serde_json::Value;

use crate::shard::state::Worker;
use crate::shard::testing::{on_both_drivers, shard, until};
use crate::shard::testing_chain::{Chain, LOGS_PER_BLOCK, Node};
use crate::subscriptions::client::ClientConn;
use crate::subscriptions::hub::Hub;
use crate::wire::ws_frame as frame;

/// How long a test waits for an event it expects.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test listens for events it must not see.
const SETTLE: Duration = Duration::from_millis(150);

/// A one-chain config over `nodes` (tried in priority order); `websocket` and `chain` add settings.
fn config(nodes: &[&Node], websocket: &str, chain: &str) -> String {
    let mut yaml = format!(
        "upstream: {{ coalesce: false }}\nrouting: {{ probe_share: 0.0, hedge: {{ enabled: false }} }}\n\
         websocket: {{ {websocket} }}\nchains:\n  ethereum:\n    chain_id: 1\n    default_strategy: priority\n\
         {chain}\n    providers:\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "      - {{ id: p{}, url: \"{}\", ws_url: \"{}\" }}\n",
            i + 1,
            n.http_url,
            n.ws_url
        ));
    }
    yaml
}

/// A WebSocket client as the hub sees it, with the frames queued to it.
struct Client {
    conn: Rc<ClientConn>,
    frames: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Client {
    fn new(id: u64, hub: &Hub) -> Client {
        let (tx, frames) = mpsc::unbounded();
        let conn = ClientConn::new(
            id,
            tx,
            Rc::new(Cell::new(0)),
            1 << 30,
            hub.ws_budget.clone(),
        );
        Client {
            conn: Rc::new(conn),
            frames,
        }
    }

    /// Subscribes as the WebSocket session does: the reply is queued as soon as the hub answers, and must be the
    /// first message the client gets about this subscription.
    async fn subscribe(&mut self, worker: &Rc<Worker>, hub: &Rc<Hub>, params: &str) -> String {
        let target =
            crate::rpc::target::resolve(&worker.config, "/ws/rpc/ethereum", "/ws/rpc").unwrap();
        let id = hub
            .subscribe(worker, target, &self.conn, params.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("subscribe {params}: {e:?}"));
        let reply = format!(r#"{{"jsonrpc":"2.0","id":1,"result":"{id}"}}"#);
        self.conn.send_text(reply.as_bytes());
        let first = self.message(PATIENCE).await.expect("the subscribe reply");
        assert_eq!(first["result"], id.as_str(), "the reply comes first");
        id
    }

    /// The next message queued to the client.
    async fn message(&mut self, within: Duration) -> Option<Value> {
        let framed = monoio::time::timeout(within, self.frames.next())
            .await
            .ok()??;
        let (f, used) = frame::decode(&framed, usize::MAX, false)
            .expect("a valid frame")
            .expect("a whole frame");
        assert_eq!((f.opcode, used), (frame::OP_TEXT, framed.len()));
        Some(serde_json::from_slice(&f.payload).expect("JSON"))
    }

    /// The next notification: `(subscription id, result)`; `None` when none comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let msg = self.message(within).await?;
        assert_eq!(msg["method"], "eth_subscription", "{msg}");
        let sub = msg["params"]["subscription"].as_str().unwrap().to_string();
        Some((sub, msg["params"]["result"].clone()))
    }

    /// The next `n` notifications, all of them under subscription `id`; each as `(block number, hash[, log index])`.
    async fn events(&mut self, id: &str, n: usize) -> Vec<(u64, String, Option<u64>)> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some((sub, result)) = self.next(PATIENCE).await else {
                panic!("{} of {n} events arrived: {out:?}", out.len());
            };
            assert_eq!(sub, id, "the subscription id changed");
            out.push(event(&result));
        }
        out
    }

    /// Asserts nothing more arrives for a while.
    async fn nothing_more(&mut self) {
        if let Some(extra) = self.next(SETTLE).await {
            panic!("unexpected event {extra:?}");
        }
    }
}

fn hex(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// `(number, hash, None)` of a head; `(blockNumber, blockHash, Some(logIndex))` of a log.
fn event(result: &Value) -> (u64, String, Option<u64>) {
    match hex(&result["number"]) {
        Some(n) => (n, result["hash"].as_str().unwrap().to_string(), None),
        None => (
            hex(&result["blockNumber"]).expect("a head or a log"),
            result["blockHash"].as_str().unwrap().to_string(),
            hex(&result["logIndex"]),
        ),
    }
}

/// Heads `from..=to` as the chain has them now.
fn heads(chain: &Chain, from: u64, to: u64) -> Vec<(u64, String, Option<u64>)> {
    (from..=to).map(|n| (n, chain.hash(n), None)).collect()
}

/// Logs of blocks `from..=to` as the chain has them now.
fn logs(chain: &Chain, from: u64, to: u64) -> Vec<(u64, String, Option<u64>)> {
    (from..=to)
        .flat_map(|n| (0..LOGS_PER_BLOCK).map(move |i| (n, chain.hash(n), Some(i))))
        .collect()
}

/// Waits until the feed runs on `node`: the node has the subscription and Lasso has taken its id (a notification
/// sent before Lasso read the subscription id would be dropped as unknown).
async fn moved_to(node: &Node, hub: &Hub, what: &str) {
    until(what, PATIENCE, || {
        node.subscriptions() == 1 && hub.stats().upstream_subscriptions == 1
    })
    .await;
}

/// Mines a block and lets `node` announce it.
fn mine_on(chain: &Chain, node: &Node) {
    chain.mine();
    node.announce();
}

#[test]
fn heads_survive_a_dropped_provider_with_the_gap_backfilled_once() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let (p1, p2) = (Node::start(&chain), Node::start(&chain));
        let worker = shard(&config(&[&p1, &p2], "", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let (mut a, mut b) = (Client::new(1, &hub), Client::new(2, &hub));
        let id_a = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        let id_b = b.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        assert_ne!(id_a, id_b);
        // Two clients, one shared upstream subscription.
        assert_eq!(
            (p1.count("ws", "eth_subscribe"), p1.subscriptions()),
            (1, 1)
        );
        assert!(!id_a.contains("feed"), "Lasso's ids are its own: {id_a}");
        for _ in 0..3 {
            mine_on(&chain, &p1);
        }
        assert_eq!(a.events(&id_a, 3).await, heads(&chain, 101, 103));
        p1.drop_connections();
        chain.mine();
        chain.mine(); // 104 and 105 are announced to nobody
        moved_to(&p2, &hub, "the feed resubscribes on p2").await;
        p2.announce(); // 105: 104 comes over HTTP first
        p2.announce(); // a repeat is not delivered again
        mine_on(&chain, &p2); // 106
        assert_eq!(a.events(&id_a, 3).await, heads(&chain, 104, 106));
        assert_eq!(b.events(&id_b, 6).await, heads(&chain, 101, 106));
        a.nothing_more().await;
        b.nothing_more().await;
        assert_eq!(p2.count("http", "eth_getBlockByNumber"), 1);
        assert_eq!(p2.count("ws", "eth_subscribe"), 1);
        let counters = hub.stats().counters;
        assert_eq!((counters.failovers, counters.backfilled), (1, 1));
    });
}

#[test]
fn heads_survive_a_stalled_provider() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let (p1, p2) = (Node::start(&chain), Node::start(&chain));
        let worker = shard(&config(&[&p1, &p2], "stall_timeout_ms: 300", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        mine_on(&chain, &p1);
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 2).await, heads(&chain, 101, 102));
        chain.mine();
        chain.mine(); // p1 stays connected but announces nothing
        moved_to(&p2, &hub, "the stalled feed moves to p2").await;
        p2.announce(); // 104: 103 comes over HTTP first
        mine_on(&chain, &p2);
        assert_eq!(a.events(&id, 3).await, heads(&chain, 103, 105));
        a.nothing_more().await;
        // The stalled provider's subscription was cancelled, not left running.
        assert_eq!(p1.count("ws", "eth_unsubscribe"), 1);
        assert_eq!(p2.count("http", "eth_getBlockByNumber"), 1);
    });
}

#[test]
fn heads_survive_a_provider_falling_behind_the_consensus_head() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let (p1, p2) = (Node::start(&chain), Node::start(&chain));
        let worker = shard(&config(
            &[&p1, &p2],
            "stall_timeout_ms: 10000",
            "    max_lag_blocks: 2",
        ));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        for _ in 0..3 {
            mine_on(&chain, &p1);
        }
        assert_eq!(a.events(&id, 3).await, heads(&chain, 101, 103));
        // The others reach 110 while p1 is still at 103 (it keeps its connection and announces nothing).
        for _ in 0..7 {
            chain.mine();
        }
        let gid = worker.config.profiles[0].chains[0].gid;
        let mut table = (*worker.routing.borrow().table).clone();
        table.chain_heads[gid] = Some(chain.head());
        worker.install_table(Arc::new(table));
        moved_to(&p2, &hub, "the lagging feed moves to p2").await;
        until("p1 is unsubscribed", PATIENCE, || {
            p1.count("ws", "eth_unsubscribe") == 1
        })
        .await;
        p2.announce(); // 110: 104..=109 come over HTTP first
        assert_eq!(a.events(&id, 7).await, heads(&chain, 104, 110));
        a.nothing_more().await;
        assert_eq!(p2.count("http", "eth_getBlockByNumber"), 6);
    });
}

#[test]
fn reorged_heads_are_delivered_again_and_repeats_are_not() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let p1 = Node::start(&chain);
        let worker = shard(&config(&[&p1], "", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        for _ in 0..3 {
            mine_on(&chain, &p1);
        }
        let before = heads(&chain, 101, 103);
        assert_eq!(a.events(&id, 3).await, before);
        // One block replaced at the tip: the new 103 follows the old one.
        chain.reorg(103);
        p1.announce();
        p1.announce();
        mine_on(&chain, &p1); // 104 on top of the new 103
        let after = heads(&chain, 103, 104);
        assert_ne!(after[0], before[2]);
        assert_eq!(a.events(&id, 2).await, after);
        // Two blocks replaced, announced from the lower one up.
        chain.reorg(102);
        p1.announce();
        mine_on(&chain, &p1);
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 3).await, heads(&chain, 102, 104));
        p1.announce_block(101, false); // an old block announced again is not delivered again
        a.nothing_more().await;
    });
}

#[test]
fn logs_survive_a_dropped_provider_with_the_gap_backfilled_once() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let (p1, p2) = (Node::start(&chain), Node::start(&chain));
        let worker = shard(&config(&[&p1, &p2], "backfill_chunk_blocks: 2", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let params = r#"["logs", {"address": "0x00000000000000000000000000000000000000aa"}]"#;
        let id = a.subscribe(&worker, &hub, params).await;
        mine_on(&chain, &p1);
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 4).await, logs(&chain, 101, 102));
        p1.drop_connections();
        chain.mine();
        chain.mine(); // the logs of 103 and 104 are announced to nobody
        moved_to(&p2, &hub, "the feed resubscribes on p2").await;
        p2.announce(); // 104 again: already backfilled or about to be, never twice
        mine_on(&chain, &p2);
        assert_eq!(a.events(&id, 6).await, logs(&chain, 103, 105));
        a.nothing_more().await;
        // Blocks 102..=104 in chunks of two.
        assert_eq!(p2.count("http", "eth_getLogs"), 2);
    });
}

#[test]
fn removed_logs_of_a_reorg_are_delivered_again() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let p1 = Node::start(&chain);
        let worker = shard(&config(&[&p1], "", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["logs", {}]"#).await;
        mine_on(&chain, &p1);
        p1.announce();
        assert_eq!(a.events(&id, 2).await, logs(&chain, 101, 101));
        a.nothing_more().await;
        p1.announce_block(101, true);
        p1.announce_block(101, true);
        let mut removed = Vec::new();
        for _ in 0..LOGS_PER_BLOCK {
            let (sub, result) = a.next(PATIENCE).await.expect("a removed log");
            assert_eq!(
                (sub.as_str(), &result["removed"]),
                (id.as_str(), &Value::Bool(true))
            );
            removed.push(event(&result));
        }
        assert_eq!(removed, logs(&chain, 101, 101));
        a.nothing_more().await;
    });
}

#[test]
fn an_event_in_the_same_read_as_the_subscribe_reply_is_delivered() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let p1 = Node::start(&chain);
        p1.announce_on_subscribe();
        let worker = shard(&config(&[&p1], "", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 2).await, heads(&chain, 100, 101));
        let mut b = Client::new(2, &hub);
        let id = b.subscribe(&worker, &hub, r#"["logs", {}]"#).await;
        mine_on(&chain, &p1);
        assert_eq!(b.events(&id, 4).await, logs(&chain, 101, 102));
        b.nothing_more().await;
    });
}

#[test]
fn a_feed_whose_first_subscriber_left_while_it_started_ends_after_the_grace_period() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let p1 = Node::start(&chain);
        let worker = shard(&config(&[&p1], "unsubscribe_grace_ms: 100", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let a = Client::new(1, &hub);
        let target =
            crate::rpc::target::resolve(&worker.config, "/ws/rpc/ethereum", "/ws/rpc").unwrap();
        // The session goes away while the feed is still subscribing upstream: its subscribe call is dropped.
        let subscribing = hub.subscribe(&worker, target, &a.conn, br#"["newHeads"]"#);
        let gone =
            futures_util::future::select(Box::pin(subscribing), std::future::ready(())).await;
        assert!(matches!(gone, futures_util::future::Either::Right(_)));
        drop(gone); // select hands the unfinished call back: dropping it is the session going away
        until("the feed subscribes upstream", PATIENCE, || {
            p1.subscriptions() == 1
        })
        .await;
        until("the clientless feed ends", PATIENCE, || {
            hub.stats().feeds_by_kind == [0, 0, 0]
        })
        .await;
        until("its upstream subscription is cancelled", PATIENCE, || {
            p1.subscriptions() == 0
        })
        .await;
        assert_eq!(p1.count("ws", "eth_unsubscribe"), 1);
    });
}

#[test]
fn heads_survive_the_only_provider_dropping_and_coming_back() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let p1 = Node::start(&chain);
        let worker = shard(&config(&[&p1], "", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 1).await, heads(&chain, 101, 101));
        p1.drop_connections();
        chain.mine();
        // Nothing else to move to: the feed waits the outage out on the same provider, under the same id.
        until("the feed resubscribes on p1", PATIENCE, || {
            p1.count("ws", "eth_subscribe") == 2
                && p1.subscriptions() == 1
                && hub.stats().upstream_subscriptions == 1
        })
        .await;
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 2).await, heads(&chain, 102, 103));
        a.nothing_more().await;
    });
}

#[test]
fn a_gap_longer_than_the_backfill_limit_is_filled_for_its_last_blocks_only() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let (p1, p2) = (Node::start(&chain), Node::start(&chain));
        let worker = shard(&config(&[&p1, &p2], "backfill_limit_blocks: 3", ""));
        let hub = Rc::new(Hub::new(1 << 30));
        let mut a = Client::new(1, &hub);
        let id = a.subscribe(&worker, &hub, r#"["newHeads"]"#).await;
        mine_on(&chain, &p1);
        assert_eq!(a.events(&id, 1).await, heads(&chain, 101, 101));
        p1.drop_connections();
        for _ in 0..9 {
            chain.mine(); // 102..=110 announced to nobody
        }
        moved_to(&p2, &hub, "the feed resubscribes on p2").await;
        p2.announce();
        assert_eq!(a.events(&id, 4).await, heads(&chain, 107, 110));
        a.nothing_more().await;
        assert_eq!(p2.count("http", "eth_getBlockByNumber"), 3);
    });
}
