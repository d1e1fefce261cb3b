//! What client access adds to one request on a worker (issue: "the key check and rate limit add < 2% to per-request
//! CPU"): the edge's work for a request of the `reads` mix, without access configured (`off`: no key, nothing
//! required) and with it (`key`: a required key in `X-Lasso-Key`, the key's own limit and a per-address limit, both
//! far above the load, and the answer metered), run one after the other on one thread as a worker does. The parse
//! of the body is not counted: with access configured the edge parses once and hands the parse to the pipeline.
//! Compare the difference with the worker's whole CPU per request (`loadtest/scripts/per_request_cost.sh`).

use std::borrow::Cow;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use lasso::access::gate;
use lasso::config::schema::Config;
use lasso::wire::http::request::{RequestHead, parse_head};
use lasso::wire::jsonrpc::parse_request;

const KEY: &str = "bench-key-0123456789abcdef";

fn config(access: &str) -> Config {
    let yaml = format!(
        "chains:\n  bench:\n    chain_id: 1\n    providers:\n      - {{ id: p, url: \"http://127.0.0.1:9/\" }}\n{access}"
    );
    lasso::config::load_str(&yaml, Path::new("bench.yml"), &|_| None).unwrap()
}

fn head(extra: &str) -> RequestHead {
    let raw = format!("POST /rpc/bench HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 0\r\n\r\n");
    parse_head(raw.as_bytes()).unwrap().unwrap()
}

fn bench(c: &mut Criterion) {
    let body = br#"{"jsonrpc":"2.0","id":17,"method":"eth_getBalance","params":["0x00000000000000000000000000000000000000a1","latest"]}"#;
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let mut group = c.benchmark_group("access");

    let off = config("");
    let plain = head("");
    group.bench_function("off", |b| {
        b.iter(|| {
            let methods: Vec<Cow<'_, str>> = if gate::wants_methods(&off) {
                gate::methods_in(&parse_request(body))
            } else {
                Vec::new()
            };
            let key = gate::check(
                &off,
                1,
                (0, 0),
                black_box(&plain),
                None,
                Some(body),
                &methods,
            );
            black_box(key.unwrap().is_none())
        })
    });

    let on = config(&format!(
        "access:\n  require_key: true\n  keys:\n    - {{ id: bench, key: \"{KEY}\", limit: {{ requests_per_s: 10000000, compute_units_per_s: 20000000, burst_s: 1 }} }}\n  per_ip: {{ requests_per_s: 10000000, compute_units_per_s: 20000000, burst_s: 1 }}\n"
    ));
    let keyed = head(&format!("X-Lasso-Key: {KEY}\r\n"));
    let parsed = parse_request(body);
    group.bench_function("key+limits+metering", |b| {
        b.iter(|| {
            let methods = gate::methods_in(black_box(&parsed));
            let key = gate::check(
                &on,
                1,
                (0, 0),
                black_box(&keyed),
                Some(ip),
                Some(body),
                &methods,
            )
            .unwrap()
            .unwrap();
            gate::meter(&on, key, (0, 0), &methods, body.len(), 180);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
