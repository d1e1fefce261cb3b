//! In-process tests of coalescing and of the upstream buffer budget (hardening issue, items 3 and 10): callers
//! sharing a batch keep their own deadlines, one member's size or failure stays its own, a refused batch is re-sent
//! singly and batching is offered again after a back-off, and an answer over the worker's budget fails that request
//! only. Shards from configuration text, scripted providers on loopback, both drivers.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use crate::rpc::test_client::{send, target};
use crate::shard::state::Worker;
use crate::shard::testing::{Answer, Batches, Scripted, on_both_drivers, shard};

fn config(providers: &[&Scripted], extra: &str) -> String {
    let mut yaml = format!(
        "{extra}\nchains:\n  ethereum:\n    chain_id: 1\n    default_strategy: priority\n    providers:\n"
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

async fn call_at(worker: &Rc<Worker>, path: &str, body: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, value) = send(worker, target(worker, path), body).await;
    (status, value, started.elapsed())
}

fn get(method: &str, id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":["0x{id:040x}","latest"]}}"#
    )
}

/// Bodies of the batches a provider received.
fn batches(p: &Scripted) -> Vec<String> {
    p.received
        .borrow()
        .iter()
        .filter(|b| b.trim_start().starts_with('['))
        .cloned()
        .collect()
}

#[test]
fn a_fast_call_sharing_a_batch_with_a_slow_one_keeps_its_own_deadline() {
    on_both_drivers(|| async {
        // p1 answers eth_getCode slowly, so any batch holding it comes back late; p2 answers at once.
        let p1 = Scripted::start(
            |method| match method {
                "eth_getCode" => Answer::After(
                    Duration::from_millis(1500),
                    Box::new(Answer::Result("\"0xslow\"")),
                ),
                _ => Answer::Result("\"0x1\""),
            },
            false,
        );
        let p2 = Scripted::start(|_| Answer::Result("\"0x2\""), false);
        let extra = "upstream: { coalesce: true }\nrouting: { probe_share: 0.0, hedge: { enabled: false }, deadlines_ms: { light: 1000 } }";
        let worker = shard(&config(&[&p1, &p2], extra));
        // The slow call is pinned to p1 (its attempt may take the whole deadline); the fast one may fail over, so
        // its attempt on p1 gets half of it.
        let slow = get("eth_getCode", 1);
        let fast = get("eth_getBalance", 2);
        let (slow, fast) = futures_util::join!(
            call_at(&worker, "/rpc/provider/p1/ethereum", &slow),
            call_at(&worker, "/rpc/ethereum", &fast),
        );
        let shared = batches(&p1);
        assert!(
            shared
                .iter()
                .any(|b| b.contains("eth_getCode") && b.contains("eth_getBalance")),
            "the two calls shared a batch: {shared:?}"
        );
        let (status, reply, took) = fast;
        assert_eq!(
            (status, &reply["id"], &reply["result"]),
            (200, &Value::from(2), &Value::from("0x2")),
            "the fast call is answered by the next provider: {reply}"
        );
        assert!(
            took < Duration::from_millis(900),
            "the fast call left the batch at its own attempt timeout (500 ms), took {took:?}"
        );
        let (status, reply, _) = slow;
        assert_eq!(
            (status, reply["error"]["code"].as_i64()),
            (504, Some(-32012)),
            "the slow call ends at its own deadline: {reply}"
        );
    });
}

#[test]
fn one_members_oversized_answer_does_not_fail_the_others() {
    on_both_drivers(|| async {
        let big: &'static str = Box::leak(format!("\"0x{}\"", "ab".repeat(4096)).into_boxed_str());
        let p1 = Scripted::start(
            move |method| match method {
                "eth_getCode" => Answer::Result(big),
                _ => Answer::Result("\"0x1\""),
            },
            false,
        );
        let extra = "upstream: { coalesce: true, max_response_bytes: 4096 }\nrouting: { probe_share: 0.0, hedge: { enabled: false } }";
        let worker = shard(&config(&[&p1], extra));
        let calls = [
            get("eth_getCode", 1),
            get("eth_getBalance", 2),
            get("eth_getBalance", 3),
        ];
        let replies = join_all(calls.iter().map(|b| call_at(&worker, "/rpc/ethereum", b))).await;
        assert_eq!(batches(&p1).len(), 1, "the three calls went as one batch");
        assert_eq!(
            replies[0].0, 502,
            "the oversized answer fails: {}",
            replies[0].1
        );
        for (status, reply, _) in &replies[1..] {
            assert_eq!(
                (*status, &reply["result"]),
                (200, &Value::from("0x1")),
                "the other members are answered: {reply}"
            );
        }
    });
}

