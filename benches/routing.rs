//! Routing costs on the request path and in the merger: provider selection (`fastest`, `latency-weighted`) over 4,
//! 16 and 64 measured providers, recording one sample, one merge of 16 workers x 64 providers, and the whole
//! per-request decision (`request_decision`: the method's key and block, the candidates of 4 measured providers,
//! the reply's inspection and outcome category, one recorded sample), to hold against a request's CPU time.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lasso::config::Config;
use lasso::config::Strategy;
use lasso::evm::methods::{self, BlockTarget, MethodKey};
use lasso::routing::classify::{Category, classify_rpc_error};
use lasso::routing::merger::{Harvest, Merger};
use lasso::routing::recorder::{Recorder, SampleKind};
use lasso::routing::router::{LocalHealth, RouteInputs, RouteQuery, Router};
use lasso::routing::table::{RoutingTable, Scope, StatKey, Summary};
use lasso::wire::jsonrpc::{self, ReplyKind};

fn config(providers: usize) -> Config {
    let mut text = String::from("chains:\n  c:\n    chain_id: 1\n    providers:\n");
    for i in 0..providers {
        text.push_str(&format!(
            "      - {{ id: p{i}, url: \"http://10.0.0.{}:8545\" }}\n",
            i % 250 + 1
        ));
    }
    lasso::config::load_str(&text, Path::new("bench.yml"), &|_| None).unwrap()
}

fn measured_table(providers: usize) -> RoutingTable {
    let mut table = RoutingTable::empty(providers, 1);
    let key = MethodKey::of("eth_call");
    for pid in 0..providers {
        let p50 = 1_000 + (pid as u64 * 7_919) % 40_000;
        let s = Summary {
            samples: 500,
            attempts: 510,
            p50_us: p50,
            p90_us: p50 * 2,
            p95_us: p50 * 3,
            p99_us: p50 * 4,
            ..Default::default()
        };
        table.summaries.insert(
            StatKey {
                pid: pid as u32,
                scope: Scope::Method(key),
            },
            s.clone(),
        );
        table.summaries.insert(
            StatKey {
                pid: pid as u32,
                scope: Scope::Provider,
            },
            s,
        );
    }
    table
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_providers");
    for n in [4, 16, 64] {
        let config = config(n);
        let table = measured_table(n);
        let health = LocalHealth::new(n, 1);
        let chain = &config.profiles[0].chains[0];
        let key = MethodKey::of("eth_call");
        for strategy in [Strategy::Fastest, Strategy::LatencyWeighted] {
            let mut router = Router::new(42);
            group.bench_with_input(BenchmarkId::new(strategy.as_str(), n), &n, |b, _| {
                b.iter(|| {
                    let inputs = RouteInputs {
                        config: &config,
                        table: &table,
                        health: &health,
                        now: Instant::now(),
                    };
                    let q = RouteQuery {
                        chain,
                        strategy,
                        method: "eth_call",
                        key,
                        target: BlockTarget::Any,
                    };
                    black_box(router.candidates(&inputs, &q))
                })
            });
        }
    }
    group.finish();
}

fn record_sample(c: &mut Criterion) {
    let mut recorder = Recorder::default();
    let key = MethodKey::of("eth_getBalance");
    let mut i = 0u64;
    c.bench_function("record_one_sample", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            recorder.record(
                (i % 8) as usize,
                key,
                SampleKind::Answered,
                Duration::from_micros(500 + i % 5_000),
            );
        })
    });
}

