//! WebSocket fan-out client for `loadtest/scripts/ws_fanout.sh`.
//!
//! One thread (tokio current-thread runtime; the script pins it to a CPU), N WebSocket connections to Lasso:
//!
//! * `--mode fanout`: each connection sends `eth_subscribe ["newHeads"]`; once all are subscribed the client waits
//!   `--warmup-ms`, then measures for `--seconds`, then keeps reading `--grace-ms` more so that heads published inside
//!   the window but still in flight are counted. An optional `--reference ws://mock` connection subscribes straight to
//!   the upstream mock: its receive time of each head is the reference for the delivery delay through Lasso (both
//!   sockets are read by this one thread, same clock). Reports messages/s delivered across clients, per-client loss
//!   (every client must receive every head of the window, in order, once), delay p50/p99/max and the fan-out spread
//!   (last client minus first client, per head).
//! * `--mode idle`: connections only complete the handshake (no subscription); the client prints `READY connected=N`
//!   and holds them open for `--seconds` (answering pings) so the caller can read the server's RSS.
//!
//! With `--watch-pid PID` the window's CPU time (utime+stime) and VmRSS of that process are sampled from /proc.
//! The last line printed is `RESULT key=value ...` for the script.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, LocalSet, spawn_local};

const SUBSCRIBE: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
/// RFC 6455's sample nonce and its accept value.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Fanout,
    Idle,
}

#[derive(Debug)]
struct Args {
    url: String,
    reference: Option<String>,
    clients: usize,
    mode: Mode,
    seconds: f64,
    warmup_ms: u64,
    grace_ms: u64,
    concurrency: usize,
    setup_timeout_s: u64,
    watch_pid: Option<u32>,
    clk_tck: u64,
}

const USAGE: &str = "usage: ws-fanout-client --url ws://HOST:PORT/ws/rpc/CHAIN --clients N [--mode fanout|idle] \
[--seconds S] [--reference ws://MOCK:PORT/] [--warmup-ms MS] [--grace-ms MS] [--concurrency C] \
[--setup-timeout-s S] [--watch-pid PID] [--clk-tck HZ]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        reference: None,
        clients: 0,
        mode: Mode::Fanout,
        seconds: 10.0,
        warmup_ms: 1000,
        grace_ms: 2000,
        concurrency: 256,
        setup_timeout_s: 120,
        watch_pid: None,
        clk_tck: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            return Err(USAGE.into());
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{k} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--url" => a.url = v,
            "--reference" => a.reference = Some(v),
            "--clients" => a.clients = num(&v)? as usize,
            "--mode" => {
                a.mode = match v.as_str() {
                    "fanout" => Mode::Fanout,
                    "idle" => Mode::Idle,
                    _ => return Err(format!("--mode {v}: want fanout or idle")),
                }
            }
            "--seconds" => a.seconds = v.parse().map_err(|e| format!("--seconds {v}: {e}"))?,
            "--warmup-ms" => a.warmup_ms = num(&v)?,
            "--grace-ms" => a.grace_ms = num(&v)?,
            "--concurrency" => a.concurrency = num(&v)?.max(1) as usize,
            "--setup-timeout-s" => a.setup_timeout_s = num(&v)?,
            "--watch-pid" => a.watch_pid = Some(num(&v)? as u32),
            "--clk-tck" => a.clk_tck = num(&v)?.max(1),
            _ => return Err(format!("unknown option {k}\n{USAGE}")),
        }
    }
    if a.url.is_empty() || a.clients == 0 {
        return Err(USAGE.into());
    }
    Ok(a)
}

/// `ws://host:port/path` split into a connect address, a Host header and a request path.
struct Target {
    addr: String,
    host: String,
    path: String,
}

fn parse_ws_url(u: &str) -> Result<Target, String> {
    let rest = u
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{u}: only ws:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !host.contains(':') {
        return Err(format!("{u}: give an explicit port"));
    }
    Ok(Target {
        addr: host.to_string(),
        host: host.to_string(),
        path: path.to_string(),
    })
}

