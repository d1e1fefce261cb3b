//! Cluster view (routing stays node-local): membership by polling DNS (`CLUSTER_DNS_QUERY`, A and AAAA answers via
//! `ToSocketAddrs`) and/or a static seed list (`CLUSTER_SEEDS`, `CLUSTER_SEEDS_FILE`, the same code path after
//! resolution), inter-node calls (`GET /api/cluster/node`, HTTP/1.1 signed with an HMAC of
//! `LASSO_CLUSTER_SECRET` over method, path, time and a nonce (`crate::ops::signature`), 5 s timeout), and the
//! views built on them: the `cluster` block of `/api/health` and the aggregated `/api/cluster/status` (admin token
//! or cluster secret required; coverage, unreachable nodes, 15 s cache). Node joins and leaves are logged and
//! counted.
//!
//! Everything here runs on its own small thread with blocking std sockets (one short-lived scoped thread per peer
//! per poll), never on a worker's event loop; workers read the last poll's snapshot under a mutex and answer the
//! inter-node endpoint from their own counters. Peers are identified by the node id they report (`LASSO_NODE_ID`,
//! `FLY_MACHINE_ID` or the host name), so an address answering with this node's id is this node, and a node
//! reachable at several addresses (A and AAAA) counts once. Without a secret, clustering is off and the inter-node
//! endpoint answers 404; with a missing, wrong, stale or replayed signature it answers 401.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use serde::{Deserialize, Serialize};

use crate::config::env;
use crate::ops::error::OpsError;
use crate::shard::state::{Shared, Worker};
use crate::wire::http::io::write_all;
use crate::wire::http::request::RequestHead;
use crate::wire::http::response::Response;

/// Timeout of one inter-node call (connect, request and whole answer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// `/api/cluster/status` serves peer figures at most this old.
pub const STATUS_CACHE: Duration = Duration::from_secs(15);
/// Largest inter-node answer read.
const MAX_ANSWER_BYTES: usize = 4 << 20;

static CLUSTER: OnceLock<Arc<Cluster>> = OnceLock::new();
static JOINS: AtomicU64 = AtomicU64::new(0);
static LEAVES: AtomicU64 = AtomicU64::new(0);

/// Cluster settings from the environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `LASSO_CLUSTER_SECRET`: required for any inter-node call.
    pub secret: Option<String>,
    /// `CLUSTER_DNS_QUERY`: host name whose A and AAAA records are the nodes.
    pub dns_query: Option<String>,
    /// `CLUSTER_SEEDS`: comma-separated `host:port` list, treated like DNS answers.
    pub seeds: Vec<String>,
    /// `CLUSTER_SEEDS_FILE`: a file holding such a list (comma or whitespace separated), re-read at every poll.
    pub seeds_file: Option<PathBuf>,
    /// `CLUSTER_PORT` (default: this node's port): the port of DNS answers and of seeds without one.
    pub port: u16,
    /// `CLUSTER_POLL_MS` (default 5000).
    pub poll: Duration,
    /// `EXPECTED_NODE_COUNT` (default: the number of nodes discovered, this one included).
    pub expected: Option<usize>,
}

