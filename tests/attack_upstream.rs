//! Upstream memory bounds under attack (hardening issue, item 10): a provider's announced `Content-Length` is never
//! an allocation, and the answer bytes being received have a process-wide budget (`upstream.max_buffered_response_bytes`,
//! split across workers). Past it the request gets JSON-RPC -32005 (HTTP 503), never the process; other clients
//! keep being served with their own answers.

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::http::{BufStream, parse_request_head};
use support::*;

/// A `/proc/<pid>/status` figure in bytes (`VmRSS`, `VmHWM` peak resident, `VmSize` virtual).
fn proc_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
        * 1024
}

const MIB: u64 = 1024 * 1024;

/// How the hostile provider answers one `eth_getLogs` call (upstream id `id`) on `stream`.
type Attack = dyn Fn(&Value, &mut TcpStream) + Send + Sync;

/// A provider answering probes and ordinary calls like a node of chain 1, and `eth_getLogs` with `attack`.
fn hostile_provider(attack: Arc<Attack>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let attack = attack.clone();
            std::thread::spawn(move || serve(stream, &*attack));
        }
    });
    url
}

fn serve(stream: TcpStream, attack: &Attack) {
    let mut writer = stream.try_clone().unwrap();
    let mut io = BufStream::new(stream);
    loop {
        let Ok(Some(raw)) = io.read_head(64 * 1024) else {
            return;
        };
        let head = parse_request_head(&raw).unwrap();
        let len = head.content_length().unwrap().unwrap_or(0);
        let Ok(body) = io.read_exact_vec(len) else {
            return;
        };
        let req: Value = serde_json::from_slice(&body).unwrap();
        if req["method"] == "eth_getLogs" {
            attack(&req, &mut writer);
            return;
        }
        let result = match req["method"].as_str() {
            Some("eth_chainId") => json!("0x1"),
            Some("eth_blockNumber") => json!("0x10"),
            _ => json!({"method": req["method"], "params": req["params"]}),
        };
        let answer = json!({"jsonrpc":"2.0","id":req["id"],"result":result}).to_string();
        let out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn config(url: &str, upstream: &[(&str, &str)]) -> String {
    let mut cfg = Config::new()
        .upstream("coalesce", "false")
        .routing("hedge", "{ enabled: false }")
        .chain(
            Chain::new("ethereum", 1)
                .strategy("priority")
                .provider(Provider::new("hostile", url)),
        );
    for (k, v) in upstream {
        cfg = cfg.upstream(k, v);
    }
    cfg.yaml()
}

/// Another client, meanwhile: its own small call answered with its own id.
fn other_client_is_served(lasso: &Lasso, id: &str) {
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(id), "eth_blockNumber", json!([])),
    );
    let v = r.json();
    assert_eq!(
        (r.status, &v["id"], &v["result"]),
        (200, &json!(id), &json!("0x10")),
        "{}",
        r.describe()
    );
}

/// Concurrent `eth_getLogs` calls from `n` clients, each on its own thread; returns (status, body) per client.
/// `distinct`: each asks from another block, so none shares another's upstream call (in-flight multiplexing).
fn flood(
    lasso: &Lasso,
    n: usize,
    distinct: bool,
) -> Vec<std::thread::JoinHandle<(u16, Value, String)>> {
    (0..n)
        .map(|i| {
            let addr = lasso.addr();
            std::thread::spawn(move || {
                let id = format!("flood-{i}");
                let mut c = Conn::connect(addr);
                c.set_read_timeout(Duration::from_secs(60));
                let from = if distinct { i + 1 } else { 1 };
                let r = c.post(
                    "/rpc/ethereum",
                    &rpc(
                        json!(id),
                        "eth_getLogs",
                        json!([{"fromBlock": format!("0x{from:x}")}]),
                    ),
                );
                (r.status, r.try_json().unwrap_or(Value::Null), id)
            })
        })
        .collect()
}

const LIARS: usize = 48;
/// What a provider announces and never sends.
const ANNOUNCED: usize = 200_000_000;

