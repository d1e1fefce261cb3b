//! The load engine. Modes:
//! - **closed** loop: every connection sends its next request as soon as the previous answer arrived (fixed
//!   concurrency = connections); measures the maximum throughput.
//! - **open** loop: a fixed request rate. Connection `g` of `K` owns the send times `start + (g + j*K) / rate`, so the
//!   total schedule is exact whatever each connection's luck. When a slot comes while the connection still waits for
//!   the previous answer, the request's latency is measured from its *intended* send time, so a stalled server is
//!   charged for the requests that queued behind it (coordinated omission corrected, as in wrk2); when the connection
//!   was idle, latency counts from the actual send, so the 1 ms timer wheel's wake-up slack is not charged to it.
//! - **subscribe**: WebSocket connections each subscribe to `newHeads` and count notifications: their order, gaps and
//!   delivery latency (from the mock's `mockTimeNs` block field).
//! - [`hold_idle`]: open N keep-alive connections, make one request on each, and hold them until released.
//!
//! Each load thread runs its own monoio runtime (optionally pinned); requests over `http://` URLs use HTTP/1.1
//! keep-alive, `ws://` URLs send the same JSON-RPC bodies as WebSocket text frames. Results: HDR histograms merged
//! across threads, per-second series, error breakdowns.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::{HttpConn, Target, WsConn};
use crate::hist::{Bucket, LatencyHist, Summary, fmt_ms};
use crate::mix::{PoolEntry, render_call};

/// How load is offered.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Closed,
    Open,
    Subscribe,
}

/// What to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSpec {
    pub label: String,
    pub url: String,
    pub mode: Mode,
    /// Requests per second in total (open loop).
    pub rate: f64,
    pub duration: Duration,
    /// Run this long before recording.
    pub warmup: Duration,
    pub connections: usize,
    pub threads: usize,
    /// CPUs for the load threads (thread i on cpus[i % len]); empty = no pinning.
    pub cpus: Vec<usize>,
    /// Calls per HTTP request (1 = a single call, N = a JSON array of N).
    pub batch: usize,
    pub timeout: Duration,
    /// Stop after this many requests in total (0 = no limit).
    pub max_requests: u64,
    /// Print a live progress line on stderr (only when it is a terminal, unless forced).
    pub progress: bool,
    pub force_progress: bool,
    /// When the schedule starts (default: shortly after `run` is called, once connections had time to open).
    #[serde(skip)]
    pub start_at: Option<Instant>,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            label: String::new(),
            url: String::new(),
            mode: Mode::Closed,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            connections: 64,
            threads: 1,
            cpus: Vec::new(),
            batch: 1,
            timeout: Duration::from_secs(10),
            max_requests: 0,
            progress: false,
            force_progress: false,
            start_at: None,
        }
    }
}

/// One second of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SecondStats {
    pub t: u32,
    pub ok: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Subscription delivery statistics (subscribe mode).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NotifStats {
    pub connections: u64,
    pub subscribed: u64,
    pub received: u64,
    pub in_order: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub min_per_connection: u64,
    pub max_per_connection: u64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub label: String,
    pub url: String,
    pub mode: String,
    pub target_rate: Option<f64>,
    pub connections: usize,
    pub batch: usize,
    pub duration_s: f64,
    /// Requests completed in the measured window, whatever their outcome.
    pub requests: u64,
    /// 2xx answers without JSON-RPC errors.
    pub ok: u64,
    /// Everything else: non-2xx, answers carrying JSON-RPC errors, I/O errors, timeouts.
    pub errors: u64,
    pub http_status: BTreeMap<String, u64>,
    pub rpc_error_responses: u64,
    pub rpc_errors: u64,
    pub io_errors: u64,
    pub timeouts: u64,
    /// Open loop: scheduled requests never sent because the target fell too far behind (counted as errors).
    pub unsent: u64,
    pub connects: u64,
    pub connect_errors: u64,
    pub bytes_received: u64,
    pub rps: f64,
    pub ok_rps: f64,
    /// Calls (batch items) per second among ok requests.
    pub calls_per_s: f64,
    /// Latency of every answered request, microseconds (from the intended send time in open loop).
    pub latency: Summary,
    pub histogram: Vec<Bucket>,
    pub series: Vec<SecondStats>,
    pub notifications: Option<NotifStats>,
    #[serde(skip)]
    pub hist: Option<LatencyHist>,
}

