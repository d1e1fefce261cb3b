//! Rate limits per key and per client address: token buckets in requests per second and compute units per second
//! (method weights from [`crate::access::weights`]), each with a burst of `burst_s` seconds of its rate. A batch
//! counts each member (its size in requests, the sum of its weights in compute units).
//!
//! Per core without locks on the request path: every worker thread keeps its own buckets (a thread-local table,
//! touched only by that core), each holding a share of the client's budget, rate and burst alike. A client starts
//! with `1 / workers` on every core. Rebalancing: each core adds up the demand it saw per client (requests asked
//! for, served or not) and, once per `ACCESS_REBALANCE_MS` (at that client's next request there), publishes it to a
//! process-wide table (the one lock, taken at most once per client, core and period) and takes its new share =
//! its demand / the demand all cores published for that client in the last two periods, never below
//! `ACCESS_MIN_SHARE` of an equal share. So a client whose traffic sits on one connection (one core) gets its whole
//! budget after a period, and clients spread over cores get shares by where their traffic lands; the sum of the
//! shares exceeds the budget by at most the idle cores' floors (`ACCESS_MIN_SHARE`, 10 % of an equal share each).
//! Tables are bounded: past `ACCESS_MAX_TRACKED_CLIENTS` entries, full buckets are forgotten first (a full bucket is
//! what a new one starts as).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::config::defaults::{ACCESS_MAX_TRACKED_CLIENTS, ACCESS_MIN_SHARE, ACCESS_REBALANCE_MS};
use crate::config::schema::{AccessSettings, ApiKey, RateLimit};
use crate::error::RpcError;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Requests and compute units of one client on this core, with this core's share of its budget.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    requests: Bucket,
    units: Bucket,
    /// This core's share of the client's budget (0..=1).
    share: f64,
    /// Requests asked for in the current period.
    demand: f64,
    period: Instant,
}

/// Demand per client and core, as last published: (demand, when).
type Demands = HashMap<Who, HashMap<ThreadId, (f64, Instant)>>;

static DEMANDS: Mutex<Option<Demands>> = Mutex::new(None);

/// Publishes this core's `demand` for `who` and returns its new share (see the module doc).
fn rebalance(who: &Who, demand: f64, workers: usize, now: Instant) -> f64 {
    let equal = 1.0 / workers.max(1) as f64;
    let fresh = Duration::from_millis(2 * ACCESS_REBALANCE_MS);
    let mut guard = DEMANDS.lock().unwrap_or_else(|e| e.into_inner());
    let table = guard.get_or_insert_with(HashMap::new);
    if table.len() >= ACCESS_MAX_TRACKED_CLIENTS && !table.contains_key(who) {
        table.retain(|_, cores| {
            cores
                .values()
                .any(|(_, at)| now.duration_since(*at) < fresh)
        });
        if table.len() >= ACCESS_MAX_TRACKED_CLIENTS {
            table.clear();
        }
    }
    let cores = table.entry(who.clone()).or_default();
    cores.insert(std::thread::current().id(), (demand, now));
    cores.retain(|_, (_, at)| now.duration_since(*at) < fresh);
    let total: f64 = cores.values().map(|(d, _)| d).sum();
    let share = if total > 0.0 { demand / total } else { equal };
    share.max(equal * ACCESS_MIN_SHARE).min(1.0)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Key(String),
    Ip(IpAddr),
}

/// A client as a request names it (no allocation): the key id borrowed from the configuration.
#[derive(Debug, Clone, Copy)]
enum WhoRef<'a> {
    Key(&'a str),
    Ip(IpAddr),
}

impl WhoRef<'_> {
    fn owned(self) -> Who {
        match self {
            WhoRef::Key(id) => Who::Key(id.to_string()),
            WhoRef::Ip(ip) => Who::Ip(ip),
        }
    }
}

/// This core's buckets: keys by id and addresses, each table bounded by `ACCESS_MAX_TRACKED_CLIENTS`; a request
/// finds its client's buckets without allocating.
#[derive(Default)]
struct Tables {
    /// By key id (from the configuration: Fx hashing).
    keys: rustc_hash::FxHashMap<String, Buckets>,
    ips: HashMap<IpAddr, Buckets>,
}

thread_local! {
    static TABLE: RefCell<Tables> = RefCell::new(Tables::default());
}

/// Refills `b` at `rate` per second up to `cap`.
fn refill(b: &mut Bucket, now: Instant, rate: f64, cap: f64) {
    b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(cap);
    b.last = now;
}

/// `None` when `b` holds `cost` (a cost above the whole burst passes on a full bucket and leaves it in debt), else
/// the wait in ms until it will.
fn wait_ms(b: &Bucket, rate: f64, cap: f64, cost: f64) -> Option<u64> {
    let need = cost.min(cap);
    (rate > 0.0 && b.tokens < need)
        .then(|| (((need - b.tokens) / rate) * 1000.0).ceil().max(1.0) as u64)
}

