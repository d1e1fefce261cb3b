//! In-process tests of the pipeline: a shard built from configuration text, scripted providers on loopback, and the
//! pipeline called directly (no listener, no process). Each test runs on io_uring and on the legacy driver.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::routing::breaker::BreakerState;
use crate::rpc::test_client::{send, target};
use crate::shard::state::Worker;
use crate::shard::testing::{Answer, Scripted, on_both_drivers, shard};

const SLOW: Duration = Duration::from_secs(5);

/// A one-chain config over `providers`, tried in priority order; `extra` holds more YAML (routing, upstream).
fn config(providers: &[&Scripted], extra: &str) -> String {
    config_with("priority", providers, extra)
}

fn config_with(strategy: &str, providers: &[&Scripted], extra: &str) -> String {
    let mut yaml = format!(
        "{extra}\nchains:\n  ethereum:\n    chain_id: 1\n    default_strategy: {strategy}\n    providers:\n"
    );
    for (i, p) in providers.iter().enumerate() {
        yaml.push_str(&format!(
            "      - {{ id: p{}, url: \"{}\" }}\n",
            i + 1,
            p.url
        ));
    }
    yaml
}

/// Routing settings that keep the tests about one thing: no hedging unless asked, no probes, no coalescing.
const QUIET: &str =
    "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: false } }";

async fn call(worker: &Rc<Worker>, body: &str) -> (u16, Value) {
    send(worker, target(worker, "/rpc/ethereum"), body).await
}

fn breaker(worker: &Worker, pid: usize) -> BreakerState {
    worker.routing.borrow().health.breakers[pid].state(std::time::Instant::now())
}

const BLOCK_NUMBER: &str = r#"{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]}"#;

#[test]
fn a_failed_provider_hands_the_call_to_the_next_in_order() {
    on_both_drivers(|| async {
        let p1 = Scripted::start(|_| Answer::Status(503), false);
        let p2 = Scripted::start(|_| Answer::Result("\"0x2\""), false);
        let p3 = Scripted::start(|_| Answer::Result("\"0x3\""), false);
        let worker = shard(&config(&[&p1, &p2, &p3], QUIET));
        let (status, reply) = call(&worker, BLOCK_NUMBER).await;
        assert_eq!(
            (status, &reply["result"], &reply["id"]),
            (200, &Value::from("0x2"), &Value::from(7))
        );
        assert_eq!(
            (
                p1.count("eth_blockNumber"),
                p2.count("eth_blockNumber"),
                p3.count("eth_blockNumber")
            ),
            (1, 1, 0)
        );
    });
}

#[test]
fn hanging_providers_share_the_deadline_so_each_gets_its_turn() {
    on_both_drivers(|| async {
        let hang = || {
            Scripted::start(
                |_| Answer::After(SLOW, Box::new(Answer::Result("\"0x1\""))),
                false,
            )
        };
        let (p1, p2, p3) = (hang(), hang(), hang());
        let extra = "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: false }, deadlines_ms: { light: 600 } }";
        let worker = shard(&config(&[&p1, &p2, &p3], extra));
        let (status, reply) = call(&worker, BLOCK_NUMBER).await;
        assert_eq!(
            (status, &reply["error"]["code"]),
            (504, &Value::from(-32012)),
            "{reply}"
        );
        // Without the split the first provider would have taken the whole deadline.
        for p in [&p1, &p2, &p3] {
            assert_eq!(p.count("eth_blockNumber"), 1);
        }
    });
}

#[test]
fn a_write_that_may_have_reached_a_provider_is_never_sent_to_another() {
    on_both_drivers(|| async {
        let p1 = Scripted::start(|_| Answer::Status(500), false);
        // The network does not know the transaction (Lasso asks before reporting the failure).
        let p2 = Scripted::start(
            |m| match m {
                "eth_getTransactionByHash" => Answer::Result("null"),
                _ => Answer::Result("\"0xhash\""),
            },
            false,
        );
        let worker = shard(&config(&[&p1, &p2], QUIET));
        let send =
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x02"]}"#;
        let (status, reply) = call(&worker, send).await;
        assert_eq!(status, 502, "{reply}");
        assert_eq!(reply["error"]["code"], -32010);
        assert_eq!(p1.count("eth_sendRawTransaction"), 1);
        assert_eq!(
            p2.count("eth_sendRawTransaction"),
            0,
            "a write was sent twice"
        );
    });
}

