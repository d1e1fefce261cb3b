//! In-process tests of indexer-grade reads and sends: `eth_getLogs` split and bisected against a node refusing long
//! ranges, `eth_blockNumber` never going backwards across providers, `latest` pinned, sends answered idempotently
//! and broadcast once per provider, the highest pending nonce. Each test runs on io_uring and on the legacy driver.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;

use crate::rpc::test_client::{send, target};
use crate::shard::state::Worker;
use crate::shard::testing::{Answer, Scripted, on_both_drivers, shard};
use crate::shard::testing_chain::{Chain, Node};

const QUIET: &str =
    "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: false } }";

/// A one-chain config over provider `urls` under `strategy`, with `chain_extra` as more chain keys.
fn config(strategy: &str, urls: &[&str], chain_extra: &str) -> String {
    let mut yaml = format!(
        "{QUIET}\nchains:\n  ethereum:\n    chain_id: 1\n    default_strategy: {strategy}\n{chain_extra}    providers:\n"
    );
    for (i, url) in urls.iter().enumerate() {
        yaml.push_str(&format!("      - {{ id: p{}, url: \"{url}\" }}\n", i + 1));
    }
    yaml
}

async fn call(worker: &Rc<Worker>, body: &str) -> Value {
    send(worker, target(worker, "/rpc/ethereum"), body).await.1
}

fn get_logs(from: &str, to: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":"q","method":"eth_getLogs","params":[{{"fromBlock":"{from}","toBlock":"{to}"}}]}}"#
    )
}

/// The logs an unlimited node answers for `from..=to`.
fn direct(chain: &Chain, from: u64, to: u64) -> Value {
    Value::Array((from..=to).flat_map(|n| chain.logs(n, false)).collect())
}

/// Sets the consensus head every worker routes by, as the monitor would.
fn set_head(worker: &Worker, head: u64) {
    let mut table = (*worker.routing.borrow().table).clone();
    table.chain_heads = vec![Some(head)];
    worker.install_table(Arc::new(table));
}

#[test]
fn a_20000_block_log_query_against_a_node_refusing_1000_returns_every_log() {
    on_both_drivers(|| async {
        let chain = Chain::new(20_000);
        let node = Node::start(&chain);
        node.refuse_logs_over(1000);
        let worker = shard(&config(
            "priority",
            &[&node.http_url],
            "    max_logs_range: 1000\n",
        ));
        let reply = call(&worker, &get_logs("0x1", "0x4e20")).await;
        assert_eq!(reply["id"], "q");
        let logs = reply["result"].as_array().expect("a result");
        assert_eq!(logs.len(), 40_000);
        assert_eq!(reply["result"], direct(&chain, 1, 20_000));
        let ranges = node.log_ranges();
        assert_eq!(ranges.len(), 20, "one call per 1000 blocks: {ranges:?}");
        assert!(ranges.iter().all(|(f, t)| t - f < 1000));
        let counted = worker.stats.borrow().indexing.clone();
        assert_eq!(
            (
                counted.logs_split,
                counted.logs_subrequests,
                counted.logs_bisections
            ),
            (1, 20, 0)
        );
    });
}

#[test]
fn a_refused_range_is_bisected_without_a_configured_limit() {
    on_both_drivers(|| async {
        let chain = Chain::new(5_000);
        let node = Node::start(&chain);
        node.refuse_logs_over(1000);
        let worker = shard(&config("priority", &[&node.http_url], ""));
        set_head(&worker, 5_000);
        // `latest` resolves to the consensus head before splitting.
        let reply = call(&worker, &get_logs("0x64", "latest")).await;
        assert_eq!(
            reply["result"],
            direct(&chain, 100, 5_000),
            "{}",
            reply["error"]
        );
        let ranges = node.log_ranges();
        assert_eq!(ranges[0], (100, 5_000), "the whole range first");
        assert!(ranges.len() > 2);
        // Nothing was remembered against the provider: the next query goes to it again.
        let again = call(&worker, &get_logs("0x1", "0x2")).await;
        assert_eq!(again["result"], direct(&chain, 1, 2));
    });
}