impl Settings {
    /// Reads the cluster variables from `source` (values trimmed; empty = unset).
    pub fn from_env(own_port: u16, source: env::Source) -> Settings {
        let env = |name: &str| {
            source(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Settings {
            secret: env(env::CLUSTER_SECRET),
            dns_query: env(env::CLUSTER_DNS_QUERY),
            seeds: env(env::CLUSTER_SEEDS).map_or_else(Vec::new, |s| split_list(&s)),
            seeds_file: env(env::CLUSTER_SEEDS_FILE).map(PathBuf::from),
            port: env(env::CLUSTER_PORT)
                .and_then(|p| p.parse().ok())
                .unwrap_or(own_port),
            poll: Duration::from_millis(
                env(env::CLUSTER_POLL_MS)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(5000u64)
                    .max(50),
            ),
            expected: env(env::EXPECTED_NODE_COUNT)
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0),
        }
    }

    pub fn discovery_configured(&self) -> bool {
        self.dns_query.is_some() || !self.seeds.is_empty() || self.seeds_file.is_some()
    }

    /// Discovery configured and a secret to talk to peers with.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() && self.discovery_configured()
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Resolves every configured source into addresses (deduplicated, sorted). Blocking (DNS).
pub fn resolve(settings: &Settings) -> Result<Vec<SocketAddr>, String> {
    let mut out = BTreeSet::new();
    let mut errors = Vec::new();
    if let Some(host) = &settings.dns_query {
        match (host.as_str(), settings.port).to_socket_addrs() {
            Ok(addrs) => out.extend(addrs),
            Err(e) => errors.push(format!("{host}: {e}")),
        }
    }
    let mut seeds = settings.seeds.clone();
    if let Some(path) = &settings.seeds_file {
        match std::fs::read_to_string(path) {
            Ok(text) => seeds.extend(split_list(&text)),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    for seed in &seeds {
        let resolved = match seed.to_socket_addrs() {
            Ok(a) => Ok(a.collect::<Vec<_>>()),
            // No port: the cluster port.
            Err(_) => (seed.as_str(), settings.port)
                .to_socket_addrs()
                .map(|a| a.collect()),
        };
        match resolved {
            Ok(addrs) => out.extend(addrs),
            Err(e) => errors.push(format!("{seed}: {e}")),
        }
    }
    if out.is_empty() && !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(out.into_iter().collect())
}

/// One provider as a node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProviderSummary {
    pub id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub successes: u64,
    #[serde(default)]
    pub failures: u64,
}

/// One chain as a node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ChainSummary {
    pub profile: String,
    pub name: String,
    #[serde(default)]
    pub providers: Vec<ProviderSummary>,
}

/// A node's metrics summary.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeMetrics {
    pub requests: u64,
    pub errors: u64,
    pub connections: usize,
    pub chains: Vec<ChainSummary>,
}

/// What `GET /api/cluster/node` answers.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeReport {
    pub node_id: String,
    pub region: Option<String>,
    pub version: String,
    pub uptime_s: u64,
    pub metrics: NodeMetrics,
}

/// This node's report, from the typed snapshot of every worker.
pub async fn node_report(worker: &Worker) -> NodeReport {
    let status = crate::ops::snapshot::status(worker).await;
    let chains = status
        .chains
        .iter()
        .map(|c| ChainSummary {
            profile: c.profile.clone(),
            name: c.name.clone(),
            providers: c
                .providers
                .iter()
                .map(|p| ProviderSummary {
                    id: p.id.clone(),
                    state: p.state.to_string(),
                    requests: p.requests,
                    successes: p.successes,
                    failures: p.failures,
                })
                .collect(),
        })
        .collect();
    NodeReport {
        node_id: worker.shared.node_id.clone(),
        region: worker.shared.region.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: worker.shared.started.elapsed().as_secs(),
        metrics: NodeMetrics {
            requests: status.totals.client_requests,
            errors: status.totals.client_errors.values().sum(),
            connections: worker.shared.connections.load(Ordering::Relaxed),
            chains,
        },
    }
}

/// A peer that answered.
#[derive(Debug, Clone)]
struct Member {
    addr: SocketAddr,
    report: NodeReport,
}

/// A discovered address that did not answer (or refused us).
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub address: String,
    /// The node id last seen at that address, if any.
    pub node_id: Option<String>,
    pub error: String,
}

/// The result of the last poll.
#[derive(Debug, Clone, Default)]
struct View {
    polled_at: Option<Instant>,
    members: BTreeMap<String, Member>,
    unreachable: Vec<Missing>,
    refused: Vec<Missing>,
}

/// Process-wide cluster state.
pub struct Cluster {
    pub settings: Settings,
    node_id: String,
    region: Option<String>,
    view: Mutex<View>,
    refresh: Mutex<Option<std::sync::mpsc::Sender<oneshot::Sender<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Joins and leaves counted since start.
pub fn counters() -> (u64, u64) {
    (
        JOINS.load(Ordering::Relaxed),
        LEAVES.load(Ordering::Relaxed),
    )
}

/// Connected peers (this node excluded), 0 when clustering is off.
pub fn connected() -> usize {
    CLUSTER.get().map_or(0, |c| lock(&c.view).members.len())
}

/// The cluster secret, when clustering is set up with one.
pub fn secret() -> Option<String> {
    CLUSTER.get().and_then(|c| c.settings.secret.clone())
}

/// Whether clustering runs (discovery configured, and a secret).
pub fn enabled() -> bool {
    CLUSTER.get().is_some_and(|c| c.settings.enabled())
}

/// Connected peers (node id and the address that answered), as of the last poll.
pub fn peers() -> Vec<(String, SocketAddr)> {
    CLUSTER.get().map_or_else(Vec::new, |c| {
        lock(&c.view)
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.addr))
            .collect()
    })
}