/// A masked client frame (FIN set).
fn encode_masked(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x17, 0xc3, 0x81];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The frame at the start of `buf`: (fin, opcode, payload start, payload end), or None if incomplete.
fn decode(buf: &[u8]) -> Result<Option<(bool, u8, usize, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let op = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        return Err("server sent a masked frame".into());
    }
    let (len, at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some((fin, op, at, at + len)))
}

async fn handshake(t: &Target) -> io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(&t.addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        t.path, t.host
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        if let Some(end) = memmem::find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 101") {
                let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
                return Err(io::Error::other(format!(
                    "upgrade refused: {} {}",
                    head.lines().next().unwrap_or(""),
                    body.trim()
                )));
            }
            if !head.contains(WS_ACCEPT) {
                return Err(io::Error::other(format!(
                    "bad Sec-WebSocket-Accept in {head:?}"
                )));
            }
            buf.drain(..end + 4);
            return Ok((s, buf));
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("upgrade response head too large"));
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::other(format!(
                "connection closed during the upgrade (got {:?})",
                String::from_utf8_lossy(&buf)
            )));
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Outcome {
    /// (block number, receive time in µs since start) per newHeads notification, in arrival order.
    events: Vec<(u64, u32)>,
    subscribed: bool,
    /// Notifications that arrived before the eth_subscribe answer.
    early: u32,
    error: Option<String>,
    closed: Option<String>,
}

/// Shared by all connections (single thread).
struct Shared {
    epoch: Instant,
    ready: Cell<usize>,
    failed: Cell<usize>,
}

impl Shared {
    fn now_us(&self) -> u32 {
        self.epoch.elapsed().as_micros() as u32
    }
}