#[test]
fn a_log_query_needing_too_many_calls_fails_whole_with_a_clear_error() {
    on_both_drivers(|| async {
        let chain = Chain::new(100);
        let node = Node::start(&chain);
        // 20 one-block chunks are more than the 5 calls a query may make: refused before any is sent.
        let bounded = shard(&config(
            "priority",
            &[&node.http_url],
            "    max_logs_range: 1\n    logs_max_requests: 5\n",
        ));
        let reply = call(&bounded, &get_logs("0x1", "0x14")).await;
        assert_eq!(reply["error"]["code"], -32005, "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("logs_max_requests"),
            "{reply}"
        );
        assert!(node.log_ranges().is_empty());
        // The whole u64 span: refused at once, nothing built for it.
        let reply = call(&bounded, &get_logs("0x0", "0xffffffffffffffff")).await;
        assert_eq!(reply["error"]["code"], -32005, "{reply}");
        assert!(node.log_ranges().is_empty());
        // Bisection counts too: a node refusing more than one block, 20 blocks, at most 5 calls.
        node.refuse_logs_over(1);
        let bisecting = shard(&config(
            "priority",
            &[&node.http_url],
            "    logs_max_requests: 5\n",
        ));
        let reply = call(&bisecting, &get_logs("0x1", "0x14")).await;
        assert_eq!(reply["error"]["code"], -32005, "{reply}");
        assert!(reply.get("result").is_none(), "no partial answer: {reply}");
        assert_eq!(node.log_ranges().len(), 5);
    });
}

#[test]
fn a_single_block_refused_for_every_address_fails_whole() {
    on_both_drivers(|| async {
        let p = Scripted::start(
            |m| match m {
                "eth_getLogs" => Answer::Error(-32005, "query returned more than 10000 results"),
                _ => Answer::Result("\"0x1\""),
            },
            false,
        );
        let worker = shard(&config("priority", &[&p.url], ""));
        let body = r#"{"jsonrpc":"2.0","id":3,"method":"eth_getLogs","params":[{"fromBlock":"0x10","toBlock":"0x11","address":["0xa","0xb"]}]}"#;
        let reply = call(&worker, body).await;
        assert_eq!(reply["id"], 3);
        assert_eq!(reply["error"]["code"], -32005, "{reply}");
        assert!(reply.get("result").is_none(), "no partial answer: {reply}");
        // The range, then each block, then each block's first address: refused alone, the request fails whole.
        assert_eq!(p.count("eth_getLogs"), 5);
        assert_eq!(p.count(r#""address":["0xa"]"#), 2);
    });
}

#[test]
fn a_block_hash_log_filter_passes_untouched() {
    on_both_drivers(|| async {
        let p = Scripted::start(|_| Answer::Result("[]"), false);
        let worker = shard(&config("priority", &[&p.url], "    max_logs_range: 10\n"));
        set_head(&worker, 100_000);
        let body =
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"blockHash":"0xabc"}]}"#;
        let reply = call(&worker, body).await;
        assert_eq!(reply["result"], serde_json::json!([]));
        assert_eq!(p.count("eth_getLogs"), 1);
        assert_eq!(p.count("fromBlock"), 0);
    });
}

const BLOCK_NUMBER: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;

#[test]
fn block_number_never_goes_backwards_across_providers() {
    on_both_drivers(|| async {
        let ahead = Scripted::start(|_| Answer::Result("\"0x64\""), false);
        let behind = Scripted::start(|_| Answer::Result("\"0x5f\""), false);
        let worker = shard(&config("round-robin", &[&ahead.url, &behind.url], ""));
        let mut last = 0;
        for _ in 0..10 {
            let reply = call(&worker, BLOCK_NUMBER).await;
            let n = u64::from_str_radix(
                reply["result"].as_str().unwrap().trim_start_matches("0x"),
                16,
            )
            .unwrap();
            assert!(n >= last, "went back from {last} to {n}");
            last = n;
        }
        assert_eq!(last, 100);
        assert!(worker.stats.borrow().indexing.heads_floored >= 4);
        assert!(
            behind.count("eth_blockNumber") >= 4,
            "both providers were asked"
        );
        // The consensus head is a floor too.
        set_head(&worker, 200);
        let reply = call(&worker, BLOCK_NUMBER).await;
        assert_eq!(reply["result"], "0xc8");
    });
}