impl LoadResult {
    /// Error share of completed requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// A human-readable summary.
    pub fn human(&self) -> String {
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "{} {} ({} mode{}, {} connections{}, {:.1} s)",
            if self.label.is_empty() {
                "run"
            } else {
                &self.label
            },
            self.url,
            self.mode,
            self.target_rate
                .map(|r| format!(" at {r:.0}/s"))
                .unwrap_or_default(),
            self.connections,
            if self.batch > 1 {
                format!(", batch {}", self.batch)
            } else {
                String::new()
            },
            self.duration_s
        );
        let _ = writeln!(
            s,
            "  requests {}  ok {}  errors {} ({:.2}%)  {:.1} req/s  {:.1} calls/s  {:.1} MB/s",
            self.requests,
            self.ok,
            self.errors,
            self.error_rate() * 100.0,
            self.rps,
            self.calls_per_s,
            self.bytes_received as f64 / self.duration_s.max(1e-9) / 1e6
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency ms: min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.3})",
            fmt_ms(l.min_us),
            fmt_ms(l.p50_us),
            fmt_ms(l.p90_us),
            fmt_ms(l.p99_us),
            fmt_ms(l.p999_us),
            fmt_ms(l.max_us),
            l.mean_us / 1000.0
        );
        if !self.http_status.is_empty()
            || self.io_errors + self.timeouts + self.rpc_errors + self.unsent > 0
        {
            let st: Vec<String> = self
                .http_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(
                s,
                "  http status [{}]  rpc errors {} (in {} answers)  io errors {}  timeouts {}  unsent {}  connects {} (failed {})",
                st.join(", "),
                self.rpc_errors,
                self.rpc_error_responses,
                self.io_errors,
                self.timeouts,
                self.unsent,
                self.connects,
                self.connect_errors
            );
        }
        if let Some(n) = &self.notifications {
            let _ = writeln!(
                s,
                "  subscriptions {}/{}  notifications {}  in order {}  gaps {}  out of order {}  per connection {}..{}",
                n.subscribed,
                n.connections,
                n.received,
                n.in_order,
                n.gaps,
                n.out_of_order,
                n.min_per_connection,
                n.max_per_connection
            );
        }
        s
    }
}

/// Live counters for the progress line (and for callers that watch a run).
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub issued: AtomicU64,
}

#[derive(Clone, Copy)]
enum Outcome {
    Reply {
        status: u16,
        rpc_errors: u32,
        bytes: usize,
    },
    Io,
    Timeout,
}

struct Stats {
    measure_from: Instant,
    hist: LatencyHist,
    series: Vec<(u64, u64, LatencyHist)>,
    requests: u64,
    ok: u64,
    errors: u64,
    status: BTreeMap<u16, u64>,
    rpc_error_responses: u64,
    rpc_errors: u64,
    io_errors: u64,
    timeouts: u64,
    connects: u64,
    connect_errors: u64,
    bytes: u64,
    notif: NotifStats,
    per_conn_notifs: Vec<u64>,
    unsent: u64,
}

impl Stats {
    fn new(measure_from: Instant) -> Stats {
        Stats {
            measure_from,
            hist: LatencyHist::new(),
            series: Vec::new(),
            requests: 0,
            ok: 0,
            errors: 0,
            status: BTreeMap::new(),
            rpc_error_responses: 0,
            rpc_errors: 0,
            io_errors: 0,
            timeouts: 0,
            connects: 0,
            connect_errors: 0,
            bytes: 0,
            notif: NotifStats::default(),
            per_conn_notifs: Vec::new(),
            unsent: 0,
        }
    }