#[test]
fn a_refused_batch_is_sent_singly_and_batching_is_offered_again_later() {
    on_both_drivers(|| async {
        let p1 = Scripted::start_with(|_| Answer::Result("\"0x7\""), Batches::Refused);
        let extra = "upstream: { coalesce: true, coalesce_retry_ms: 300 }\nrouting: { probe_share: 0.0, hedge: { enabled: false } }";
        let worker = shard(&config(&[&p1], extra));
        let wave = |round: u64| {
            let worker = worker.clone();
            async move {
                let calls: Vec<String> = (0..4)
                    .map(|i| get("eth_getBalance", round * 10 + i))
                    .collect();
                let replies =
                    join_all(calls.iter().map(|b| call_at(&worker, "/rpc/ethereum", b))).await;
                for (i, (status, reply, _)) in replies.iter().enumerate() {
                    assert_eq!(
                        (*status, &reply["id"], &reply["result"]),
                        (
                            200,
                            &Value::from(round * 10 + i as u64),
                            &Value::from("0x7")
                        ),
                        "every member of a refused batch is answered alone"
                    );
                }
            }
        };
        wave(0).await;
        let refused_at = Instant::now();
        assert_eq!(
            batches(&p1).len(),
            1,
            "the first wave was offered as a batch"
        );
        assert_eq!(
            p1.received.borrow().len(),
            5,
            "then each call alone: {:?}",
            p1.received.borrow()
        );
        wave(1).await;
        assert_eq!(batches(&p1).len(), 1, "no batch during the back-off");
        // Waves until a batch is offered again (the back-off is 300 ms); the pause only spaces the waves.
        let mut round = 2;
        while batches(&p1).len() < 2 {
            assert!(
                refused_at.elapsed() < Duration::from_secs(5),
                "batching was never offered again"
            );
            monoio::time::sleep(Duration::from_millis(50)).await;
            wave(round).await;
            round += 1;
        }
        assert!(
            refused_at.elapsed() >= Duration::from_millis(300),
            "offered again only after the back-off"
        );
        // Refused again: the back-off doubles (600 ms), so waves in the next 450 ms still go singly.
        let second_refusal = Instant::now();
        while second_refusal.elapsed() < Duration::from_millis(450) {
            wave(round).await;
            round += 1;
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            batches(&p1).len(),
            2,
            "no batch before the doubled back-off ran out"
        );
    });
}

#[test]
fn an_answer_over_the_buffer_budget_fails_that_request_only() {
    on_both_drivers(|| async {
        let big: &'static str =
            Box::leak(format!("\"0x{}\"", "cd".repeat(100_000)).into_boxed_str());
        let p1 = Scripted::start(
            move |method| match method {
                "eth_getCode" => Answer::Result(big),
                _ => Answer::Result("\"0x1\""),
            },
            false,
        );
        let p2 = Scripted::start(move |_| Answer::Result(big), false);
        let extra = "upstream: { coalesce: false, max_buffered_response_bytes: 150000 }\nrouting: { probe_share: 0.0, hedge: { enabled: false } }";
        let worker = shard(&config(&[&p1, &p2], extra));
        let (status, reply, _) = call_at(&worker, "/rpc/ethereum", &get("eth_getCode", 1)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_i64(), &reply["id"]),
            (503, Some(-32005), &Value::from(1)),
            "{reply}"
        );
        assert_eq!(p2.received.borrow().len(), 0, "not sent elsewhere");
        assert_eq!(
            worker.upstream.budget().used(),
            0,
            "the budget is given back"
        );
        let (status, reply, _) = call_at(&worker, "/rpc/ethereum", &get("eth_getBalance", 2)).await;
        assert_eq!(
            (status, &reply["result"]),
            (200, &Value::from("0x1")),
            "{reply}"
        );
    });
}