/// Sets up clustering from the environment and, when enabled, starts the membership thread.
pub fn start(shared: &Arc<Shared>, own_port: u16) {
    let settings = Settings::from_env(own_port, &env::process);
    if settings.discovery_configured() && settings.secret.is_none() {
        tracing::error!(
            "cluster discovery is configured but LASSO_CLUSTER_SECRET is not set: clustering disabled"
        );
    }
    let enabled = settings.enabled();
    let (tx, rx) = std::sync::mpsc::channel();
    let cluster = Arc::new(Cluster {
        settings,
        node_id: shared.node_id.clone(),
        region: shared.region.clone(),
        view: Mutex::new(View::default()),
        refresh: Mutex::new(enabled.then_some(tx)),
    });
    if CLUSTER.set(cluster.clone()).is_err() || !enabled {
        return;
    }
    tracing::info!(
        node_id = %cluster.node_id,
        dns = cluster.settings.dns_query.as_deref().unwrap_or("-"),
        seeds = cluster.settings.seeds.len(),
        poll_ms = cluster.settings.poll.as_millis() as u64,
        "cluster discovery started"
    );
    let spawned = std::thread::Builder::new()
        .name("lasso-cluster".into())
        .spawn(move || Poller::new(cluster).run(rx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the cluster thread: clustering disabled");
    }
}

/// Why an inter-node call failed.
#[derive(Debug)]
enum CallError {
    /// The peer answered 401/403/404: it does not accept our secret (or has clustering off).
    Refused(u16),
    Failed(String),
}

/// A tiny blocking HTTP/1.1 GET with `Connection: close`, bounded by `timeout` overall.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Error, ErrorKind};
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Error::new(ErrorKind::TimedOut, "timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    let _ = stream.set_nodelay(true);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(req.as_bytes())?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(Error::new(ErrorKind::TimedOut, "timed out"));
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER_BYTES {
            return Err(Error::new(ErrorKind::InvalidData, "answer too large"));
        }
        // Stop as soon as a Content-Length body is complete.
        if let Some((status, body)) = split_answer(&buf) {
            if body.is_some() {
                let body = body.unwrap_or_default();
                return Ok((status, body));
            }
        }
    }
    match split_answer(&buf) {
        Some((status, body)) => Ok((status, body.unwrap_or_else(|| body_after_head(&buf)))),
        None => Err(Error::new(ErrorKind::InvalidData, "malformed answer")),
    }
}

fn body_after_head(buf: &[u8]) -> Vec<u8> {
    memchr::memmem::find(buf, b"\r\n\r\n").map_or_else(Vec::new, |i| buf[i + 4..].to_vec())
}

/// Status and, when the head carries a Content-Length the buffer satisfies, the body.
fn split_answer(buf: &[u8]) -> Option<(u16, Option<Vec<u8>>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = resp.code?;
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = length
        .filter(|n| buf.len() >= head_len + n)
        .map(|n| buf[head_len..head_len + n].to_vec());
    Some((status, body))
}

/// The inter-node endpoint's path (signed with the method, so a signature is good for this call only).
pub const NODE_PATH: &str = "/api/cluster/node";

fn fetch_node(addr: SocketAddr, secret: &str) -> Result<NodeReport, CallError> {
    let auth = crate::ops::signature::authorization(secret.as_bytes(), "GET", NODE_PATH);
    let (status, body) = http_get(addr, NODE_PATH, &[("Authorization", &auth)], CALL_TIMEOUT)
        .map_err(|e| CallError::Failed(e.to_string()))?;
    match status {
        200 if crate::wire::jsonrpc::nesting_exceeds(
            &body,
            crate::wire::jsonrpc::MAX_REPLY_DEPTH,
        ) =>
        {
            Err(CallError::Failed("node report nested too deep".into()))
        }
        200 => sonic_rs::from_slice(&body)
            .map_err(|e| CallError::Failed(format!("bad node report: {e}"))),
        401 | 403 | 404 => Err(CallError::Refused(status)),
        s => Err(CallError::Failed(format!("HTTP {s}"))),
    }
}