#[test]
fn batch_members_get_the_same_heads_and_log_splitting() {
    on_both_drivers(|| async {
        let chain = Chain::new(3_000);
        let node = Node::start(&chain);
        node.refuse_logs_over(1000);
        let worker = shard(&config("priority", &[&node.http_url], ""));
        set_head(&worker, 3_500);
        let body = r#"[{"jsonrpc":"2.0","id":"n","method":"eth_blockNumber"},
            {"jsonrpc":"2.0","id":"l","method":"eth_getLogs","params":[{"fromBlock":"0x1","toBlock":"0xbb8"}]},
            {"jsonrpc":"2.0","id":"c","method":"eth_chainId"}]"#;
        let reply = call(&worker, body).await;
        let ids: Vec<&str> = reply
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["n", "l", "c"]);
        assert_eq!(
            reply[0]["result"], "0xdac",
            "the node at 3000 is below the head"
        );
        assert_eq!(reply[1]["result"], direct(&chain, 1, 3_000));
        assert_eq!(reply[2]["result"], "0x1");
        // Refused inside the sub-batch, then bisected: the whole range was asked once.
        let ranges = node.log_ranges();
        assert_eq!(
            ranges.iter().filter(|r| **r == (1, 3_000)).count(),
            1,
            "{ranges:?}"
        );
        // Over a configured limit: split before anything is sent.
        let limited = shard(&config(
            "priority",
            &[&node.http_url],
            "    max_logs_range: 1000\n",
        ));
        let before = node.log_ranges().len();
        let reply = call(&limited, body).await;
        assert_eq!(reply[1]["result"], direct(&chain, 1, 3_000));
        let mut chunks = node.log_ranges()[before..].to_vec();
        chunks.sort();
        assert_eq!(chunks, [(1, 1000), (1001, 2000), (2001, 3000)]);
    });
}