    /// Counts the remaining scheduled requests of connection `g` from slot `j` on as errors that were never sent.
    fn unsent(&mut self, sh: &Shared, g: usize, mut j: u64) {
        while let Some(at) = open_slot(sh, g, j) {
            if at >= self.measure_from {
                self.unsent += 1;
                self.requests += 1;
                self.errors += 1;
            }
            j += 1;
        }
    }

    fn second(&mut self, at: Instant) -> &mut (u64, u64, LatencyHist) {
        let sec = at.saturating_duration_since(self.measure_from).as_secs() as usize;
        while self.series.len() <= sec {
            self.series.push((0, 0, LatencyHist::with_sigfig(2)));
        }
        &mut self.series[sec]
    }

    /// Records one request of schedule slot `slot` (decides the window and the second it belongs to) whose latency
    /// counts from `from` and that ended at `done`.
    fn record(
        &mut self,
        slot: Instant,
        from: Instant,
        done: Instant,
        outcome: Outcome,
        progress: &Progress,
    ) -> bool {
        let ok = matches!(outcome, Outcome::Reply { status, rpc_errors: 0, .. } if (200..300).contains(&status));
        progress.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        if slot < self.measure_from {
            return ok;
        }
        self.requests += 1;
        let lat = done.saturating_duration_since(from);
        match outcome {
            Outcome::Reply {
                status,
                rpc_errors,
                bytes,
            } => {
                self.bytes += bytes as u64;
                if !(200..300).contains(&status) {
                    *self.status.entry(status).or_default() += 1;
                }
                if rpc_errors > 0 {
                    self.rpc_error_responses += 1;
                    self.rpc_errors += rpc_errors as u64;
                }
                self.hist.record(lat);
            }
            Outcome::Io => self.io_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
        let sec = self.second(slot);
        if ok {
            sec.0 += 1;
        } else {
            sec.1 += 1;
        }
        if matches!(outcome, Outcome::Reply { .. }) {
            sec.2.record(lat);
        }
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        ok
    }
}

struct Shared {
    spec: LoadSpec,
    target: Target,
    pool: Arc<Vec<PoolEntry>>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    progress: Arc<Progress>,
    stop: AtomicBool,
}

/// Runs a load spec to completion and returns the merged result.
pub fn run(spec: &LoadSpec, pool: Arc<Vec<PoolEntry>>) -> Result<LoadResult, String> {
    run_with_progress(spec, pool, Arc::new(Progress::default()))
}

/// The default schedule start for a run with `connections` connections: long enough from now to open them.
pub fn default_start(connections: usize) -> Instant {
    Instant::now() + Duration::from_millis(200 + (connections as u64 / 50).min(2000))
}

/// [`run`] with caller-owned progress counters.
pub fn run_with_progress(
    spec: &LoadSpec,
    pool: Arc<Vec<PoolEntry>>,
    progress: Arc<Progress>,
) -> Result<LoadResult, String> {
    let target = Target::parse(&spec.url)?;
    if pool.is_empty() && spec.mode != Mode::Subscribe {
        return Err("empty request pool".into());
    }
    if spec.mode == Mode::Subscribe && !target.websocket {
        return Err("subscribe mode needs a ws:// URL".into());
    }
    if spec.mode == Mode::Open && spec.rate <= 0.0 {
        return Err("open loop needs a rate > 0".into());
    }
    let connections = spec.connections.max(1);
    let threads = spec.threads.clamp(1, connections);
    let start = spec.start_at.unwrap_or_else(|| default_start(connections));
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let shared = Arc::new(Shared {
        spec: LoadSpec {
            connections,
            threads,
            ..spec.clone()
        },
        target,
        pool,
        start,
        measure_from,
        end,
        progress: progress.clone(),
        stop: AtomicBool::new(false),
    });
    let printer = if spec.progress && (spec.force_progress || std::io::stderr().is_terminal()) {
        let sh = shared.clone();
        Some(std::thread::spawn(move || progress_line(&sh)))
    } else {
        None
    };
    let mut handles = Vec::new();
    for t in 0..threads {
        let sh = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || load_thread(sh, t))
                .map_err(|e| e.to_string())?,
        );
    }
    let mut parts = Vec::new();
    for h in handles {
        parts.push(h.join().map_err(|_| "load thread panicked".to_string())??);
    }
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(p) = printer {
        let _ = p.join();
    }
    Ok(merge(&shared, parts))
}