/// Charges `requests` and `units` to `who`'s buckets on this core at `now`; `Err(wait_ms)` when either is short.
fn charge_one(
    who: WhoRef<'_>,
    limit: &RateLimit,
    workers: usize,
    (requests, units): (f64, f64),
    now: Instant,
) -> Result<(), u64> {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        match who {
            WhoRef::Key(id) => {
                let b = match t.keys.get_mut(id) {
                    Some(b) => b,
                    None => {
                        make_room(&mut t.keys, limit);
                        t.keys
                            .entry(id.to_string())
                            .or_insert(fresh(limit, workers, now))
                    }
                };
                take(b, who, limit, workers, (requests, units), now)
            }
            WhoRef::Ip(ip) => {
                let b = match t.ips.get_mut(&ip) {
                    Some(b) => b,
                    None => {
                        make_room(&mut t.ips, limit);
                        t.ips.entry(ip).or_insert(fresh(limit, workers, now))
                    }
                };
                take(b, who, limit, workers, (requests, units), now)
            }
        }
    })
}

/// Rates and caps (requests/s, units/s, request cap, unit cap) of `limit` for a core holding `share` of it.
fn caps(limit: &RateLimit, share: f64) -> (f64, f64, f64, f64) {
    let (rr, ur) = (
        limit.requests_per_s * share,
        limit.compute_units_per_s * share,
    );
    (
        rr,
        ur,
        (rr * limit.burst_s).max(1.0),
        (ur * limit.burst_s).max(1.0),
    )
}

/// A new client's buckets on this core: full, with an equal share.
fn fresh(limit: &RateLimit, workers: usize, now: Instant) -> Buckets {
    let equal = 1.0 / workers.max(1) as f64;
    let (_, _, rcap, ucap) = caps(limit, equal);
    Buckets {
        requests: Bucket {
            tokens: rcap,
            last: now,
        },
        units: Bucket {
            tokens: ucap,
            last: now,
        },
        share: equal,
        demand: 0.0,
        period: now,
    }
}

/// Before adding a client to a full table: forget the full buckets (what a new one starts as), else everything.
fn make_room<K, S>(table: &mut HashMap<K, Buckets, S>, limit: &RateLimit) {
    if table.len() < ACCESS_MAX_TRACKED_CLIENTS {
        return;
    }
    table.retain(|_, b| {
        let (_, _, rcap, ucap) = caps(limit, b.share);
        b.requests.tokens < rcap && b.units.tokens < ucap
    });
    if table.len() >= ACCESS_MAX_TRACKED_CLIENTS {
        table.clear();
    }
}

/// Rebalances `b` when its period is over, refills it, and takes the cost when both buckets hold it.
fn take(
    b: &mut Buckets,
    who: WhoRef<'_>,
    limit: &RateLimit,
    workers: usize,
    (requests, units): (f64, f64),
    now: Instant,
) -> Result<(), u64> {
    b.demand += requests;
    if now.duration_since(b.period) >= Duration::from_millis(ACCESS_REBALANCE_MS) {
        b.share = rebalance(&who.owned(), b.demand, workers, now);
        b.demand = 0.0;
        b.period = now;
    }
    let (rr, ur, rcap, ucap) = caps(limit, b.share);
    refill(&mut b.requests, now, rr, rcap);
    refill(&mut b.units, now, ur, ucap);
    // Both checked before either is taken: a refused request costs nothing.
    let r = wait_ms(&b.requests, rr, rcap, requests);
    let u = wait_ms(&b.units, ur, ucap, units);
    if r.is_some() || u.is_some() {
        return Err(r.unwrap_or(0).max(u.unwrap_or(0)));
    }
    if rr > 0.0 {
        b.requests.tokens -= requests;
    }
    if ur > 0.0 {
        b.units.tokens -= units;
    }
    Ok(())
}

/// The client address a request counts against: the peer itself, or, when the peer is one of
/// `access.trusted_proxies`, `Fly-Client-IP` or else the right-most address of `X-Forwarded-For` that is not a
/// trusted proxy.
pub fn client_ip(
    access: &AccessSettings,
    peer: IpAddr,
    fly_client_ip: Option<&str>,
    forwarded_for: Option<&str>,
) -> IpAddr {
    if !access.trusted_proxies.contains(&peer) {
        return peer;
    }
    if let Some(ip) = fly_client_ip.and_then(|v| v.trim().parse().ok()) {
        return ip;
    }
    forwarded_for
        .into_iter()
        .flat_map(|v| v.rsplit(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .find(|ip| !access.trusted_proxies.contains(ip))
        .unwrap_or(peer)
}

/// Charges one request of `methods` (each member of a batch) to its key and to its client address.
pub fn charge(
    access: &AccessSettings,
    workers: usize,
    key: Option<&ApiKey>,
    ip: Option<IpAddr>,
    methods: &[Cow<'_, str>],
) -> Result<(), RpcError> {
    let requests = methods.len().max(1) as f64;
    let units: f64 = methods
        .iter()
        .map(|m| crate::access::weights::weight(m, &access.weights))
        .sum::<f64>()
        .max(1.0);
    let now = Instant::now();
    if let Some(key) = key {
        if let Some(limit) = key.limit.as_ref().or(access.per_key.as_ref()) {
            charge_one(WhoRef::Key(&key.id), limit, workers, (requests, units), now)
                .map_err(|ms| RpcError::RateLimited { retry_after_ms: ms })?;
        }
    }
    if let (Some(ip), Some(limit)) = (ip, access.per_ip.as_ref()) {
        charge_one(WhoRef::Ip(ip), limit, workers, (requests, units), now)
            .map_err(|ms| RpcError::RateLimited { retry_after_ms: ms })?;
    }
    Ok(())
}
