//! OpenTelemetry traces (`telemetry.traces`): an OTLP/HTTP receiver inside the test decodes what Lasso exports with
//! opentelemetry-proto's message types and checks the span tree of a request that failed over once (the client's
//! trace id kept, one server span, one child per attempt with provider and outcome), the `traceparent` each provider
//! received (same trace id, the attempt's own span id), and that unsampled requests are passed on but not exported.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::*;

/// Spans received, with the request path and content type of each export.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
    requests: Vec<(String, String)>,
}

/// A minimal OTLP/HTTP collector: `POST` bodies decoded as `ExportTraceServiceRequest`, answered 200.
struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn serve_one(mut stream: TcpStream, received: &Mutex<Received>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = header_value(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let request = ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
        .expect("an ExportTraceServiceRequest");
    {
        let mut r = received.lock().unwrap();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let content_type = header_value(&head, "content-type").unwrap_or_default();
        r.requests.push((path, content_type));
        for rs in request.resource_spans {
            for kv in rs.resource.map(|r| r.attributes).unwrap_or_default() {
                if kv.key == "service.name" {
                    r.services.push(string_of(kv.value.and_then(|v| v.value)));
                }
            }
            for ss in rs.scope_spans {
                r.spans.extend(ss.spans);
            }
        }
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let r = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve_one(stream, &r);
            }
        });
        Collector { addr, received }
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }
}

