//! Request inspection and id rewriting: Lasso's lazy sonic-rs inspection and byte splicing against serde_json (full
//! `Value` trees, and borrowed `RawValue` structs as the fairest serde baseline), on 100 B, 10 KB and 1 MB bodies; and the nesting guard that precedes every parse.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lasso::wire::jsonrpc::{self, RequestBody};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A request of roughly `size` bytes: an `eth_call` whose data field carries the bulk.
fn request(size: usize) -> Vec<u8> {
    let head = r#"{"jsonrpc":"2.0","id":"client-7","method":"eth_call","params":[{"to":"0x9344b07175800259691961298ca11c824e65032d","data":"0x"#;
    let tail = r#""},"latest"]}"#;
    let fill = size.saturating_sub(head.len() + tail.len()).max(2) & !1;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head.as_bytes());
    out.extend(std::iter::repeat_n(b'a', fill));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// A provider reply of roughly `size` bytes.
fn reply(size: usize) -> Vec<u8> {
    let head = r#"{"jsonrpc":"2.0","id":42,"result":"0x"#;
    let fill = size.saturating_sub(head.len() + 2).max(2) & !1;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head.as_bytes());
    out.extend(std::iter::repeat_n(b'f', fill));
    out.extend_from_slice(b"\"}");
    out
}

#[derive(Deserialize)]
struct BorrowedCall<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

const SIZES: [(usize, &str); 3] = [(100, "100B"), (10 * 1024, "10KB"), (1024 * 1024, "1MB")];

fn inspect(c: &mut Criterion) {
    let mut group = c.benchmark_group("inspect_request");
    for (size, label) in SIZES {
        let body = request(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("lasso_sonic_lazy", label),
            &body,
            |b, body| {
                b.iter(|| match jsonrpc::parse_request(black_box(body)).unwrap() {
                    RequestBody::Single(call) => {
                        black_box((call.method.len(), call.id, call.params))
                    }
                    RequestBody::Batch(_) => unreachable!(),
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_borrowed", label),
            &body,
            |b, body| {
                b.iter(|| {
                    let call: BorrowedCall = serde_json::from_slice(black_box(body)).unwrap();
                    black_box((
                        call.method.len(),
                        call.id.map(|r| r.get().len()),
                        call.params.map(|r| r.get().len()),
                    ))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", label),
            &body,
            |b, body| {
                b.iter(|| {
                    let v: serde_json::Value = serde_json::from_slice(black_box(body)).unwrap();
                    black_box((
                        v["method"].as_str().map(str::len),
                        v.get("id").is_some(),
                        v.get("params").is_some(),
                    ))
                })
            },
        );
    }
    group.finish();
}

fn rewrite_request_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite_request_id");
    for (size, label) in SIZES {
        let body = request(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("lasso_splice", label), &body, |b, body| {
            b.iter(|| {
                let RequestBody::Single(call) = jsonrpc::parse_request(black_box(body)).unwrap()
                else {
                    unreachable!()
                };
                let mut out = Vec::with_capacity(body.len() + 8);
                jsonrpc::with_upstream_id(body, &call, 123_456, &mut out);
                black_box(out)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", label),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut v: serde_json::Value = serde_json::from_slice(black_box(body)).unwrap();
                    v["id"] = serde_json::Value::from(123_456u64);
                    black_box(serde_json::to_vec(&v).unwrap())
                })
            },
        );
    }
    group.finish();
}

fn restore_reply_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("restore_reply_id");
    for (size, label) in SIZES {
        let body = reply(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("lasso_splice", label), &body, |b, body| {
            b.iter(|| {
                let view = jsonrpc::inspect_reply(black_box(body)).unwrap();
                let mut out = Vec::with_capacity(body.len() + 8);
                jsonrpc::restore_id(body, &view, br#""client-7""#, &mut out);
                black_box(out)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", label),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut v: serde_json::Value = serde_json::from_slice(black_box(body)).unwrap();
                    v["id"] = serde_json::Value::from("client-7");
                    black_box(serde_json::to_vec(&v).unwrap())
                })
            },
        );
    }
    group.finish();
}

/// The nesting guard that runs before every parse: a body no longer than the limit is not scanned (a 100 B request
/// and a 10 KB reply), a longer one is scanned once.
fn nesting_guard(c: &mut Criterion) {
    let mut group = c.benchmark_group("nesting_exceeds");
    for (size, label) in SIZES {
        let body = reply(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("reply_limit", label), &body, |b, body| {
            b.iter(|| jsonrpc::nesting_exceeds(black_box(body), jsonrpc::MAX_REPLY_DEPTH))
        });
        let body = request(size);
        group.bench_with_input(
            BenchmarkId::new("request_limit", label),
            &body,
            |b, body| {
                b.iter(|| jsonrpc::nesting_exceeds(black_box(body), jsonrpc::MAX_REQUEST_DEPTH))
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = inspect, rewrite_request_id, restore_reply_id, nesting_guard
}
criterion_main!(benches);