#[test]
fn a_slow_provider_is_hedged_and_being_outrun_does_not_open_its_breaker() {
    on_both_drivers(|| async {
        let p1 = Scripted::start(
            |_| Answer::After(SLOW, Box::new(Answer::Result("\"0x1\""))),
            false,
        );
        let p2 = Scripted::start(|_| Answer::Result("\"0x2\""), false);
        let extra = "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: true, min_delay_ms: 10, max_delay_ms: 30 } }";
        let worker = shard(&config(&[&p1, &p2], extra));
        for _ in 0..6 {
            let (_, reply) = call(&worker, BLOCK_NUMBER).await;
            assert_eq!(reply["result"], "0x2", "{reply}");
        }
        assert_eq!(p2.count("eth_blockNumber"), 6);
        assert_eq!(
            breaker(&worker, 0),
            BreakerState::Closed,
            "a hedge win is not the outrun provider's failure"
        );
        assert_eq!(worker.routing.borrow().recorder.hedges, 6);
    });
}

#[test]
fn timeouts_strike_a_provider_only_where_another_answered_in_time() {
    on_both_drivers(|| async {
        let extra = "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: false }, deadlines_ms: { light: 400 }, breaker: { timeout_threshold: 3 } }";
        let hang = || {
            Scripted::start(
                |_| Answer::After(SLOW, Box::new(Answer::Result("\"0x1\""))),
                false,
            )
        };
        // Slow everywhere: the call's weight, not the providers' fault.
        let (a, b) = (hang(), hang());
        let worker = shard(&config(&[&a, &b], extra));
        for _ in 0..4 {
            assert_eq!(call(&worker, BLOCK_NUMBER).await.0, 504);
        }
        assert_eq!(
            (breaker(&worker, 0), breaker(&worker, 1)),
            (BreakerState::Closed, BreakerState::Closed)
        );
        // One hangs where the other answers: the hanging one opens.
        let slow = hang();
        let fast = Scripted::start(|_| Answer::Result("\"0x2\""), false);
        let worker = shard(&config(&[&slow, &fast], extra));
        for _ in 0..3 {
            assert_eq!(call(&worker, BLOCK_NUMBER).await.1["result"], "0x2");
        }
        assert_eq!(breaker(&worker, 0), BreakerState::Open);
    });
}

#[test]
fn an_excluded_provider_not_known_dead_is_still_tried_before_refusing() {
    on_both_drivers(|| async {
        let failing = Rc::new(Cell::new(true));
        let flag = failing.clone();
        let p1 = Scripted::start(
            move |_| {
                if flag.get() {
                    Answer::Status(500)
                } else {
                    Answer::Result("\"0x1\"")
                }
            },
            false,
        );
        let extra = "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: false }, breaker: { server_threshold: 2, recovery_ms: 60000 } }";
        let worker = shard(&config(&[&p1], extra));
        for _ in 0..2 {
            call(&worker, BLOCK_NUMBER).await;
        }
        assert_eq!(breaker(&worker, 0), BreakerState::Open);
        failing.set(false);
        let (status, reply) = call(&worker, BLOCK_NUMBER).await;
        assert_eq!(
            (status, &reply["result"]),
            (200, &Value::from("0x1")),
            "{reply}"
        );
    });
}

#[test]
fn batch_answers_come_back_in_request_order_under_the_clients_ids() {
    on_both_drivers(|| async {
        let p1 = Scripted::start(
            |method| match method {
                "eth_blockNumber" => Answer::Result("\"0x10\""),
                "eth_gasPrice" => Answer::Result("\"0x20\""),
                _ => Answer::Error(-32602, "invalid params"),
            },
            true,
        );
        let worker = shard(&config(&[&p1], QUIET));
        let body = r#"[{"jsonrpc":"2.0","id":"a","method":"eth_blockNumber"},
            {"jsonrpc":"2.0","method":"eth_gasPrice"},
            {"jsonrpc":"2.0","id":"b","method":"eth_gasPrice"},
            {"jsonrpc":"2.0","id":"c","method":"eth_getBalance","params":[]},
            {"jsonrpc":"2.0","id":"d","method":"eth_chainId"}]"#;
        let (status, reply) = call(&worker, body).await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = reply
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"], "{reply}");
        assert_eq!(reply[0]["result"], "0x10");
        assert_eq!(reply[1]["result"], "0x20");
        assert_eq!(reply[2]["error"]["code"], -32602);
        assert_eq!(reply[3]["result"], "0x1");
        assert_eq!(
            p1.received.borrow().len(),
            1,
            "one sub-batch for one candidate list"
        );
    });
}