fn progress_line(sh: &Shared) {
    let total = (sh.end - sh.start).as_secs_f64();
    let mut last = (Instant::now(), 0u64);
    while !sh.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        if now.duration_since(last.0) < Duration::from_secs(1) && !sh.stop.load(Ordering::Relaxed) {
            continue;
        }
        let done = sh.progress.done.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        let el = now
            .saturating_duration_since(sh.start)
            .as_secs_f64()
            .min(total);
        let width = 24usize;
        let filled = ((el / total.max(1e-9)) * width as f64) as usize;
        eprint!(
            "\r  {:<28} [{}{}] {:>5.1}/{:.1}s {:>10} req {:>9.0} req/s  errors {}   ",
            truncate(&sh.spec.label, 28),
            "#".repeat(filled.min(width)),
            "-".repeat(width - filled.min(width)),
            el,
            total,
            done,
            rate,
            sh.progress.errors.load(Ordering::Relaxed)
        );
    }
    eprint!("\r{}\r", " ".repeat(110));
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

pub(crate) fn runtime() -> Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
    String,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .build()
        .map_err(|e| format!("monoio runtime: {e}"))
}

fn load_thread(sh: Arc<Shared>, t: usize) -> Result<Stats, String> {
    if !sh.spec.cpus.is_empty() {
        let _ = crate::sys::pin_current_thread(&[sh.spec.cpus[t % sh.spec.cpus.len()]]);
    }
    let mut rt = runtime()?;
    let stats = Rc::new(RefCell::new(Stats::new(sh.measure_from)));
    let st = stats.clone();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        let k = sh.spec.connections;
        for g in (t..k).step_by(sh.spec.threads) {
            let sh = sh.clone();
            let st = st.clone();
            tasks.push(monoio::spawn(async move {
                match (sh.spec.mode, sh.target.websocket) {
                    (Mode::Subscribe, _) => subscribe_conn(sh, st, g).await,
                    (_, false) => http_conn(sh, st, g).await,
                    (_, true) => ws_conn(sh, st, g).await,
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
    let s = std::mem::replace(&mut *stats.borrow_mut(), Stats::new(Instant::now()));
    Ok(s)
}

/// The intended send time of request `j` of connection `g` (open loop), or None past the end.
fn open_slot(sh: &Shared, g: usize, j: u64) -> Option<Instant> {
    let k = sh.spec.connections as f64;
    let offset = (g as f64 + j as f64 * k) / sh.spec.rate;
    let at = sh.start + Duration::from_secs_f64(offset);
    (at < sh.end).then_some(at)
}

fn over_budget(sh: &Shared) -> bool {
    sh.spec.max_requests > 0
        && sh.progress.issued.fetch_add(1, Ordering::Relaxed) >= sh.spec.max_requests
}

async fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        monoio::time::sleep(at - now).await;
    }
}

fn build_body(sh: &Shared, out: &mut Vec<u8>, seq: &mut u64, g: usize) {
    out.clear();
    let pool = &sh.pool;
    let b = sh.spec.batch.max(1);
    if b > 1 {
        out.push(b'[');
    }
    for i in 0..b {
        if i > 0 {
            out.push(b',');
        }
        *seq += 1;
        let idx = (seq.wrapping_mul(2654435761) as usize ^ g.wrapping_mul(40503)) % pool.len();
        render_call(out, *seq, &pool[idx].tail);
    }
    if b > 1 {
        out.push(b']');
    }
}

/// When connection `g` sends its request number `j`: `(scheduled slot, latency start)`, or `None` when the run is
/// over for it. Open loop follows the schedule (coordinated-omission corrected); closed loop sends at once.
async fn next_slot(
    sh: &Shared,
    st: &RefCell<Stats>,
    g: usize,
    j: u64,
) -> Option<(Instant, Instant)> {
    match sh.spec.mode {
        Mode::Open => {
            let at = open_slot(sh, g, j)?;
            if Instant::now() > sh.end + sh.spec.timeout {
                // Too far behind schedule to catch up within the run's bound: the rest are never sent.
                st.borrow_mut().unsent(sh, g, j);
                return None;
            }
            if Instant::now() < at {
                // The connection is free before its slot: the timer's wake-up slack (1 ms wheel) is ours,
                // not the target's, so latency counts from the actual send.
                sleep_until(at).await;
                Some((at, Instant::now()))
            } else {
                // Behind schedule because the previous answer came late: charge the wait to the target.
                Some((at, at))
            }
        }
        _ => {
            let now = Instant::now();
            (now < sh.end).then_some((now, now))
        }
    }
}

async fn http_conn(sh: Arc<Shared>, st: Rc<RefCell<Stats>>, g: usize) {
    let mut conn = connect_once(&sh, &st, HttpConn::connect(&sh.target)).await;
    let mut body = Vec::with_capacity(1024);
    let mut seq = (g as u64) << 40;
    let mut j = 0u64;
    if sh.spec.mode == Mode::Closed {
        sleep_until(sh.start).await;
    }
    loop {
        let Some((slot, from)) = next_slot(&sh, &st, g, j).await else {
            break;
        };
        j += 1;
        if over_budget(&sh) {
            break;
        }
        if conn.is_none() {
            match connect_once(&sh, &st, HttpConn::connect(&sh.target)).await {
                Some(c) => conn = Some(c),
                None => {
                    // The request could not even be sent: an error of this slot.
                    st.borrow_mut()
                        .record(slot, from, Instant::now(), Outcome::Io, &sh.progress);
                    monoio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        build_body(&sh, &mut body, &mut seq, g);
        let c = conn.as_mut().expect("connected");
        let res = monoio::time::timeout(sh.spec.timeout, c.post(&body, false)).await;
        let done = Instant::now();
        let outcome = match res {
            Ok(Ok(r)) => {
                if r.close {
                    conn = None;
                }
                Outcome::Reply {
                    status: r.status,
                    rpc_errors: r.rpc_errors,
                    bytes: r.body_len,
                }
            }
            Ok(Err(_)) => {
                conn = None;
                Outcome::Io
            }
            Err(_) => {
                conn = None;
                Outcome::Timeout
            }
        };
        let ok = st
            .borrow_mut()
            .record(slot, from, done, outcome, &sh.progress);
        if !ok && sh.spec.mode == Mode::Closed && !matches!(outcome, Outcome::Reply { .. }) {
            // Do not spin on a dead target.
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One connection attempt (bounded by the request timeout), counted in the stats.
async fn connect_once<C, F: std::future::Future<Output = std::io::Result<C>>>(
    sh: &Shared,
    st: &Rc<RefCell<Stats>>,
    f: F,
) -> Option<C> {
    match monoio::time::timeout(sh.spec.timeout, f).await {
        Ok(Ok(c)) => {
            st.borrow_mut().connects += 1;
            Some(c)
        }
        _ => {
            st.borrow_mut().connect_errors += 1;
            None
        }
    }
}

#[derive(serde::Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

async fn connect_ws(sh: &Shared, st: &Rc<RefCell<Stats>>, g: usize) -> Option<WsConn> {
    loop {
        if Instant::now() >= sh.end {
            return None;
        }
        match monoio::time::timeout(sh.spec.timeout, WsConn::connect(&sh.target, g as u64 + 1))
            .await
        {
            Ok(Ok(c)) => {
                st.borrow_mut().connects += 1;
                return Some(c);
            }
            _ => {
                st.borrow_mut().connect_errors += 1;
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One WS request: send, then read until the answer with our id (notifications are skipped).
async fn ws_exchange(c: &mut WsConn, body: &[u8], batch: bool) -> std::io::Result<(u32, usize)> {
    c.send_text(body).await?;
    loop {
        let Some(msg) = c.recv().await? else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        let trimmed = msg.trim_ascii_start();
        if batch {
            if trimmed.first() == Some(&b'[') {
                return Ok((crate::client::count_rpc_errors(&msg), msg.len()));
            }
            continue;
        }
        if let Ok(IdOnly { id: Some(id) }) = serde_json::from_slice::<IdOnly>(trimmed) {
            if !id.is_null() {
                return Ok((crate::client::count_rpc_errors(&msg), msg.len()));
            }
        }
    }
}

async fn ws_conn(sh: Arc<Shared>, st: Rc<RefCell<Stats>>, g: usize) {
    let mut conn = connect_once(&sh, &st, WsConn::connect(&sh.target, g as u64 + 1)).await;
    let mut body = Vec::with_capacity(1024);
    let mut seq = (g as u64) << 40;
    let mut j = 0u64;
    if sh.spec.mode == Mode::Closed {
        sleep_until(sh.start).await;
    }
    loop {
        let Some((slot, from)) = next_slot(&sh, &st, g, j).await else {
            break;
        };
        j += 1;
        if over_budget(&sh) {
            break;
        }
        if conn.is_none() {
            match connect_once(&sh, &st, WsConn::connect(&sh.target, g as u64 + 1)).await {
                Some(c) => conn = Some(c),
                None => {
                    st.borrow_mut()
                        .record(slot, from, Instant::now(), Outcome::Io, &sh.progress);
                    monoio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        build_body(&sh, &mut body, &mut seq, g);
        let c = conn.as_mut().expect("connected");
        let res =
            monoio::time::timeout(sh.spec.timeout, ws_exchange(c, &body, sh.spec.batch > 1)).await;
        let done = Instant::now();
        let outcome = match res {
            Ok(Ok((rpc_errors, bytes))) => Outcome::Reply {
                status: 200,
                rpc_errors,
                bytes,
            },
            Ok(Err(_)) => {
                conn = None;
                Outcome::Io
            }
            Err(_) => {
                conn = None;
                Outcome::Timeout
            }
        };
        st.borrow_mut()
            .record(slot, from, done, outcome, &sh.progress);
    }
    if let Some(mut c) = conn {
        c.close().await;
    }
}

#[derive(serde::Deserialize)]
struct Notif {
    #[serde(default)]
    params: Option<NotifParams>,
}

#[derive(serde::Deserialize)]
struct NotifParams {
    result: NotifHead,
}

#[derive(serde::Deserialize)]
struct NotifHead {
    #[serde(default)]
    number: Option<String>,
    #[serde(default, rename = "mockTimeNs")]
    mock_time_ns: Option<String>,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn subscribe_conn(sh: Arc<Shared>, st: Rc<RefCell<Stats>>, g: usize) {
    st.borrow_mut().notif.connections += 1;
    let Some(mut c) = connect_ws(&sh, &st, g).await else {
        return;
    };
    let req = br#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
    let sub = monoio::time::timeout(sh.spec.timeout, ws_exchange(&mut c, req, false)).await;
    if !matches!(sub, Ok(Ok((0, _)))) {
        st.borrow_mut().errors += 1;
        return;
    }
    st.borrow_mut().notif.subscribed += 1;
    let mut last: Option<u64> = None;
    let mut mine = 0u64;
    loop {
        let now = Instant::now();
        if now >= sh.end {
            break;
        }
        let msg = match monoio::time::timeout(sh.end - now, c.recv()).await {
            Ok(Ok(Some(m))) => m,
            Ok(_) => {
                st.borrow_mut().io_errors += 1;
                break;
            }
            Err(_) => break,
        };
        let done = Instant::now();
        let Ok(Notif { params: Some(p) }) = serde_json::from_slice::<Notif>(&msg) else {
            continue;
        };
        let n = p
            .result
            .number
            .as_deref()
            .and_then(crate::chain::parse_quantity);
        let sent = p
            .result
            .mock_time_ns
            .as_deref()
            .and_then(crate::chain::parse_quantity);
        let lat = sent
            .map(|s| Duration::from_nanos(unix_ns().saturating_sub(s)))
            .unwrap_or_default();
        let mut s = st.borrow_mut();
        if done < s.measure_from {
            last = n;
            continue;
        }
        mine += 1;
        s.notif.received += 1;
        match (last, n) {
            (Some(l), Some(n)) if n == l + 1 => s.notif.in_order += 1,
            (Some(l), Some(n)) if n > l + 1 => s.notif.gaps += 1,
            (Some(_), Some(_)) => s.notif.out_of_order += 1,
            _ => s.notif.in_order += 1,
        }
        last = n.or(last);
        s.requests += 1;
        s.ok += 1;
        s.bytes += msg.len() as u64;
        s.hist.record(lat);
        let at = done;
        let sec = s.second(at);
        sec.0 += 1;
        sec.2.record(lat);
        drop(s);
        sh.progress.done.fetch_add(1, Ordering::Relaxed);
    }
    st.borrow_mut().per_conn_notifs.push(mine);
    c.close().await;
}

fn merge(sh: &Shared, parts: Vec<Stats>) -> LoadResult {
    let mut hist = LatencyHist::new();
    let mut r = LoadResult {
        label: sh.spec.label.clone(),
        url: sh.spec.url.clone(),
        mode: format!("{:?}", sh.spec.mode).to_lowercase(),
        target_rate: (sh.spec.mode == Mode::Open).then_some(sh.spec.rate),
        connections: sh.spec.connections,
        batch: sh.spec.batch.max(1),
        duration_s: sh.spec.duration.as_secs_f64(),
        ..Default::default()
    };
    let mut series: Vec<(u64, u64, LatencyHist)> = Vec::new();
    let mut notif = NotifStats::default();
    let mut per_conn = Vec::new();
    for p in parts {
        hist.merge(&p.hist);
        r.requests += p.requests;
        r.ok += p.ok;
        r.errors += p.errors;
        for (k, v) in p.status {
            *r.http_status.entry(k.to_string()).or_default() += v;
        }
        r.rpc_error_responses += p.rpc_error_responses;
        r.rpc_errors += p.rpc_errors;
        r.io_errors += p.io_errors;
        r.timeouts += p.timeouts;
        r.unsent += p.unsent;
        r.connects += p.connects;
        r.connect_errors += p.connect_errors;
        r.bytes_received += p.bytes;
        for (i, (ok, err, h)) in p.series.into_iter().enumerate() {
            while series.len() <= i {
                series.push((0, 0, LatencyHist::with_sigfig(2)));
            }
            series[i].0 += ok;
            series[i].1 += err;
            series[i].2.merge(&h);
        }
        notif.connections += p.notif.connections;
        notif.subscribed += p.notif.subscribed;
        notif.received += p.notif.received;
        notif.in_order += p.notif.in_order;
        notif.gaps += p.notif.gaps;
        notif.out_of_order += p.notif.out_of_order;
        per_conn.extend(p.per_conn_notifs);
    }
    let secs = r.duration_s.max(1e-9);
    r.rps = r.requests as f64 / secs;
    r.ok_rps = r.ok as f64 / secs;
    r.calls_per_s = r.ok_rps * r.batch as f64;
    r.latency = hist.summary();
    r.histogram = hist.log_buckets(20);
    let n_secs = sh.spec.duration.as_secs_f64().ceil() as usize;
    r.series = series
        .iter()
        .take(n_secs.max(1))
        .enumerate()
        .map(|(t, (ok, err, h))| SecondStats {
            t: t as u32,
            ok: *ok,
            errors: *err,
            p50_us: h.quantile_us(0.5),
            p99_us: h.quantile_us(0.99),
            max_us: h.quantile_us(1.0),
        })
        .collect();
    if sh.spec.mode == Mode::Subscribe {
        notif.min_per_connection = per_conn.iter().copied().min().unwrap_or(0);
        notif.max_per_connection = per_conn.iter().copied().max().unwrap_or(0);
        r.notifications = Some(notif);
    }
    r.hist = Some(hist);
    r
}

/// Idle keep-alive connections held open in the background (see [`hold_idle`]).
pub struct IdleHold {
    release: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Connections that completed their request and are held.
    pub established: u64,
    pub failed: u64,
}

impl IdleHold {
    /// Closes every held connection.
    pub fn release(self) {
        self.release.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Opens `n` keep-alive connections to `url` (one JSON-RPC request each, `body`), holds them until released or
/// `max_hold` passes. Returns once every connection is established or failed.
pub fn hold_idle(
    url: &str,
    n: usize,
    body: &[u8],
    threads: usize,
    cpus: &[usize],
    max_hold: Duration,
) -> Result<IdleHold, String> {
    let target = Arc::new(Target::parse(url)?);
    let release = Arc::new(AtomicBool::new(false));
    let done = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let threads_n = threads.clamp(1, n.max(1));
    let mut threads = Vec::new();
    for t in 0..threads_n {
        let target = target.clone();
        let release = release.clone();
        let done = done.clone();
        let body = body.to_vec();
        let cpus = cpus.to_vec();
        let count = (t..n).step_by(threads_n).count();
        threads.push(
            std::thread::Builder::new()
                .name(format!("idle-{t}"))
                .spawn(move || {
                    if !cpus.is_empty() {
                        let _ = crate::sys::pin_current_thread(&[cpus[t % cpus.len()]]);
                    }
                    let Ok(mut rt) = runtime() else {
                        done.1.fetch_add(count as u64, Ordering::Relaxed);
                        return;
                    };
                    rt.block_on(async move {
                        let held: Rc<RefCell<Vec<HttpConn>>> = Rc::new(RefCell::new(Vec::new()));
                        let deadline = Instant::now() + max_hold;
                        let mut tasks = Vec::new();
                        // Connect in waves of 256 so that the accept queue never overflows.
                        for i in 0..count {
                            let target = target.clone();
                            let held = held.clone();
                            let done = done.clone();
                            let body = body.clone();
                            tasks.push(monoio::spawn(async move {
                                let r = monoio::time::timeout(Duration::from_secs(10), async {
                                    let mut c = HttpConn::connect(&target).await?;
                                    let reply = c.post(&body, false).await?;
                                    if !(200..300).contains(&reply.status) || reply.close {
                                        return Err(std::io::Error::other(format!(
                                            "HTTP {} close={}",
                                            reply.status, reply.close
                                        )));
                                    }
                                    Ok::<_, std::io::Error>(c)
                                })
                                .await;
                                match r {
                                    Ok(Ok(c)) => {
                                        held.borrow_mut().push(c);
                                        done.0.fetch_add(1, Ordering::Relaxed);
                                    }
                                    _ => {
                                        done.1.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }));
                            if i % 256 == 255 {
                                for t in tasks.drain(..) {
                                    t.await;
                                }
                            }
                        }
                        for t in tasks {
                            t.await;
                        }
                        while !release.load(Ordering::Relaxed) && Instant::now() < deadline {
                            monoio::time::sleep(Duration::from_millis(50)).await;
                        }
                        held.borrow_mut().clear();
                    });
                })
                .map_err(|e| e.to_string())?,
        );
    }
    let start = Instant::now();
    while done.0.load(Ordering::Relaxed) + done.1.load(Ordering::Relaxed) < n as u64 {
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(IdleHold {
        release,
        threads,
        established: done.0.load(Ordering::Relaxed),
        failed: done.1.load(Ordering::Relaxed),
    })
}