#[test]
fn an_announced_content_length_is_not_an_allocation() {
    let hanging = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let (h, r) = (hanging.clone(), release.clone());
    let url = hostile_provider(Arc::new(move |req: &Value, stream: &mut TcpStream| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {ANNOUNCED}\r\n\r\n"
        );
        let start = format!(r#"{{"jsonrpc":"2.0","id":{},"result":["#, req["id"]);
        let _ = stream.write_all(format!("{head}{start}").as_bytes());
        h.fetch_add(1, Ordering::SeqCst);
        while !r.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Then the connection closes, far short of what was announced.
    }));
    let lasso = Lasso::builder(&config(&url, &[])).workers(1).start();
    other_client_is_served(&lasso, "warm-up");
    let (rss, size) = (
        proc_bytes(lasso.pid(), "VmRSS"),
        proc_bytes(lasso.pid(), "VmSize"),
    );
    let clients = flood(&lasso, LIARS, true);
    eventually(
        Duration::from_secs(20),
        "every hostile answer started",
        || match hanging.load(Ordering::SeqCst) {
            n if n == LIARS => Ok(()),
            n => Err(format!("{n} of {LIARS}")),
        },
    );
    let rss_growth = proc_bytes(lasso.pid(), "VmRSS").saturating_sub(rss);
    let size_growth = proc_bytes(lasso.pid(), "VmSize").saturating_sub(size);
    eprintln!(
        "{LIARS} answers announcing {ANNOUNCED} bytes: RSS +{} KiB, virtual size +{} KiB",
        rss_growth / 1024,
        size_growth / 1024
    );
    other_client_is_served(&lasso, "during");
    release.store(true, Ordering::SeqCst);
    for c in clients {
        let (status, v, id) = c.join().unwrap();
        assert_eq!(
            (status, error_code(&v), &v["id"]),
            (502, Some(-32010), &json!(id)),
            "a truncated answer is a provider failure: {v}"
        );
    }
    other_client_is_served(&lasso, "after");
    // Unbounded, each announced length was reserved: 48 x 200 MB of address space.
    assert!(
        size_growth < 512 * MIB,
        "virtual size grew {} MiB with {LIARS} answers announcing {ANNOUNCED} bytes",
        size_growth / MIB
    );
    assert!(
        rss_growth < 32 * MIB,
        "RSS grew {} MiB with {LIARS} answers announcing {ANNOUNCED} bytes",
        rss_growth / MIB
    );
}

const FLOOD: usize = 40;
/// Each hostile answer: a valid JSON-RPC reply of this many bytes, sent in eighths.
const ANSWER: usize = 8 * 1024 * 1024;
const BUDGET: u64 = 64 * MIB;
/// Peak RSS growth allowed while `FLOOD` answers of `ANSWER` bytes arrive at once: the budget, answers that fit it on
/// their way to clients, allocator slack (about 500 MiB without a budget; 113-151 MiB measured with it).
const MAX_PEAK_GROWTH: u64 = 3 * BUDGET;

#[test]
fn many_large_answers_at_once_stay_within_the_budget() {
    let url = hostile_provider(Arc::new(|req: &Value, stream: &mut TcpStream| {
        // The id after the result: an answer that cannot be streamed (its id is known only at the end), buffered
        // whole, which is what the budget bounds (streamed answers hold two pieces each: tests/streaming.rs).
        let start = r#"{"jsonrpc":"2.0","result":""#.to_string();
        let end = format!(r#"","id":{}}}"#, req["id"]);
        let filler = ANSWER - start.len() - end.len();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {ANSWER}\r\nConnection: close\r\n\r\n{start}"
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let piece = vec![b'a'; filler / 8];
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(40));
            if stream.write_all(&piece).is_err() {
                return;
            }
        }
        let rest = filler - 8 * piece.len();
        let _ = stream.write_all(format!("{}{end}", "a".repeat(rest)).as_bytes());
    }));
    let budget = BUDGET.to_string();
    let lasso = Lasso::builder(&config(
        &url,
        &[("max_buffered_response_bytes", budget.as_str())],
    ))
    .workers(1)
    .start();
    other_client_is_served(&lasso, "warm-up");
    let peak_before = proc_bytes(lasso.pid(), "VmHWM");
    // Identical calls: in-flight multiplexing hands the answer to as many as fit the budget, the rest ask alone.
    let clients = flood(&lasso, FLOOD, false);
    // Small calls of another client keep being answered while the large ones arrive.
    let mut i = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        other_client_is_served(&lasso, &format!("during-{i}"));
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut answered, mut refused) = (0, 0);
    for c in clients {
        let (status, v, id) = c.join().unwrap();
        assert_eq!(
            v["id"],
            json!(id),
            "each client gets its own answer: {status}"
        );
        match (status, error_code(&v)) {
            (200, None) => {
                let result = v["result"].as_str().unwrap_or("");
                assert!(
                    result.len() > ANSWER - 100 && result.bytes().all(|b| b == b'a'),
                    "{id}: the whole answer ({} bytes)",
                    result.len()
                );
                answered += 1;
            }
            (503, Some(-32005)) => refused += 1,
            other => panic!("{id}: unexpected {other:?}: {v}"),
        }
    }
    let peak_growth = proc_bytes(lasso.pid(), "VmHWM").saturating_sub(peak_before);
    eprintln!(
        "peak RSS growth {} MiB; {answered} answered, {refused} refused",
        peak_growth / MIB
    );
    assert!(
        peak_growth < MAX_PEAK_GROWTH,
        "peak RSS grew {} MiB (bound {} MiB; {answered} answered, {refused} refused)",
        peak_growth / MIB,
        MAX_PEAK_GROWTH / MIB
    );
    assert!(answered > 0, "some large answers fit the budget");
    assert!(
        refused > 0,
        "{FLOOD} x {ANSWER} bytes at once exceed the budget"
    );
    other_client_is_served(&lasso, "after");
}