fn hex_number(payload: &[u8], finder: &memmem::Finder) -> Option<u64> {
    let at = finder.find(payload)? + br#""number":"0x"#.len();
    let mut n: u64 = 0;
    let mut digits = 0;
    for &c in &payload[at..] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        n = n.checked_mul(16)? + d as u64;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// Handles one text message; true when this was the (successful) eth_subscribe answer.
fn on_text(
    payload: &[u8],
    out: &mut Outcome,
    shared: &Shared,
    finders: &Finders,
) -> Result<bool, String> {
    if finders.subscription.find(payload).is_some() {
        let n = hex_number(payload, &finders.number).ok_or_else(|| {
            format!(
                "notification without a block number: {}",
                String::from_utf8_lossy(payload)
            )
        })?;
        if !out.subscribed {
            out.early += 1;
        }
        out.events.push((n, shared.now_us()));
        return Ok(false);
    }
    if !out.subscribed && finders.id1.find(payload).is_some() {
        if finders.result.find(payload).is_some() {
            return Ok(true);
        }
        return Err(format!(
            "eth_subscribe failed: {}",
            String::from_utf8_lossy(payload)
        ));
    }
    Ok(false)
}

struct Finders {
    subscription: memmem::Finder<'static>,
    number: memmem::Finder<'static>,
    id1: memmem::Finder<'static>,
    result: memmem::Finder<'static>,
}

impl Finders {
    fn new() -> Self {
        Finders {
            subscription: memmem::Finder::new(br#""eth_subscription""#),
            number: memmem::Finder::new(br#""number":"0x"#),
            id1: memmem::Finder::new(br#""id":1"#),
            result: memmem::Finder::new(br#""result":"0x"#),
        }
    }
}

async fn run_conn(
    target: Rc<Target>,
    subscribe: bool,
    sem: Rc<Semaphore>,
    shared: Rc<Shared>,
    finders: Rc<Finders>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut permit = Some(sem.acquire().await.expect("semaphore open"));
    let fail = |out: &mut Outcome, e: String| {
        out.error = Some(e);
        shared.failed.set(shared.failed.get() + 1);
    };
    let (mut s, mut buf) = match handshake(&target).await {
        Ok(x) => x,
        Err(e) => {
            fail(&mut out, format!("connect/upgrade: {e}"));
            return out;
        }
    };
    if subscribe {
        if let Err(e) = s.write_all(&encode_masked(OP_TEXT, SUBSCRIBE)).await {
            fail(&mut out, format!("send eth_subscribe: {e}"));
            return out;
        }
    } else {
        shared.ready.set(shared.ready.get() + 1);
        permit = None;
    }
    let mut fragments: Vec<u8> = Vec::new();
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    'conn: loop {
        let mut used = 0;
        loop {
            let (fin, op, a, b) = match decode(&buf[used..]) {
                Ok(Some((fin, op, a, b))) => (fin, op, used + a, used + b),
                Ok(None) => break,
                Err(e) => {
                    fail(&mut out, e);
                    break 'conn;
                }
            };
            used = b;
            let text = match op {
                OP_TEXT | OP_BINARY if fin && fragments.is_empty() => Some(&buf[a..b]),
                OP_TEXT | OP_BINARY | OP_CONT => {
                    fragments.extend_from_slice(&buf[a..b]);
                    if fin { Some(&fragments[..]) } else { None }
                }
                OP_PING => {
                    pongs.push(encode_masked(OP_PONG, &buf[a..b]));
                    None
                }
                OP_PONG => None,
                OP_CLOSE => {
                    let p = &buf[a..b];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    out.closed = Some(format!(
                        "close {code} {}",
                        String::from_utf8_lossy(p.get(2..).unwrap_or(&[]))
                    ));
                    break 'conn;
                }
                other => {
                    fail(&mut out, format!("unexpected opcode {other}"));
                    break 'conn;
                }
            };
            if let Some(text) = text {
                match on_text(text, &mut out, &shared, &finders) {
                    Ok(true) => {
                        out.subscribed = true;
                        shared.ready.set(shared.ready.get() + 1);
                        permit = None;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        fail(&mut out, e);
                        break 'conn;
                    }
                }
                if fin && op == OP_CONT {
                    fragments.clear();
                }
            }
        }
        buf.drain(..used);
        for p in pongs.drain(..) {
            if let Err(e) = s.write_all(&p).await {
                fail(&mut out, format!("send pong: {e}"));
                break 'conn;
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => {
                    out.closed.get_or_insert_with(|| "EOF".into());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    out.closed.get_or_insert_with(|| format!("read: {e}"));
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(permit);
    if out.error.is_none() && !out.subscribed && subscribe {
        // Never got its answer (closed or stopped first): counts as failed setup.
        let why = out
            .closed
            .clone()
            .unwrap_or_else(|| "no eth_subscribe answer".into());
        fail(&mut out, format!("not subscribed: {why}"));
    }
    out
}

/// (utime + stime) ticks of a process, from /proc/PID/stat.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn vmrss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Per-CPU (busy, total) jiffies from /proc/stat (busy = everything but idle and iowait).
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// `0:93,1:41`: busy % of each CPU between two samples (all processes, not just ours).
fn cpu_busy(a: &[(u64, u64)], b: &[(u64, u64)]) -> String {
    if a.is_empty() || a.len() != b.len() {
        return "NA".into();
    }
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| {
            let total = y.1.saturating_sub(x.1).max(1);
            format!(
                "{i}:{:.0}",
                y.0.saturating_sub(x.0) as f64 * 100.0 / total as f64
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = LocalSet::new().block_on(&rt, run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let target = match parse_ws_url(&args.url) {
        Ok(t) => Rc::new(t),
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let shared = Rc::new(Shared {
        epoch: Instant::now(),
        ready: Cell::new(0),
        failed: Cell::new(0),
    });
    let finders = Rc::new(Finders::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let subscribe = args.mode == Mode::Fanout;

    // The reference subscriber, straight to the upstream mock.
    let reference: Option<JoinHandle<Outcome>> = match (&args.reference, subscribe) {
        (Some(r), true) => {
            let t = match parse_ws_url(r) {
                Ok(t) => Rc::new(t),
                Err(e) => {
                    eprintln!("--reference: {e}");
                    return 2;
                }
            };
            let ref_shared = Rc::new(Shared {
                epoch: shared.epoch,
                ready: Cell::new(0),
                failed: Cell::new(0),
            });
            let h = spawn_local(run_conn(
                t,
                true,
                Rc::new(Semaphore::new(1)),
                ref_shared.clone(),
                finders.clone(),
                stop_rx.clone(),
            ));
            let deadline = Instant::now() + Duration::from_secs(10);
            while ref_shared.ready.get() + ref_shared.failed.get() == 0 && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if ref_shared.ready.get() == 0 {
                eprintln!("reference subscription to {r} failed");
                let _ = stop_tx.send(true);
                let o = h.await.unwrap_or_default();
                eprintln!("reference: {:?} {:?}", o.error, o.closed);
                return 1;
            }
            Some(h)
        }
        _ => None,
    };

    // N connections, at most `concurrency` of them in their handshake/subscribe phase at once.
    let sem = Rc::new(Semaphore::new(args.concurrency));
    let setup_start = Instant::now();
    let jiffies_setup = cpu_jiffies();
    let handles: Vec<JoinHandle<Outcome>> = (0..args.clients)
        .map(|_| {
            spawn_local(run_conn(
                target.clone(),
                subscribe,
                sem.clone(),
                shared.clone(),
                finders.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let setup_deadline = setup_start + Duration::from_secs(args.setup_timeout_s);
    while shared.ready.get() + shared.failed.get() < args.clients && Instant::now() < setup_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let setup_busy = cpu_busy(&jiffies_setup, &cpu_jiffies());
    let ready = shared.ready.get();
    println!(
        "setup: {ready}/{} {} in {setup_s:.2} s ({} failed so far); CPU busy % (all processes) {setup_busy}",
        args.clients,
        if subscribe { "subscribed" } else { "connected" },
        shared.failed.get()
    );
    let _ = io::stdout().flush();

    let watch = args.watch_pid.map(|p| p.to_string());
    let me = std::process::id().to_string();
    let (mut t0, mut t1) = (Instant::now(), Instant::now());
    let (mut cpu0, mut own0) = (None, None);
    let mut window_busy = String::from("NA");
    let watched_rss_kb;
    match args.mode {
        Mode::Idle => {
            println!("READY connected={ready}");
            let _ = io::stdout().flush();
            tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
            watched_rss_kb = watch.as_deref().and_then(vmrss_kb);
        }
        Mode::Fanout => {
            tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
            t0 = Instant::now();
            cpu0 = watch.as_deref().and_then(cpu_ticks);
            own0 = cpu_ticks(&me);
            let jiffies0 = cpu_jiffies();
            tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
            t1 = Instant::now();
            watched_rss_kb = watch.as_deref().and_then(vmrss_kb);
            let cpu1 = watch.as_deref().and_then(cpu_ticks);
            let own1 = cpu_ticks(&me);
            window_busy = cpu_busy(&jiffies0, &cpu_jiffies());
            cpu0 = cpu0.zip(cpu1).map(|(a, b)| b - a);
            own0 = own0.zip(own1).map(|(a, b)| b - a);
            tokio::time::sleep(Duration::from_millis(args.grace_ms)).await;
        }
    }
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        outcomes.push(h.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("task: {e}")),
            ..Default::default()
        }));
    }
    let reference = match reference {
        Some(h) => Some(h.await.unwrap_or_default()),
        None => None,
    };

    // Errors, grouped.
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        if let Some(e) = &o.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    for (e, n) in errors.iter().take(8) {
        println!("error x{n}: {e}");
    }
    let mut closes: BTreeMap<String, usize> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.error.is_none()) {
        if let Some(c) = &o.closed {
            *closes.entry(c.clone()).or_default() += 1;
        }
    }
    for (c, n) in closes.iter().take(8) {
        println!("closed by server x{n}: {c}");
    }

    if args.mode == Mode::Idle {
        let closed: usize = closes.values().sum();
        println!(
            "RESULT mode=idle clients={} connected={ready} failed={failed} closed_early={closed} setup_s={setup_s:.2} \
             watched_rss_kb={} setup_cpu_busy={setup_busy}",
            args.clients,
            watched_rss_kb.map_or("NA".into(), |v| v.to_string())
        );
        return if failed == 0 && closed == 0 { 0 } else { 1 };
    }

    // Connections the server closed before the end (reason of the most frequent, spaces replaced for the RESULT line).
    let closed_by_server: usize = closes.values().sum();
    let close_reason = closes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map_or("-".to_string(), |(c, _)| c.trim().replace(' ', "_"));

    // ---- fan-out analysis ---------------------------------------------------------------------------------------------
    let us = |t: Instant| t.duration_since(shared.epoch).as_micros() as u32;
    let (t0us, t1us) = (us(t0), us(t1));
    let window_s = (t1 - t0).as_secs_f64();
    let ok: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.error.is_none() && o.subscribed)
        .collect();

    // Reference receive time per head: the direct subscriber if any, else the first client to get it.
    let mut ref_time: HashMap<u64, u32> = HashMap::new();
    let reference_kind = match &reference {
        Some(r) => {
            for &(b, t) in &r.events {
                ref_time.entry(b).or_insert(t);
            }
            "upstream"
        }
        None => {
            for o in &ok {
                for &(b, t) in &o.events {
                    ref_time
                        .entry(b)
                        .and_modify(|x| *x = (*x).min(t))
                        .or_insert(t);
                }
            }
            "first-client"
        }
    };
    let mut heads: Vec<u64> = ref_time
        .iter()
        .filter(|(_, t)| (t0us..t1us).contains(*t))
        .map(|(b, _)| *b)
        .collect();
    heads.sort_unstable();
    let ref_gaps = heads.windows(2).filter(|w| w[1] != w[0] + 1).count();
    let (first, last) = (
        heads.first().copied().unwrap_or(1),
        heads.last().copied().unwrap_or(0),
    );

    // How far behind each client is at the end of the window: the newest head the reference had minus the newest
    // head the client had, both at t1 (0 = keeping up; grows without bound when the proxy cannot keep up).
    let ref_head_at_t1 = ref_time
        .iter()
        .filter(|(_, t)| **t <= t1us)
        .map(|(b, _)| *b)
        .max()
        .unwrap_or(0);
    let mut lags: Vec<u32> = Vec::with_capacity(ok.len());
    // Subscribed clients that had received no head at all by the window's end.
    let mut silent = 0usize;
    let mut delivered_in_window: u64 = 0;
    let mut clients_with_loss = 0usize;
    let mut missing_total: u64 = 0;
    let mut order_violations: u64 = 0;
    let mut clients_out_of_order = 0usize;
    let mut early: u64 = 0;
    let mut delays: Vec<u32> = Vec::new();
    let mut negative_delays: u64 = 0;
    let mut spread: HashMap<u64, (u32, u32)> = HashMap::new();
    for o in &ok {
        early += o.early as u64;
        let newest = o
            .events
            .iter()
            .filter(|(_, t)| *t <= t1us)
            .map(|(b, _)| *b)
            .max();
        match newest {
            Some(newest) => {
                lags.push(ref_head_at_t1.saturating_sub(newest).min(u32::MAX as u64) as u32)
            }
            None => silent += 1,
        }
        let mut violations = 0;
        for w in o.events.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                violations += 1;
            }
        }
        if violations > 0 {
            clients_out_of_order += 1;
            order_violations += violations;
        }
        let got: Vec<u64> = o
            .events
            .iter()
            .filter(|(b, _)| (first..=last).contains(b))
            .map(|(b, _)| *b)
            .collect();
        if got != heads {
            clients_with_loss += 1;
            let mut distinct = got.clone();
            distinct.sort_unstable();
            distinct.dedup();
            missing_total += (heads.len()
                - distinct
                    .iter()
                    .filter(|b| heads.binary_search(b).is_ok())
                    .count()) as u64;
        }
        for &(b, t) in &o.events {
            if (t0us..t1us).contains(&t) {
                delivered_in_window += 1;
            }
            if (first..=last).contains(&b) {
                let r = ref_time[&b];
                if t >= r {
                    delays.push(t - r);
                } else {
                    negative_delays += 1;
                    delays.push(0);
                }
                let e = spread.entry(b).or_insert((t, t));
                e.0 = e.0.min(t);
                e.1 = e.1.max(t);
            }
        }
    }
    delays.sort_unstable();
    lags.sort_unstable();
    let lag_p50 = lags.get(lags.len() / 2).copied().unwrap_or(0);
    let lag_max = lags.last().copied().unwrap_or(0);
    let mut spreads: Vec<u32> = spread.values().map(|(a, b)| b - a).collect();
    spreads.sort_unstable();
    let rate = delivered_in_window as f64 / window_s;
    let expected = ok.len() as f64 * heads.len() as f64 / window_s;
    let pct = |ticks: Option<u64>| {
        ticks.map_or("NA".to_string(), |t| {
            format!("{:.0}", t as f64 / args.clk_tck as f64 / window_s * 100.0)
        })
    };
    println!(
        "window {window_s:.2} s: {} heads ({first}..{last}, reference {reference_kind}, gaps {ref_gaps}), \
         {delivered_in_window} messages delivered to {} clients = {rate:.0} msg/s (expected {expected:.0}); \
         CPU busy % (all processes) {window_busy}",
        heads.len(),
        ok.len()
    );
    println!(
        "loss: {clients_with_loss} clients missed {missing_total} heads; order: {clients_out_of_order} clients with \
         {order_violations} non-consecutive steps; {early} notifications before the subscribe answer; \
         at the window's end clients were behind the upstream head by p50 {lag_p50} / max {lag_max} heads \
         ({silent} clients had no head at all)"
    );
    println!(
        "delay vs {reference_kind}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({negative_delays} negative clamped to 0); \
         fan-out spread per head: p50 {:.2} ms, max {:.2} ms",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0),
        percentile(&spreads, 0.5),
        percentile(&spreads, 1.0)
    );
    println!(
        "RESULT mode=fanout clients={} subscribed={} failed={failed} setup_s={setup_s:.2} window_s={window_s:.2} \
         heads={} ref_gaps={ref_gaps} delivered={delivered_in_window} rate={rate:.0} expected_rate={expected:.0} \
         clients_with_loss={clients_with_loss} missing={missing_total} clients_out_of_order={clients_out_of_order} \
         delay_ref={reference_kind} delay_p50_ms={:.2} delay_p99_ms={:.2} delay_max_ms={:.2} spread_p50_ms={:.2} \
         spread_max_ms={:.2} watched_cpu_pct={} client_cpu_pct={} watched_rss_kb={} setup_cpu_busy={setup_busy} \
         window_cpu_busy={window_busy} lag_end_p50={lag_p50} lag_end_max={lag_max} silent={silent} \
         closed_by_server={closed_by_server} close_reason={close_reason}",
        args.clients,
        ok.len(),
        heads.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0),
        percentile(&spreads, 0.5),
        percentile(&spreads, 1.0),
        pct(cpu0),
        pct(own0),
        watched_rss_kb.map_or("NA".into(), |v| v.to_string())
    );
    let clean = failed == 0
        && clients_with_loss == 0
        && clients_out_of_order == 0
        && silent == 0
        && closed_by_server == 0
        && !heads.is_empty();
    if clean { 0 } else { 1 }
}