/// The membership loop's own state.
struct Poller {
    cluster: Arc<Cluster>,
    /// Addresses that answered with this node's id.
    own: HashSet<SocketAddr>,
    /// The node id last seen at each address.
    ids: HashMap<SocketAddr, String>,
    last_addrs: Vec<SocketAddr>,
    last_resolve_error: Option<String>,
}

impl Poller {
    fn new(cluster: Arc<Cluster>) -> Self {
        Poller {
            cluster,
            own: HashSet::new(),
            ids: HashMap::new(),
            last_addrs: Vec::new(),
            last_resolve_error: None,
        }
    }

    fn run(mut self, refresh: std::sync::mpsc::Receiver<oneshot::Sender<()>>) {
        use std::sync::mpsc::RecvTimeoutError;
        let poll = self.cluster.settings.poll;
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next {
                self.poll_once();
                next = Instant::now() + poll;
                continue;
            }
            match refresh.recv_timeout(next - now) {
                Ok(reply) => {
                    let stale = lock(&self.cluster.view)
                        .polled_at
                        .is_none_or(|t| t.elapsed() >= STATUS_CACHE);
                    if stale {
                        self.poll_once();
                        next = Instant::now() + poll;
                    }
                    let _ = reply.send(());
                    while let Ok(reply) = refresh.try_recv() {
                        let _ = reply.send(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn poll_once(&mut self) {
        let settings = &self.cluster.settings;
        let addrs = match resolve(settings) {
            Ok(a) => {
                self.last_resolve_error = None;
                self.last_addrs = a.clone();
                a
            }
            Err(e) => {
                if self.last_resolve_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "cluster discovery failed; keeping the last answer");
                    self.last_resolve_error = Some(e);
                }
                self.last_addrs.clone()
            }
        };
        let secret = settings.secret.clone().unwrap_or_default();
        let targets: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| !self.own.contains(a))
            .collect();
        let results: Vec<(SocketAddr, Result<NodeReport, CallError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|&addr| {
                    let secret = &secret;
                    (addr, s.spawn(move || fetch_node(addr, secret)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(addr, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(CallError::Failed("panicked".into())));
                    (addr, r)
                })
                .collect()
        });
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        let mut unreachable = Vec::new();
        let mut refused = Vec::new();
        for (addr, result) in results {
            match result {
                Ok(report) if report.node_id == self.cluster.node_id => {
                    self.own.insert(addr);
                }
                Ok(report) => {
                    self.ids.insert(addr, report.node_id.clone());
                    members
                        .entry(report.node_id.clone())
                        .or_insert(Member { addr, report });
                }
                Err(e) => {
                    let (list, error) = match e {
                        CallError::Refused(code) => (&mut refused, format!("refused: HTTP {code}")),
                        CallError::Failed(why) => (&mut unreachable, why),
                    };
                    list.push(Missing {
                        address: addr.to_string(),
                        node_id: self.ids.get(&addr).cloned(),
                        error,
                    });
                }
            }
        }
        // A node answering at another address is not missing; list a missing node once.
        let mut seen = BTreeSet::new();
        unreachable.retain(|m: &Missing| match &m.node_id {
            Some(id) => !members.contains_key(id) && seen.insert(id.clone()),
            None => true,
        });
        let mut view = lock(&self.cluster.view);
        for (id, m) in &members {
            if !view.members.contains_key(id) {
                JOINS.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    node_id = %id,
                    address = %m.addr,
                    region = m.report.region.as_deref().unwrap_or("unknown"),
                    nodes_total = members.len() + 1,
                    "cluster node joined"
                );
            }
        }
        for (id, m) in &view.members {
            if !members.contains_key(id) {
                LEAVES.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    node_id = %id,
                    address = %m.addr,
                    nodes_total = members.len() + 1,
                    "cluster node left"
                );
            }
        }
        *view = View {
            polled_at: Some(Instant::now()),
            members,
            unreachable,
            refused,
        };
    }
}

/// The `cluster` block of `/api/health`.
#[derive(Debug, Serialize)]
pub struct HealthBlock {
    pub enabled: bool,
    pub nodes_connected: usize,
    pub nodes_total: usize,
    pub nodes_expected: usize,
    pub regions: Vec<String>,
    pub status: &'static str,
}