fn string_of(v: Option<any_value::Value>) -> String {
    match v {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                string_of(kv.value.clone().and_then(|v| v.value)),
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traced_lasso(collector: &Collector, mocks: &[&MockProvider]) -> Lasso {
    traced_lasso_with(collector, mocks, "hedge: { enabled: false }")
}

fn traced_lasso_with(collector: &Collector, mocks: &[&MockProvider], routing: &str) -> Lasso {
    traced_lasso_full(collector, mocks, routing, "")
}

fn traced_lasso_full(
    collector: &Collector,
    mocks: &[&MockProvider],
    routing: &str,
    traces_extra: &str,
) -> Lasso {
    let yaml = format!(
        "{}routing: {{ probe_share: 0.0, {routing} }}\ntelemetry:\n  traces:\n    endpoint: \"http://{}/v1/traces\"\n    sample_ratio: 0.0\n    service_name: lasso-test\n    headers: {{ X-Collector-Key: not-in-logs }}\n{traces_extra}",
        single_chain(mocks).upstream("coalesce", "false").yaml(),
        collector.addr
    );
    Lasso::builder(&yaml).workers(1).start()
}

fn balance(lasso: &Lasso, id: u64, traceparent: Option<&str>) -> serde_json::Value {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
    }
    let body = rpc(json!(id), "eth_getBalance", json!(["0x01", "0x10"]));
    let r = request(
        lasso.addr(),
        "POST",
        "/rpc/ethereum",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

/// The `traceparent` of the provider's client requests, in order.
fn traceparents(m: &MockProvider) -> Vec<Option<String>> {
    m.recorded()
        .iter()
        .filter(|r| !r.probe)
        .map(|r| r.header("traceparent").map(str::to_string))
        .collect()
}

#[test]
fn a_request_that_failed_over_once_is_one_server_span_with_two_attempt_children() {
    let collector = Collector::start();
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    let lasso = traced_lasso(&collector, &[&p1, &p2]);

    // Not sampled (ratio 0, no client context): nothing exported, nothing sent to providers.
    let v = balance(&lasso, 1, None);
    assert_eq!(served_by(&v).as_deref(), Some("p1"), "{v}");
    assert_eq!(traceparents(&p1), vec![None]);
    // The client's context says "not sampled": passed on (same trace id, flags 00), not exported.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    balance(
        &lasso,
        2,
        Some(&format!("00-{unsampled_trace}-b7ad6b7169203331-00")),
    );
    let passed = traceparents(&p1)[1].clone().expect("traceparent passed on");
    assert!(
        passed.starts_with(&format!("00-{unsampled_trace}-")) && passed.ends_with("-00"),
        "{passed}"
    );
    assert!(
        !passed.contains("b7ad6b7169203331"),
        "a new span id: {passed}"
    );

    // Sampled by the client: exported, failing over from p1 to p2.
    p1.set_fault(Fault::Status(500));
    let v = balance(&lasso, 3, Some(&format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")));
    assert_eq!(served_by(&v).as_deref(), Some("p2"), "{v}");

    let spans = eventually(Duration::from_secs(10), "three spans exported", || {
        let spans = collector.spans();
        if spans.len() >= 3 {
            Ok(spans)
        } else {
            Err(format!("{} spans", spans.len()))
        }
    });
    assert_eq!(
        spans.len(),
        3,
        "only the sampled request is exported: {spans:#?}"
    );
    for s in &spans {
        assert_eq!(hex(&s.trace_id), TRACE_ID, "the client's trace id is kept");
    }
    let server: Vec<&Span> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(
        hex(&server.parent_span_id),
        CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(server.name, "eth_getBalance");
    let sa = attrs(server);
    assert_eq!(sa["rpc.method"], "eth_getBalance");
    assert_eq!(sa["lasso.chain"], "ethereum");
    assert_eq!(sa["http.response.status_code"], "200");
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);

    let mut children: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(children.len(), 2, "{spans:#?}");
    for c in &children {
        assert_eq!(
            c.parent_span_id, server.span_id,
            "attempts are children of the request"
        );
        assert!(c.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(c.end_time_unix_nano <= server.end_time_unix_nano);
        assert_eq!(attrs(c)["rpc.method"], "eth_getBalance");
    }
    let (first, second) = (attrs(children[0]), attrs(children[1]));
    assert_eq!(
        (
            first["lasso.provider"].as_str(),
            first["lasso.attempt"].as_str(),
            first["lasso.outcome"].as_str()
        ),
        ("p1", "first", "server_error"),
        "{first:?}"
    );
    assert_eq!(
        children[0].status.as_ref().map(|s| s.code),
        Some(2),
        "the failed attempt is an error"
    );
    assert_eq!(
        (
            second["lasso.provider"].as_str(),
            second["lasso.attempt"].as_str(),
            second["lasso.outcome"].as_str()
        ),
        ("p2", "retry", "ok"),
        "{second:?}"
    );
    assert!(children[1].status.as_ref().is_none_or(|s| s.code != 2));
    assert_ne!(children[0].span_id, children[1].span_id);

    // Each provider received the trace id and the span id of its own attempt.
    let p1_tp = traceparents(&p1)
        .last()
        .cloned()
        .flatten()
        .expect("p1 got a traceparent");
    let p2_tp = traceparents(&p2)
        .last()
        .cloned()
        .flatten()
        .expect("p2 got a traceparent");
    assert_eq!(
        p1_tp,
        format!("00-{TRACE_ID}-{}-01", hex(&children[0].span_id))
    );
    assert_eq!(
        p2_tp,
        format!("00-{TRACE_ID}-{}-01", hex(&children[1].span_id))
    );

    let received = collector.received.lock().unwrap();
    assert!(
        received.services.iter().all(|s| s == "lasso-test"),
        "{:?}",
        received.services
    );
    assert!(
        received
            .requests
            .iter()
            .all(|(path, ct)| path == "/v1/traces" && ct == "application/x-protobuf"),
        "{:?}",
        received.requests
    );
    drop(received);
    let metrics = get(lasso.addr(), "/metrics").text();
    assert!(
        metrics.contains("lasso_trace_spans_exported_total 3"),
        "{metrics}"
    );
    assert!(!lasso.logs().contains("not-in-logs"));
}

#[test]
fn a_hedged_request_has_the_hedge_and_the_cancelled_first_attempt() {
    let collector = Collector::start();
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    let lasso = traced_lasso_with(
        &collector,
        &[&p1, &p2],
        "hedge: { enabled: true, min_delay_ms: 20, max_delay_ms: 40 }",
    );
    p1.set_fault(Fault::Delay(3_000));
    let v = balance(&lasso, 1, Some(&format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")));
    assert_eq!(served_by(&v).as_deref(), Some("p2"), "{v}");
    let spans = eventually(Duration::from_secs(10), "three spans exported", || {
        let spans = collector.spans();
        if spans.len() >= 3 {
            Ok(spans)
        } else {
            Err(format!("{} spans", spans.len()))
        }
    });
    let mut children: Vec<HashMap<String, String>> =
        spans.iter().filter(|s| s.kind == 3).map(attrs).collect();
    children.sort_by(|a, b| a["lasso.provider"].cmp(&b["lasso.provider"]));
    let summary: Vec<(&str, &str, &str)> = children
        .iter()
        .map(|a| {
            (
                a["lasso.provider"].as_str(),
                a["lasso.attempt"].as_str(),
                a["lasso.outcome"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("p1", "first", "cancelled"), ("p2", "hedge", "ok")],
        "{spans:#?}"
    );
}

#[test]
fn a_collector_that_is_down_costs_dropped_spans_not_requests() {
    // A port with nothing listening: exports fail, requests are served, the loss is counted.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let collector = Collector {
        addr,
        received: Arc::default(),
    };
    let p1 = MockProvider::start("p1");
    let lasso = traced_lasso(&collector, &[&p1]);
    for i in 0..20 {
        let tp = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
        let v = balance(&lasso, i, Some(&tp));
        assert_eq!(served_by(&v).as_deref(), Some("p1"), "{v}");
    }
    eventually(Duration::from_secs(10), "failed exports counted", || {
        let m = get(lasso.addr(), "/metrics").text();
        let value = |name: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if value("lasso_trace_export_failures_total") >= 1
            && value("lasso_trace_spans_dropped_total") >= 2
            && value("lasso_trace_spans_exported_total") == 0
        {
            Ok(())
        } else {
            Err(m
                .lines()
                .filter(|l| l.starts_with("lasso_trace"))
                .collect::<Vec<_>>()
                .join("; "))
        }
    });
}

fn metric_value(lasso: &Lasso, name: &str) -> u64 {
    get(lasso.addr(), "/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_collector_fills_the_bounded_queue_and_spans_are_dropped_not_waited_for() {
    // A collector that accepts and never answers: the exporter thread waits (up to export_timeout_ms), the queue of
    // two traces fills, and further traces are dropped at once while requests keep being served.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = Collector {
        addr: listener.local_addr().unwrap(),
        received: Arc::default(),
    };
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let p1 = MockProvider::start("p1");
    let lasso = traced_lasso_full(
        &collector,
        &[&p1],
        "hedge: { enabled: false }",
        "    queue_traces: 2\n    export_timeout_ms: 60000\n",
    );
    let tp = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let mut sent = 0u64;
    eventually(
        Duration::from_secs(20),
        "spans dropped on a full queue",
        || {
            for _ in 0..10 {
                sent += 1;
                let started = std::time::Instant::now();
                let v = balance(&lasso, sent, Some(&tp));
                assert_eq!(served_by(&v).as_deref(), Some("p1"), "{v}");
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "a request waited for the exporter: {:?}",
                    started.elapsed()
                );
            }
            let dropped = metric_value(&lasso, "lasso_trace_spans_dropped_total");
            if dropped >= 10 {
                Ok(())
            } else {
                Err(format!("{dropped} spans dropped after {sent} requests"))
            }
        },
    );
    assert_eq!(metric_value(&lasso, "lasso_trace_spans_exported_total"), 0);
    assert_eq!(
        metric_value(&lasso, "lasso_trace_export_failures_total"),
        0,
        "nothing failed yet: the drops are the queue's"
    );
}

#[test]
fn with_tracing_off_nothing_is_passed_to_providers() {
    let p1 = MockProvider::start("p1");
    let lasso = Lasso::start(&single_chain(&[&p1]).yaml());
    let v = balance(&lasso, 1, Some(&format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")));
    assert_eq!(served_by(&v).as_deref(), Some("p1"), "{v}");
    assert_eq!(traceparents(&p1), vec![None]);
}

#[test]
fn a_client_batch_is_one_request_span_with_a_sub_batch_attempt() {
    let collector = Collector::start();
    let p1 = MockProvider::start("p1");
    let lasso = traced_lasso(&collector, &[&p1]);
    let body = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": ["0x01", "0x10"]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": ["0x02", "0x10"]},
    ])
    .to_string();
    let tp = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let headers = [
        ("Content-Type", "application/json"),
        ("traceparent", tp.as_str()),
    ];
    let r = request(
        lasso.addr(),
        "POST",
        "/rpc/ethereum",
        &headers,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let spans = eventually(Duration::from_secs(10), "two spans exported", || {
        let spans = collector.spans();
        if spans.len() >= 2 {
            Ok(spans)
        } else {
            Err(format!("{} spans", spans.len()))
        }
    });
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    let child = spans.iter().find(|s| s.kind == 3).expect("attempt span");
    assert_eq!(server.name, "batch(2)");
    assert_eq!(child.parent_span_id, server.span_id);
    let a = attrs(child);
    assert_eq!(
        (
            a["lasso.provider"].as_str(),
            a["lasso.outcome"].as_str(),
            a["lasso.batch_calls"].as_str()
        ),
        ("p1", "ok", "2"),
        "{a:?}"
    );
    assert_eq!(
        traceparents(&p1),
        vec![Some(format!("00-{TRACE_ID}-{}-01", hex(&child.span_id)))]
    );
}
