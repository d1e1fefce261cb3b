//! The response cache's costs, for the choice of per-core stores (`src/cache/memory.rs`):
//! - `pipeline/hit` vs `pipeline/miss`: one `eth_getBlockByNumber` through the whole JSON-RPC pipeline of a worker
//!   (parse, plan, key, lookup or forward, id splice, observe), answered from the cache, or with the cache off by a
//!   provider on loopback (a tiny HTTP/1.1 server on a thread of its own, keep-alive);
//! - `store/get/*`: a hit in the per-core store against a hit in a `Mutex`-guarded map (one shard of a sharded
//!   process-wide store), uncontended and with two threads reading the same shard at once.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lasso::cache::finality::FinalityUpdate;
use lasso::cache::layer::{Answer, Tag};
use lasso::cache::memory::MemoryStore;
use lasso::routing::table::RoutingTable;
use lasso::rpc::meta::MetaMode;
use lasso::rpc::pipeline::{ClientBody, Transport, handle};
use lasso::shard::state::{Shared, Worker};

/// A block answer of about 1.5 kB (a header with a few transaction hashes).
fn block_result() -> String {
    let txs: Vec<String> = (0..20).map(|i| format!("\"0x{i:064x}\"")).collect();
    format!(
        r#"{{"number":"0x10","hash":"0x{:064x}","parentHash":"0x{:064x}","transactions":[{}]}}"#,
        1,
        2,
        txs.join(",")
    )
}

/// A keep-alive JSON-RPC provider on loopback answering every call with `result` under the caller's id.
fn provider(result: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            let result = result.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut len = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let reply = format!(
                        r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
                        req["id"]
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        reply.len()
                    );
                    if writer.write_all(head.as_bytes()).is_err()
                        || writer.write_all(reply.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn worker(yaml: &str) -> Rc<Worker> {
    let config =
        Arc::new(lasso::config::load_str(yaml, Path::new("bench.yml"), &|_| None).unwrap());
    let (supervisor, _) = std::sync::mpsc::channel();
    let (control, _) = futures_channel::mpsc::unbounded();
    let shared = Arc::new(Shared {
        initial_table: Arc::new(RoutingTable::empty(
            config.providers.len(),
            config.chain_count(),
        )),
        config,
        started: Instant::now(),
        node_id: "bench".into(),
        region: None,
        workers: 1,
        controls: vec![control],
        connections: Arc::new(AtomicUsize::new(0)),
        peers: Arc::default(),
        supervisor,
        generation: 1,
        tls: lasso::upstream::conn::tls_connector(None).unwrap(),
        started_epoch_ms: 0,
        log_sample_rate: 0.0,
    });
    Rc::new(Worker::new(0, shared))
}

fn pipeline(c: &mut Criterion) {
    let url = provider(block_result());
    let yaml = |cache: &str| {
        format!(
            "routing: {{ hedge: {{ enabled: false }} }}\ncache: {cache}\nchains:\n  c:\n    chain_id: 1\n    \
             providers:\n      - {{ id: p, url: \"{url}\" }}\n"
        )
    };
    let body =
        br#"{"jsonrpc":"2.0","id":7,"method":"eth_getBlockByNumber","params":["0x10",false]}"#;
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("pipeline");
    for (name, cache) in [
        ("hit", "{ enabled: true }"),
        ("miss", "{ enabled: false, multiplex: false }"),
    ] {
        let w = worker(&yaml(cache));
        w.cache.finality.borrow_mut().apply(FinalityUpdate {
            chain: 0,
            head: 100,
            finalized: 90,
            reorg_from: None,
        });
        let target = lasso::rpc::target::resolve(&w.config, "/rpc/c", "/rpc").unwrap();
        // Warm: the cache holds the answer (hit), the connection is pooled (miss).
        rt.block_on(handle(
            &w,
            target,
            ClientBody::from(&body[..]),
            MetaMode::Off,
            Transport::Http,
            None,
            None,
        ));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let reply = handle(
                            &w,
                            target,
                            ClientBody::from(&black_box(body)[..]),
                            MetaMode::Off,
                            Transport::Http,
                            None,
                            None,
                        )
                        .await;
                        assert_eq!(reply.status, 200);
                        black_box(reply);
                    }
                    start.elapsed()
                })
            })
        });
        let stats = w.cache_stats();
        eprintln!(
            "pipeline/{name}: cache hits {} misses {}",
            stats.hits, stats.misses
        );
    }
    group.finish();
}

/// One shard of a process-wide store: a map behind a lock, read from any thread.
type SharedStore = Arc<Mutex<HashMap<Vec<u8>, Arc<[u8]>>>>;

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("\x01\0\0\0eth_getBlockByNumber\0[\"0x{i:x}\",false]").into_bytes())
        .collect()
}

fn store(c: &mut Criterion) {
    const N: usize = 10_000;
    let result = block_result();
    let body = format!(r#"{{"jsonrpc":"2.0","id":0,"result":{result}}}"#);
    let answer = Answer {
        body: Rc::from(body.as_bytes()),
        id: 21..22,
    };
    let keys = keys(N);
    let now = Instant::now();
    let mut mine = MemoryStore::new(64 << 20);
    for k in &keys {
        let tag = Tag {
            chain: 1,
            height: 1,
            ttl: Duration::from_secs(3600),
        };
        mine.put(k, answer.clone(), tag, now);
    }
    let shared: SharedStore = Arc::new(Mutex::new(
        keys.iter()
            .map(|k| (k.clone(), Arc::from(body.as_bytes())))
            .collect(),
    ));
    let mut group = c.benchmark_group("store/get");
    let mut i = 0;
    group.bench_function("per_core", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            let a = mine.get(&keys[i], now).unwrap();
            black_box(a.with_id(b"7"))
        })
    });
    group.bench_function("mutex_uncontended", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            let a = shared.lock().unwrap().get(&keys[i]).cloned().unwrap();
            black_box(a.to_vec())
        })
    });
    let keys = Arc::new(keys);
    group.bench_function("mutex_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let (shared, keys) = (shared.clone(), keys.clone());
                    std::thread::spawn(move || {
                        let mut i = t * 17;
                        for _ in 0..iters {
                            i = (i + 7919) % N;
                            let a = shared.lock().unwrap().get(&keys[i]).cloned().unwrap();
                            black_box(a.to_vec());
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            // Time per get of one thread (both ran `iters` gets side by side).
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = pipeline, store
}
criterion_main!(benches);
