//! In-process tests of answer reuse in the pipeline: a shard built from configuration text with the cache on,
//! scripted providers on loopback, the chain's finality set as the monitor would, and the pipeline called directly.
//! Each test runs on io_uring and on the legacy driver.

use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join;
use serde_json::Value;

use crate::cache::finality::FinalityUpdate;
use crate::rpc::test_client::{send, target};
use crate::shard::state::Worker;
use crate::shard::testing::{Answer, Scripted, on_both_drivers, shard, until};

fn config(p: &Scripted, cache: &str, chain_extra: &str) -> String {
    format!(
        "upstream: {{ coalesce: false }}\nrouting: {{ probe_share: 0.0, hedge: {{ enabled: false }} }}\ncache: {cache}\n\
         chains:\n  ethereum:\n    chain_id: 1\n{chain_extra}    providers:\n      - {{ id: p1, url: \"{}\" }}\n",
        p.url
    )
}

async fn call_with(worker: &Rc<Worker>, body: &str, bypass: bool) -> Value {
    let target = target(worker, "/rpc/ethereum").with_cache_bypass(bypass);
    send(worker, target, body).await.1
}

async fn call(worker: &Rc<Worker>, body: &str) -> Value {
    call_with(worker, body, false).await
}

fn req(id: u64, method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// The chain's head and finalized head, as the monitor reports them.
async fn finality(worker: &Worker, head: u64, finalized: u64, reorg_from: Option<u64>) {
    crate::rpc::reuse::on_finality(
        worker,
        FinalityUpdate {
            chain: 0,
            head,
            finalized,
            reorg_from,
        },
    )
    .await;
}

fn blocks() -> Scripted {
    Scripted::start(
        |method| match method {
            "eth_getBlockByNumber" => Answer::Result(r#"{"number":"0x10","hash":"0xaa"}"#),
            "eth_getLogs" => Answer::Result("[]"),
            "eth_call" => Answer::Error(3, "execution reverted"),
            _ => Answer::Result("\"0x1\""),
        },
        false,
    )
}

#[test]
fn finalized_answers_are_served_from_the_cache_with_the_clients_id() {
    on_both_drivers(|| async {
        let p = blocks();
        let worker = shard(&config(&p, "{ enabled: true }", ""));
        finality(&worker, 100, 90, None).await;
        let a = call(
            &worker,
            &req(1, "eth_getBlockByNumber", r#"["0x10",false]"#),
        )
        .await;
        let b = call(
            &worker,
            &req(2, "eth_getBlockByNumber", r#"[ "0x10", false ]"#),
        )
        .await;
        assert_eq!((a["id"].clone(), b["id"].clone()), (1.into(), 2.into()));
        assert_eq!(a["result"], b["result"]);
        assert_eq!(
            p.count("eth_getBlockByNumber"),
            1,
            "the second read was a hit"
        );
        // The bypass header asks the provider again.
        call_with(
            &worker,
            &req(3, "eth_getBlockByNumber", r#"["0x10",false]"#),
            true,
        )
        .await;
        assert_eq!(p.count("eth_getBlockByNumber"), 2);
        let stats = worker.cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.bypassed), (1, 1, 1));
    })
}

#[test]
fn moving_tags_errors_and_empty_results_are_not_kept() {
    on_both_drivers(|| async {
        let p = blocks();
        let worker = shard(&config(&p, "{ enabled: true }", ""));
        finality(&worker, 100, 90, None).await;
        for i in 0..2 {
            call(
                &worker,
                &req(i, "eth_getBlockByNumber", r#"["latest",false]"#),
            )
            .await;
            call(
                &worker,
                &req(i, "eth_getBlockByNumber", r#"["finalized",false]"#),
            )
            .await;
            let e = call(&worker, &req(i, "eth_call", r#"[{"to":"0x1"},"0x5"]"#)).await;
            assert_eq!(e["error"]["code"], 3);
            call(
                &worker,
                &req(i, "eth_getLogs", r#"[{"fromBlock":"0x1","toBlock":"0x2"}]"#),
            )
            .await;
        }
        assert_eq!(p.count("latest"), 2);
        assert_eq!(p.count("\"finalized\""), 2);
        assert_eq!(p.count("eth_call"), 2, "errors are not kept");
        assert_eq!(
            p.count("eth_getLogs"),
            2,
            "empty results are not kept by default"
        );
        assert_eq!(worker.cache_stats().stored, 0);
    })
}

#[test]
fn empty_results_are_kept_when_configured_and_methods_can_opt_out() {
    on_both_drivers(|| async {
        let p = blocks();
        let cache = "{ enabled: true, cache_empty: true, methods: { eth_getBlockByNumber: { enabled: false } } }";
        let worker = shard(&config(&p, cache, ""));
        finality(&worker, 100, 90, None).await;
        for i in 0..2 {
            call(
                &worker,
                &req(i, "eth_getLogs", r#"[{"fromBlock":"0x1","toBlock":"0x2"}]"#),
            )
            .await;
            call(
                &worker,
                &req(i, "eth_getBlockByNumber", r#"["0x10",false]"#),
            )
            .await;
        }
        assert_eq!(p.count("eth_getLogs"), 1, "cache_empty keeps []");
        assert_eq!(
            p.count("eth_getBlockByNumber"),
            2,
            "the method's policy turns it off"
        );
    })
}

#[test]
fn a_chain_can_turn_the_cache_off() {
    on_both_drivers(|| async {
        let p = blocks();
        let worker = shard(&config(
            &p,
            "{ enabled: true }",
            "    cache: { enabled: false }\n",
        ));
        finality(&worker, 100, 90, None).await;
        for i in 0..2 {
            call(
                &worker,
                &req(i, "eth_getBlockByNumber", r#"["0x10",false]"#),
            )
            .await;
        }
        assert_eq!(p.count("eth_getBlockByNumber"), 2);
    })
}

#[test]
fn an_answer_fetched_across_a_reorg_is_not_kept() {
    on_both_drivers(|| async {
        let p = Scripted::start(
            |_| {
                Answer::After(
                    Duration::from_millis(100),
                    Box::new(Answer::Result(r#"{"number":"0x5f","hash":"0xold"}"#)),
                )
            },
            false,
        );
        let worker = shard(&config(
            &p,
            "{ enabled: true, unfinalized_ttl_ms: 600000 }",
            "",
        ));
        finality(&worker, 100, 90, None).await;
        let body = req(1, "eth_getBlockByNumber", r#"["0x5f",false]"#);
        let reorg = async {
            until(
                "the read reached the provider",
                Duration::from_secs(5),
                || p.count("eth_getBlockByNumber") == 1,
            )
            .await;
            finality(&worker, 100, 90, Some(93)).await;
        };
        join(call(&worker, &body), reorg).await;
        assert_eq!(
            worker.cache_stats().stored,
            0,
            "fetched while the reorg was reported"
        );
        // Fetched after the reorg: kept (unfinalized), and purged by the next reorg at or below its height.
        call(&worker, &body).await;
        assert_eq!(worker.cache_stats().stored, 1);
        call(&worker, &body).await;
        assert_eq!(p.count("eth_getBlockByNumber"), 2);
        finality(&worker, 101, 90, Some(96)).await;
        assert_eq!(
            worker.cache_stats().entries,
            1,
            "a reorg above its height keeps it"
        );
        finality(&worker, 101, 90, Some(95)).await;
        assert_eq!(
            worker.cache_stats().entries,
            0,
            "a reorg at its height drops it"
        );
        assert_eq!(worker.cache_stats().reorgs, 3);
    })
}

#[test]
fn batch_members_are_answered_from_the_cache_in_order() {
    on_both_drivers(|| async {
        let p = blocks();
        let worker = shard(&config(&p, "{ enabled: true }", ""));
        finality(&worker, 100, 90, None).await;
        let batch = |base: u64| {
            format!(
                "[{},{},{}]",
                req(base, "eth_getBlockByNumber", r#"["0x10",false]"#),
                req(base + 1, "eth_blockNumber", "[]"),
                req(base + 2, "eth_getBlockByNumber", r#"["0x11",false]"#),
            )
        };
        let first = call(&worker, &batch(10)).await;
        let second = call(&worker, &batch(20)).await;
        let ids: Vec<Value> = second
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(ids, vec![Value::from(20), 21.into(), 22.into()], "{second}");
        assert_eq!(first[0]["result"], second[0]["result"]);
        assert_eq!(
            p.count("eth_getBlockByNumber"),
            1,
            "one sub-batch carried both blocks, once"
        );
        assert_eq!(
            p.count("eth_blockNumber"),
            2,
            "the head is asked every time"
        );
        assert_eq!(worker.cache_stats().hits, 2);
    })
}

#[test]
fn state_at_a_block_hash_is_final_once_a_block_answer_told_its_height() {
    on_both_drivers(|| async {
        let hash = format!("0x{}", "ab".repeat(32));
        let block: &'static str =
            Box::leak(format!(r#"{{"number":"0x10","hash":"{hash}"}}"#).into_boxed_str());
        let p = Scripted::start(
            move |method| match method {
                "eth_getBlockByNumber" => Answer::Result(block),
                _ => Answer::Result("\"0x6001\""),
            },
            false,
        );
        // Unfinalized answers are not kept: only a final tag keeps the code.
        let worker = shard(&config(&p, "{ enabled: true, unfinalized_ttl_ms: 0 }", ""));
        finality(&worker, 100, 90, None).await;
        let code = req(
            1,
            "eth_getCode",
            &format!(r#"["0x1",{{"blockHash":"{hash}"}}]"#),
        );
        call(&worker, &code).await;
        call(&worker, &code).await;
        assert_eq!(p.count("eth_getCode"), 2, "height unknown: not final");
        call(
            &worker,
            &req(2, "eth_getBlockByNumber", r#"["0x10",false]"#),
        )
        .await;
        call(&worker, &code).await;
        call(&worker, &code).await;
        assert_eq!(p.count("eth_getCode"), 3, "block 0x10 is final: kept");
    })
}

#[test]
fn a_pending_transaction_is_not_kept() {
    on_both_drivers(|| async {
        let p = Scripted::start(
            |_| Answer::Result(r#"{"hash":"0x1","blockNumber":null,"blockHash":null}"#),
            false,
        );
        let worker = shard(&config(&p, "{ enabled: true, cache_empty: true }", ""));
        finality(&worker, 100, 90, None).await;
        let body = req(
            1,
            "eth_getTransactionByHash",
            &format!(r#"["0x{}"]"#, "cd".repeat(32)),
        );
        call(&worker, &body).await;
        call(&worker, &body).await;
        assert_eq!(
            p.count("eth_getTransactionByHash"),
            2,
            "not in a block yet: asked again"
        );
    })
}
