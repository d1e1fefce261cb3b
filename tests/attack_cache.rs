//! A client filling the response cache with distinct finalized reads (each a 256 KiB block) cannot grow Lasso past
//! the cache's byte bound: the cache holds at most `cache.max_bytes`, evicts the rest, and the process's RSS grows by
//! about what the cache holds, while other clients keep getting their own answers. Also measures memory per cached
//! MB (printed; `cargo test --test attack_cache -- --nocapture`).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const ANSWER_BYTES: usize = 256 * 1024;
const MAX_BYTES: u64 = 16 << 20;

fn status(lasso: &Lasso) -> Value {
    get(lasso.addr(), "/api/status").json()
}

fn read_blocks(conn: &mut Conn, range: std::ops::Range<u64>) {
    for n in range {
        let id = json!(n);
        let r = conn.post(
            "/rpc/ethereum",
            &rpc(
                id.clone(),
                "eth_getBlockByNumber",
                json!([format!("0x{n:x}"), false]),
            ),
        );
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.json()["id"], id);
    }
}

#[test]
fn distinct_finalized_reads_stay_within_the_byte_bound() {
    let p = MockProvider::start("p1");
    p.set_chain_id("0x1");
    // Every block query (the finality tracker's included) gets the same 256 KiB block at height 0x100000.
    p.set_result(
        "eth_getBlockByNumber",
        json!({"number": "0x100000", "hash": format!("0x{:064x}", 1), "parentHash": format!("0x{:064x}", 0),
               "extraData": big_result(ANSWER_BYTES)}),
    );
    let cfg =
        Config::new().chain(Chain::new("ethereum", 1).provider(Provider::new("p1", &p.url())));
    let yaml = format!(
        "{}cache:\n  enabled: true\n  max_bytes: {MAX_BYTES}\n",
        cfg.yaml().replace(
            "    chain_id: 1\n",
            "    chain_id: 1\n    head_poll_ms: 100\n    finality_depth: 0\n"
        )
    );
    let lasso = Lasso::builder(&yaml).workers(1).start();
    eventually(
        Duration::from_secs(20),
        "finalized head reported",
        || match status(&lasso)["chains"][0]["finalized"].as_u64() {
            Some(0x100000) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let mut conn = Conn::connect(lasso.addr());
    // Warm up buffers and pools with reads that are not kept (bypass), then measure.
    for n in 0..16 {
        let r = request(
            lasso.addr(),
            "POST",
            "/rpc/ethereum",
            &[
                ("Content-Type", "application/json"),
                ("X-Lasso-Cache", "bypass"),
            ],
            rpc(
                json!(n),
                "eth_getBlockByNumber",
                json!([format!("0x{n:x}"), false]),
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        status(&lasso)["cache"]["entries"],
        0,
        "bypassed reads are not kept"
    );
    let rss0 = rss_bytes(lasso.pid());

    // Half the bound: nothing evicted; memory per cached MB.
    let half = MAX_BYTES / 2 / (ANSWER_BYTES as u64 + 512);
    read_blocks(&mut conn, 0..half);
    let cache = status(&lasso)["cache"].clone();
    assert_eq!(cache["entries"].as_u64(), Some(half), "{cache}");
    assert_eq!(cache["evictions"], 0, "{cache}");
    let cached = cache["bytes"].as_u64().unwrap();
    let rss1 = rss_bytes(lasso.pid());
    eprintln!(
        "cache memory: {} entries, {:.1} MiB cached, RSS +{:.1} MiB = {:.2} MiB of RSS per cached MiB",
        half,
        cached as f64 / 1048576.0,
        (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
        rss1.saturating_sub(rss0) as f64 / cached as f64
    );

    // Twice the bound: evicted down to it; RSS grows by about the bound, not by what was read.
    read_blocks(&mut conn, half..half + 2 * MAX_BYTES / ANSWER_BYTES as u64);
    let cache = status(&lasso)["cache"].clone();
    assert!(cache["bytes"].as_u64().unwrap() <= MAX_BYTES, "{cache}");
    assert!(cache["evictions"].as_u64().unwrap() > 0, "{cache}");
    let growth = rss_bytes(lasso.pid()).saturating_sub(rss0);
    eprintln!(
        "after 2x the bound: {cache}, RSS +{:.1} MiB",
        growth as f64 / 1048576.0
    );
    assert!(
        growth < MAX_BYTES * 2,
        "RSS grew {growth} bytes for a {MAX_BYTES}-byte cache"
    );
    // The most recent reads are still served from the cache, each with its own id.
    let hits = cache["hits"].as_u64().unwrap();
    let last = half + 2 * MAX_BYTES / ANSWER_BYTES as u64 - 1;
    read_blocks(&mut conn, last..last + 1);
    assert_eq!(status(&lasso)["cache"]["hits"].as_u64().unwrap(), hits + 1);
}
