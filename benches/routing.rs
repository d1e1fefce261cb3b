//! Routing costs on the request path and in the merger: provider selection (`fastest`, `latency-weighted`) over 4,
//! 16 and 64 measured providers, recording one sample, and one merge of 16 workers x 64 providers.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lasso::config::Config;
use lasso::config::Strategy;
use lasso::evm::methods::{BlockTarget, MethodKey};
use lasso::routing::merger::{Harvest, Merger};
use lasso::routing::recorder::{Recorder, SampleKind};
use lasso::routing::router::{LocalHealth, RouteInputs, RouteQuery, Router};
use lasso::routing::table::{RoutingTable, Scope, StatKey, Summary};

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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = selection, record_sample, merge
}
criterion_main!(benches);
