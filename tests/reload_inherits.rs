//! A configuration reload keeps what routing learned (issue 9, item 10): the new generation inherits, in memory, the
//! breakers, cool-downs and measurements of the providers that stay, and the retired generation's monitor stops
//! probing when it retires (a removed provider hears nothing more).

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn chain(providers: &[&MockProvider]) -> Chain {
    let mut chain = Chain::new("ethereum", 1)
        .strategy("priority")
        .block_time_ms(1000);
    for (i, p) in providers.iter().enumerate() {
        p.set_chain_id("0x1");
        chain = chain.provider(Provider::new(p.name(), &p.url()).priority(i as i64 + 1));
    }
    chain
}

fn config(providers: &[&MockProvider]) -> String {
    Config::new()
        .routing(
            "breaker",
            "{ server_threshold: 1, recovery_ms: 60000, max_recovery_ms: 60000 }",
        )
        .routing("hedge", "{ enabled: false }")
        .chain(chain(providers))
        .yaml()
}

fn providers_of(lasso: &Lasso) -> u64 {
    get(lasso.addr(), "/api/chains").json()["chains"][0]["providers"]
        .as_u64()
        .unwrap()
}

fn reload(lasso: &Lasso, yaml: &str, providers: u64) {
    std::fs::write(lasso.config_path(), yaml).unwrap();
    lasso.send_signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the reload applied",
        || match providers_of(lasso) {
            n if n == providers => Ok(()),
            n => Err(format!("{n} providers")),
        },
    );
}

fn balance(lasso: &Lasso) -> serde_json::Value {
    let params = json!(["0x0000000000000000000000000000000000000001", "latest"]);
    post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(1), "eth_getBalance", params),
    )
    .json()
}

#[test]
fn an_open_breaker_survives_a_reload_for_the_provider_that_stays() {
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    let p3 = MockProvider::start("p3");
    let lasso = Lasso::builder(&config(&[&p1, &p2])).workers(1).start();
    p1.set_fault(Fault::Status(500));
    let first = balance(&lasso);
    assert!(
        first["result"]["provider"] == "p2",
        "failed over to p2: {first}"
    );
    assert_eq!(p1.count("eth_getBalance"), 1);
    // p1's breaker is open (60 s); p1 recovers, and a reload adds p3.
    p1.set_fault(Fault::None);
    reload(&lasso, &config(&[&p1, &p2, &p3]), 3);
    for _ in 0..5 {
        assert!(balance(&lasso)["result"]["provider"] == "p2");
    }
    assert_eq!(
        p1.count("eth_getBalance"),
        1,
        "the new generation forgot p1's open breaker and sent it traffic"
    );
    assert_eq!(p2.count("eth_getBalance"), 6);
}

#[test]
fn the_retired_generations_monitor_stops_probing_a_removed_provider() {
    let kept = MockProvider::start("kept");
    let removed = MockProvider::start("removed");
    let lasso = Lasso::builder(&config(&[&kept, &removed]))
        .workers(1)
        .start();
    eventually(
        Duration::from_secs(10),
        "the removed provider is probed",
        || match removed.probe_count("eth_blockNumber") {
            0 => Err("no probe yet".into()),
            _ => Ok(()),
        },
    );
    reload(&lasso, &config(&[&kept]), 1);
    // Two head polls of the kept provider by the new monitor (1 s apart), then two more: the removed provider's
    // count must not move in between.
    let base = kept.probe_count("eth_blockNumber");
    let wait_polls = |n: usize| {
        eventually(
            Duration::from_secs(15),
            "the kept provider is polled",
            || match kept.probe_count("eth_blockNumber") {
                c if c >= base + n => Ok(()),
                c => Err(format!("{} polls since the reload", c - base)),
            },
        )
    };
    wait_polls(2);
    let removed_then = removed.probe_count("eth_blockNumber");
    wait_polls(4);
    assert_eq!(
        removed.probe_count("eth_blockNumber"),
        removed_then,
        "a retired monitor kept probing a removed provider"
    );
}