#[test]
fn latest_is_pinned_to_the_consensus_head_when_asked() {
    on_both_drivers(|| async {
        let p = Scripted::start(|_| Answer::Result("\"0x0\""), false);
        let pinned = shard(&config("priority", &[&p.url], "    pin_latest: true\n"));
        set_head(&pinned, 100);
        let balance = r#"{"jsonrpc":"2.0","id":9,"method":"eth_getBalance","params":["0x00000000000000000000000000000000000000aa","latest"]}"#;
        let reply = call(&pinned, balance).await;
        assert_eq!(
            (&reply["id"], &reply["result"]),
            (&Value::from(9), &Value::from("0x0"))
        );
        let no_block = r#"{"jsonrpc":"2.0","id":9,"method":"eth_call","params":[{"to":"0x00000000000000000000000000000000000000aa"}]}"#;
        call(&pinned, no_block).await;
        assert_eq!(p.count(r#""0x64""#), 2, "{:?}", p.received.borrow());
        assert_eq!(p.count("latest"), 0);
        // Not asked: `latest` goes as the client sent it.
        let plain = shard(&config("priority", &[&p.url], ""));
        set_head(&plain, 100);
        call(&plain, balance).await;
        assert_eq!(p.count("latest"), 1);
    });
}

/// `eth_sendRawTransaction` of the one-byte transaction `0x00`, and its hash (keccak256 of the bytes).
const SEND: &str =
    r#"{"jsonrpc":"2.0","id":5,"method":"eth_sendRawTransaction","params":["0x00"]}"#;
const HASH: &str = "0xbc36789e7a1e281436464229828f817d6612f7b477d66591ff96a9e064bcc98a";

#[test]
fn a_send_a_provider_already_knows_is_answered_with_its_hash() {
    on_both_drivers(|| async {
        let knows = Scripted::start(|_| Answer::Error(-32000, "already known"), false);
        let worker = shard(&config("priority", &[&knows.url], ""));
        let reply = call(&worker, SEND).await;
        assert_eq!(
            (&reply["id"], &reply["result"]),
            (&Value::from(5), &Value::from(HASH)),
            "{reply}"
        );
        // "nonce too low" is success only when the transaction is found.
        let mined = Scripted::start(
            |m| match m {
                "eth_getTransactionByHash" => Answer::Result(r#"{"hash":"0xbc"}"#),
                _ => Answer::Error(-32000, "nonce too low: next nonce 1, tx nonce 0"),
            },
            false,
        );
        let worker = shard(&config("priority", &[&mined.url], ""));
        assert_eq!(call(&worker, SEND).await["result"], HASH);
        let other = Scripted::start(
            |m| match m {
                "eth_getTransactionByHash" => Answer::Result("null"),
                _ => Answer::Error(-32000, "nonce too low: next nonce 1, tx nonce 0"),
            },
            false,
        );
        let worker = shard(&config("priority", &[&other.url], ""));
        let reply = call(&worker, SEND).await;
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("nonce too low"),
            "{reply}"
        );
        assert_eq!(other.count("eth_sendRawTransaction"), 1);
    });
}

#[test]
fn a_broadcast_send_reaches_every_provider_once() {
    on_both_drivers(|| async {
        let accepts = || {
            Scripted::start(
                |_| {
                    Answer::Result(
                        r#""0xbc36789e7a1e281436464229828f817d6612f7b477d66591ff96a9e064bcc98a""#,
                    )
                },
                false,
            )
        };
        let (a, b) = (accepts(), accepts());
        let knows = Scripted::start(|_| Answer::Error(-32000, "already known"), false);
        let failing = Scripted::start(|_| Answer::Status(500), false);
        let yaml = config(
            "priority",
            &[&a.url, &b.url, &knows.url, &failing.url],
            "    broadcast_sends: true\n    hedge: true\n",
        );
        let worker = shard(&yaml);
        let reply = call(&worker, SEND).await;
        assert_eq!(reply["result"], HASH, "{reply}");
        for p in [&a, &b, &knows, &failing] {
            assert_eq!(p.count("eth_sendRawTransaction"), 1, "once per provider");
        }
        assert_eq!(worker.stats.borrow().indexing.sends_broadcast, 1);
        // Without the opt-in: one provider only.
        let single = shard(&yaml.replace("broadcast_sends: true", "broadcast_sends: false"));
        call(&single, SEND).await;
        assert_eq!(a.count("eth_sendRawTransaction"), 2);
        assert_eq!(
            b.count("eth_sendRawTransaction") + knows.count("eth_sendRawTransaction"),
            2
        );
    });
}

#[test]
fn the_pending_nonce_is_the_highest_when_asked() {
    on_both_drivers(|| async {
        let nonce = |n: &'static str| Scripted::start(move |_| Answer::Result(n), false);
        let (p1, p2, p3) = (nonce("\"0x5\""), nonce("\"0x7\""), nonce("\"0x6\""));
        let urls = [&p1.url[..], &p2.url, &p3.url];
        let count = |tag: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"eth_getTransactionCount","params":["0x00000000000000000000000000000000000000aa","{tag}"]}}"#
            )
        };
        let highest = shard(&config(
            "priority",
            &urls,
            "    highest_pending_nonce: true\n",
        ));
        assert_eq!(call(&highest, &count("pending")).await["result"], "0x7");
        for p in [&p1, &p2, &p3] {
            assert_eq!(p.count("eth_getTransactionCount"), 1);
        }
        // `latest` is one provider's answer, as is `pending` without the opt-in.
        assert_eq!(call(&highest, &count("latest")).await["result"], "0x5");
        let plain = shard(&config("priority", &urls, ""));
        assert_eq!(call(&plain, &count("pending")).await["result"], "0x5");
    });
}

#[test]
fn a_block_hash_read_unknown_to_one_provider_is_served_by_another() {
    on_both_drivers(|| async {
        let unaware = Scripted::start(|_| Answer::Error(-32000, "unknown block"), false);
        let aware = Scripted::start(|_| Answer::Result("\"0x7\""), false);
        let worker = shard(&config("priority", &[&unaware.url, &aware.url], ""));
        let by_hash = r#"{"jsonrpc":"2.0","id":4,"method":"eth_getBalance","params":["0x00000000000000000000000000000000000000aa",{"blockHash":"0x01"}]}"#;
        for _ in 0..2 {
            let reply = call(&worker, by_hash).await;
            assert_eq!(reply["result"], "0x7", "{reply}");
        }
        // Nothing was remembered against the first provider: it is asked first every time.
        assert_eq!(unaware.count("eth_getBalance"), 2);
        assert!(worker.routing.borrow().health.unsupported.is_empty());
    });
}