/// `healthy` with every expected node, `degraded` with more than half, `critical` otherwise.
pub fn cluster_status(nodes_total: usize, expected: usize) -> &'static str {
    if nodes_total >= expected {
        "healthy"
    } else if nodes_total * 2 > expected {
        "degraded"
    } else {
        "critical"
    }
}

fn region_name(r: Option<&str>) -> String {
    r.unwrap_or("unknown").to_string()
}

/// The cluster block for `/api/health` (`own_region` is used when clustering was never set up).
pub fn health(own_region: Option<&str>) -> HealthBlock {
    let Some(cluster) = CLUSTER.get().filter(|c| c.settings.enabled()) else {
        return HealthBlock {
            enabled: false,
            nodes_connected: 0,
            nodes_total: 1,
            nodes_expected: 1,
            regions: vec![region_name(own_region)],
            status: "healthy",
        };
    };
    let view = lock(&cluster.view);
    let connected = view.members.len();
    let discovered = 1 + connected + view.unreachable.len();
    let expected = cluster.settings.expected.unwrap_or(discovered);
    let mut regions = BTreeSet::new();
    regions.insert(region_name(cluster.region.as_deref()));
    for m in view.members.values() {
        regions.insert(region_name(m.report.region.as_deref()));
    }
    HealthBlock {
        enabled: true,
        nodes_connected: connected,
        nodes_total: connected + 1,
        nodes_expected: expected,
        regions: regions.into_iter().collect(),
        status: cluster_status(connected + 1, expected),
    }
}

/// The `Authorization` value of a raw request head, if any.
fn authorization(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let value = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))?
        .value;
    std::str::from_utf8(value)
        .ok()
        .map(|v| v.trim().to_string())
}

fn raw_response(status: u16, reason: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Serves `GET /api/cluster/node` (the connection is handed over after its head `buf[..head.head_len]`): this node's
/// report for a request signed with the cluster secret (`crate::ops::signature`: fresh, never seen before); 401
/// otherwise (the static secret as a bearer is refused too), 429 once the caller's address failed too often, 404
/// when clustering has no secret.
pub async fn serve_node(
    worker: Rc<Worker>,
    mut stream: monoio::net::TcpStream,
    buf: Vec<u8>,
    head: &RequestHead,
) {
    let secret = CLUSTER.get().and_then(|c| c.settings.secret.clone());
    let out = match secret {
        None => raw_response(
            404,
            "Not Found",
            "",
            &OpsError::not_found("clustering is disabled on this node").body(),
        ),
        Some(secret) => {
            let given = authorization(&buf[..head.head_len.min(buf.len())]);
            let verdict = crate::ops::signature::verify(
                secret.as_bytes(),
                "GET",
                NODE_PATH,
                given.as_deref(),
                crate::ops::signature::now_unix(),
            );
            let what = match verdict {
                Ok(()) => "cluster signature",
                Err(refused) => refused.describe(),
            };
            let checked = crate::ops::auth::check(
                head.peer,
                &worker.config.server,
                "cluster node",
                what,
                verdict.is_ok(),
            );
            match checked {
                Ok(()) => {
                    let report = node_report(&worker).await;
                    let body = sonic_rs::to_vec(&report).unwrap_or_else(|_| b"{}".to_vec());
                    raw_response(200, "OK", "", &body)
                }
                Err(refusal) => {
                    let extra = match &refusal.header {
                        Some((name, value)) => format!("{name}: {value}\r\n"),
                        None => String::new(),
                    };
                    raw_response(
                        refusal.status,
                        crate::wire::http::response::reason(refusal.status),
                        &extra,
                        &refusal.body(),
                    )
                }
            }
        }
    };
    let _ = write_all(&mut stream, out).await;
}

/// Checks a request for a cluster view: `Authorization: Bearer` with the admin token or the cluster secret (an
/// operator's view of internal addresses and errors), counted by `crate::ops::auth` like every secret. 404 when
/// this node has neither.
fn authorize_view(worker: &Worker, head: &RequestHead) -> Result<(), OpsError> {
    let admin = env::admin_token(&env::process);
    let secret = CLUSTER.get().and_then(|c| c.settings.secret.clone());
    if admin.is_none() && secret.is_none() {
        return Err(OpsError::not_found(
            "the cluster view needs LASSO_ADMIN_TOKEN or LASSO_CLUSTER_SECRET",
        ));
    }
    let presented = crate::ops::admin::bearer(head).unwrap_or("").as_bytes();
    // Both compared, whichever matches, so the time taken does not say which one is set.
    let as_admin = admin
        .as_deref()
        .is_some_and(|t| secret_matches(presented, t.as_bytes()));
    let as_cluster = secret
        .as_deref()
        .is_some_and(|t| secret_matches(presented, t.as_bytes()));
    crate::ops::auth::check(
        head.peer,
        &worker.config.server,
        "cluster status",
        "admin token or cluster secret",
        as_admin | as_cluster,
    )
}

/// Compares secrets without an early exit on the first differing byte.
pub fn secret_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for i in 0..given.len().max(expected.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(a ^ b);
    }
    std::hint::black_box(diff) == 0
}