fn merge(c: &mut Criterion) {
    let providers = 64;
    let workers = 16;
    let methods = [
        "eth_call",
        "eth_getBalance",
        "eth_blockNumber",
        "eth_getLogs",
    ]
    .map(MethodKey::of);
    let harvests = || -> Vec<Harvest> {
        (0..workers)
            .map(|w| {
                let mut h = Harvest::default();
                for pid in 0..providers {
                    for (m, key) in methods.iter().enumerate() {
                        for s in 0..20u64 {
                            let latency = Duration::from_micros(
                                200 + ((pid * 31 + m * 7 + w) as u64 * 97 + s * 13) % 30_000,
                            );
                            h.recorder.record(pid, *key, SampleKind::Answered, latency);
                        }
                    }
                }
                h
            })
            .collect()
    };
    let mut merger = Merger::new(10, 5, vec![0; providers], 1);
    for _ in 0..10 {
        merger.fold(harvests(), Instant::now());
    }
    c.bench_function("merge_16_workers_x_64_providers", |b| {
        b.iter_batched(
            harvests,
            |h| {
                merger.fold(h, Instant::now());
                black_box(merger.table())
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

/// One call's routing decision as the pipeline makes it: key, block target, clock, candidates.
fn route_one_call(
    router: &mut Router,
    config: &Config,
    table: &RoutingTable,
    health: &LocalHealth,
    method: &str,
    params: &[u8],
) -> usize {
    let chain = &config.profiles[0].chains[0];
    let inputs = RouteInputs {
        config,
        table,
        health,
        now: Instant::now(),
    };
    let q = RouteQuery {
        chain,
        strategy: Strategy::Fastest,
        method,
        key: MethodKey::of(method),
        target: methods::block_target(method, Some(params)),
    };
    router.candidates(&inputs, &q)[0]
}

/// A reply's outcome as an attempt judges it: the reply inspected, then its category.
fn classify_reply(body: &[u8]) -> Category {
    match jsonrpc::inspect_reply(body).map(|r| r.kind) {
        Ok(ReplyKind::Result) => Category::Success,
        Ok(ReplyKind::Error { code, message }) => classify_rpc_error(code, &message),
        Err(_) => Category::ProviderFailure(lasso::routing::classify::FailureClass::Server),
    }
}

fn request_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_decision");
    let config = config(4);
    let mut table = measured_table(4);
    let balance = MethodKey::of("eth_getBalance");
    for pid in 0..4u32 {
        let s = table.summaries[&StatKey {
            pid,
            scope: Scope::Provider,
        }]
            .clone();
        table.summaries.insert(
            StatKey {
                pid,
                scope: Scope::Method(balance),
            },
            s,
        );
    }
    let health = LocalHealth::new(4, 1);
    let method = "eth_getBalance";
    let params = br#"["0x1f9840a85d5af5bf1d1762f925bdaddc4201f984","0x12a05f2"]"#;
    let small = br#"{"jsonrpc":"2.0","id":1817,"result":"0x1bc16d674ec80000"}"#.to_vec();
    let block = {
        let mut b =
            String::from(r#"{"jsonrpc":"2.0","id":1818,"result":{"number":"0x12a05f2","hash":"0x"#);
        b.push_str(&"ab".repeat(32));
        b.push_str(r#"","transactions":["#);
        for i in 0..24 {
            if i > 0 {
                b.push(',');
            }
            b.push_str(&format!("\"0x{:064x}\"", i * 7919));
        }
        b.push_str(r#"],"logsBloom":"0x"#);
        b.push_str(&"00".repeat(256));
        b.push_str(r#""}}"#);
        b.into_bytes()
    };
    let mut router = Router::new(42);
    group.bench_function("route/eth_getBalance/4_providers", |b| {
        b.iter(|| {
            black_box(route_one_call(
                &mut router,
                &config,
                &table,
                &health,
                method,
                params,
            ))
        })
    });
    for (label, body) in [("small_reply", &small), ("block_reply_2kb", &block)] {
        group.bench_function(format!("classify/{label}"), |b| {
            b.iter(|| black_box(classify_reply(black_box(body))))
        });
    }
    let mut recorder = Recorder::default();
    let mut i = 0u64;
    for (label, body) in [("small_reply", &small), ("block_reply_2kb", &block)] {
        group.bench_function(format!("route+classify+record/{label}"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let pid = route_one_call(&mut router, &config, &table, &health, method, params);
                let kind = match classify_reply(black_box(body)) {
                    Category::Success | Category::Deterministic => SampleKind::Answered,
                    _ => SampleKind::Failed,
                };
                recorder.record(pid, balance, kind, Duration::from_micros(500 + i % 5_000));
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = selection, record_sample, merge, request_decision
}
criterion_main!(benches);