#[test]
fn single_reads_ready_together_travel_as_one_batch() {
    on_both_drivers(|| async {
        let p1 = Scripted::start(|_| Answer::Result("\"0x5\""), false);
        let extra = "upstream: { coalesce: true, max_coalesce: 32 }\nrouting: { probe_share: 0.0, hedge: { enabled: false } }";
        let worker = shard(&config(&[&p1], extra));
        let bodies: Vec<String> = (0..8)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_getBalance","params":["0x{i:040x}","latest"]}}"#))
            .collect();
        let replies = join_all(bodies.iter().map(|b| call(&worker, b))).await;
        for (i, (status, reply)) in replies.iter().enumerate() {
            assert_eq!(
                (*status, &reply["id"], &reply["result"]),
                (200, &Value::from(i), &Value::from("0x5"))
            );
        }
        let received = p1.received.borrow();
        assert!(
            received.len() < 8,
            "8 calls went as {} requests",
            received.len()
        );
        assert!(
            received.iter().any(|b| b.trim_start().starts_with('[')),
            "no batch: {received:?}"
        );
    });
}

fn filter_provider(id: &'static str) -> Scripted {
    Scripted::start(
        move |method| match method {
            "eth_newFilter" | "eth_newBlockFilter" => Answer::Result(id),
            "eth_getFilterChanges" => Answer::Result("[]"),
            _ => Answer::Result("\"0x1\""),
        },
        false,
    )
}

#[test]
fn a_filter_stays_on_the_provider_that_made_it() {
    on_both_drivers(|| async {
        let (p1, p2) = (filter_provider("\"0xa1\""), filter_provider("\"0xb2\""));
        let worker = shard(&config_with("round-robin", &[&p1, &p2], QUIET));
        let (_, created) = call(
            &worker,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_newBlockFilter","params":[]}"#,
        )
        .await;
        let filter = created["result"].as_str().expect("a filter id").to_string();
        let (maker, other, own_id) = if p1.count("eth_newBlockFilter") == 1 {
            (&p1, &p2, "0xa1")
        } else {
            (&p2, &p1, "0xb2")
        };
        assert_eq!(
            other.count("eth_newBlockFilter"),
            0,
            "a filter is made once"
        );
        assert!(
            filter.ends_with(&own_id[2..]) && filter != own_id,
            "wrapped id {filter}"
        );
        for i in 0..6 {
            let poll = format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_getFilterChanges","params":["{filter}"]}}"#
            );
            let (_, reply) = call(&worker, &poll).await;
            assert_eq!(reply["result"], serde_json::json!([]), "{reply}");
        }
        // Batched with other calls too.
        let batch = format!(
            r#"[{{"jsonrpc":"2.0","id":"x","method":"eth_getFilterChanges","params":["{filter}"]}},{{"jsonrpc":"2.0","id":"y","method":"eth_blockNumber"}}]"#
        );
        let (_, reply) = call(&worker, &batch).await;
        assert_eq!(reply[0]["result"], serde_json::json!([]), "{reply}");
        assert_eq!(maker.count("eth_getFilterChanges"), 7);
        assert_eq!(
            maker.count(&format!("[\"{own_id}\"]")),
            7,
            "the provider gets its own id back"
        );
        assert_eq!(other.count("eth_getFilterChanges"), 0);
        // A configuration without that provider: the client is told to make a new filter.
        let yaml = config_with("round-robin", &[other], QUIET).replace("id: p1", "id: p3");
        let without = shard(&yaml);
        let poll = format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"eth_getFilterChanges","params":["{filter}"]}}"#
        );
        let (status, reply) = call(&without, &poll).await;
        assert_eq!(
            (status, &reply["error"]["code"]),
            (200, &Value::from(-32000)),
            "{reply}"
        );
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("filter not found")
        );
    });
}

#[test]
fn filter_creation_is_never_hedged() {
    on_both_drivers(|| async {
        let slow = Scripted::start(
            |_| {
                Answer::After(
                    Duration::from_millis(300),
                    Box::new(Answer::Result("\"0xa1\"")),
                )
            },
            false,
        );
        let fast = filter_provider("\"0xb2\"");
        let extra = "upstream: { coalesce: false }\nrouting: { probe_share: 0.0, hedge: { enabled: true, min_delay_ms: 10, max_delay_ms: 20 } }";
        let worker = shard(&config(&[&slow, &fast], extra));
        let (_, created) = call(
            &worker,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_newFilter","params":[{}]}"#,
        )
        .await;
        assert!(created["result"].is_string(), "{created}");
        assert_eq!(
            fast.count("eth_newFilter"),
            0,
            "a hedged newFilter leaks a filter"
        );
    });
}