#[derive(Serialize)]
struct Coverage {
    responding: usize,
    total: usize,
}

#[derive(Serialize)]
struct NodeEntry {
    node_id: String,
    region: Option<String>,
    address: Option<String>,
    #[serde(rename = "self")]
    is_self: bool,
    version: String,
    uptime_s: u64,
    metrics: NodeMetrics,
}

#[derive(Serialize, Default)]
struct ProviderAggregate {
    profile: String,
    chain: String,
    id: String,
    requests: u64,
    successes: u64,
    failures: u64,
    /// The provider's state on each responding node, by node id.
    states: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Totals {
    requests: u64,
    errors: u64,
    connections: usize,
}

#[derive(Serialize)]
struct ClusterStatus {
    enabled: bool,
    node_id: String,
    status: &'static str,
    coverage: Coverage,
    unreachable: Vec<Missing>,
    refused: Vec<Missing>,
    /// Age of the peer figures (the last poll), in milliseconds.
    age_ms: Option<u64>,
    totals: Totals,
    providers: Vec<ProviderAggregate>,
    nodes: Vec<NodeEntry>,
}

/// `GET /api/cluster/status` (admin token or cluster secret required): every node's metrics (this one fresh, peers
/// from the last poll, refreshed when older than 15 s) with coverage and the nodes that did not answer.
pub async fn status(worker: &Rc<Worker>, head: &RequestHead) -> Response {
    if let Err(refusal) = authorize_view(worker, head) {
        return refusal.into();
    }
    let body = cluster_status_of(worker, None).await;
    Response::json(
        200,
        sonic_rs::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// The cluster view for the dashboard (its caller checked the dashboard's access): as `/api/cluster/status`, with
/// only `profile`'s chains and providers when one is named.
pub async fn dashboard_view(worker: &Rc<Worker>, profile: Option<&str>) -> Response {
    let body = cluster_status_of(worker, profile).await;
    Response::json(
        200,
        sonic_rs::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

async fn cluster_status_of(worker: &Rc<Worker>, profile: Option<&str>) -> ClusterStatus {
    let cluster = CLUSTER.get().filter(|c| c.settings.enabled()).cloned();
    if let Some(cluster) = &cluster {
        let stale = lock(&cluster.view)
            .polled_at
            .is_none_or(|t| t.elapsed() >= STATUS_CACHE);
        let sender = lock(&cluster.refresh).clone();
        if let (true, Some(sender)) = (stale, sender) {
            let (tx, rx) = oneshot::channel();
            if sender.send(tx).is_ok() {
                let _ = monoio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), rx).await;
            }
        }
    }
    let me = node_report(worker).await;
    let view = cluster
        .as_ref()
        .map(|c| lock(&c.view).clone())
        .unwrap_or_default();
    let mut nodes = vec![NodeEntry {
        node_id: me.node_id,
        region: me.region,
        address: None,
        is_self: true,
        version: me.version,
        uptime_s: me.uptime_s,
        metrics: me.metrics,
    }];
    for m in view.members.values() {
        nodes.push(NodeEntry {
            node_id: m.report.node_id.clone(),
            region: m.report.region.clone(),
            address: Some(m.addr.to_string()),
            is_self: false,
            version: m.report.version.clone(),
            uptime_s: m.report.uptime_s,
            metrics: m.report.metrics.clone(),
        });
    }
    if let Some(p) = profile {
        // A profile's view counts that profile's traffic only.
        for n in &mut nodes {
            n.metrics.chains.retain(|c| c.profile == p);
            let providers = n.metrics.chains.iter().flat_map(|c| &c.providers);
            n.metrics.requests = providers.clone().map(|p| p.requests).sum();
            n.metrics.errors = providers.map(|p| p.failures).sum();
        }
    }
    let mut providers: BTreeMap<(String, String, String), ProviderAggregate> = BTreeMap::new();
    for n in &nodes {
        for c in &n.metrics.chains {
            for p in &c.providers {
                let key = (c.profile.clone(), c.name.clone(), p.id.clone());
                let agg = providers.entry(key).or_insert_with(|| ProviderAggregate {
                    profile: c.profile.clone(),
                    chain: c.name.clone(),
                    id: p.id.clone(),
                    ..Default::default()
                });
                agg.requests += p.requests;
                agg.successes += p.successes;
                agg.failures += p.failures;
                agg.states.insert(n.node_id.clone(), p.state.clone());
            }
        }
    }
    let responding = nodes.len();
    let total = responding + view.unreachable.len();
    let expected = cluster
        .as_ref()
        .and_then(|c| c.settings.expected)
        .unwrap_or(total);
    ClusterStatus {
        enabled: cluster.is_some(),
        node_id: worker.shared.node_id.clone(),
        status: cluster_status(responding, expected),
        coverage: Coverage { responding, total },
        totals: Totals {
            requests: nodes.iter().map(|n| n.metrics.requests).sum(),
            errors: nodes.iter().map(|n| n.metrics.errors).sum(),
            connections: nodes.iter().map(|n| n.metrics.connections).sum(),
        },
        unreachable: view.unreachable,
        refused: view.refused,
        age_ms: view.polled_at.map(|t| t.elapsed().as_millis() as u64),
        providers: providers.into_values().collect(),
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_thresholds() {
        assert_eq!(cluster_status(3, 3), "healthy");
        assert_eq!(cluster_status(4, 3), "healthy");
        assert_eq!(cluster_status(2, 3), "degraded");
        assert_eq!(cluster_status(1, 3), "critical");
        assert_eq!(cluster_status(2, 4), "critical");
        assert_eq!(cluster_status(3, 4), "degraded");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches(b"s3cret", b"s3cret"));
        assert!(!secret_matches(b"s3cre", b"s3cret"));
        assert!(!secret_matches(b"s3cret!", b"s3cret"));
        assert!(!secret_matches(b"S3cret", b"s3cret"));
        assert!(!secret_matches(b"", b"s3cret"));
    }

    #[test]
    fn authorization_is_read_from_the_head() {
        let head =
            b"GET /api/cluster/node HTTP/1.1\r\nHost: x\r\nauthorization:  Lasso-HMAC t=1 \r\n\r\n";
        assert_eq!(authorization(head).as_deref(), Some("Lasso-HMAC t=1"));
        let none = b"GET /api/cluster/node HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(authorization(none), None);
    }

    #[test]
    fn seeds_resolve_like_dns_answers() {
        let settings = Settings {
            seeds: split_list("127.0.0.1:4001, 127.0.0.1:4002\n[::1]:4003 127.0.0.1"),
            port: 4000,
            ..Default::default()
        };
        let addrs = resolve(&settings).unwrap();
        let want: Vec<SocketAddr> = [
            "127.0.0.1:4000",
            "127.0.0.1:4001",
            "127.0.0.1:4002",
            "[::1]:4003",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(addrs, want);
        let bad = Settings {
            seeds: vec!["no-such-host.invalid:1".into()],
            ..Default::default()
        };
        assert!(resolve(&bad).is_err());
    }

    #[test]
    fn dns_answers_take_the_cluster_port() {
        let settings = Settings {
            dns_query: Some("localhost".into()),
            port: 4321,
            ..Default::default()
        };
        let addrs = resolve(&settings).unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 4321 && a.ip().is_loopback()),
            "{addrs:?}"
        );
    }

    #[test]
    fn answers_split_on_content_length() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(split_answer(full), Some((200, Some(b"{}".to_vec()))));
        let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}";
        assert_eq!(split_answer(partial), Some((200, None)));
        assert_eq!(split_answer(b"HTTP/1.1 2"), None);
    }
}
