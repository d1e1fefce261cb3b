//! Rate limits per key and per client address: token buckets in requests per second and compute units per second
//! (method weights from [`crate::access::weights`]), each with a burst of `burst_s` seconds of its rate. A batch
//! counts each member (its size in requests, the sum of its weights in compute units).
//!
//! Per core without locks: every worker thread keeps its own buckets (a thread-local table, touched only by that
//! core) holding `1 / workers` of each budget, rate and burst alike. A client's connection lives on one core, so a
//! client using one connection gets that core's share; clients spread over connections (the kernel's SO_REUSEPORT
//! hash spreads them) get the whole budget. Rebalancing shares by demand across cores is not done yet: a client
//! with a single connection is held to `1 / workers` of its limit (run limited endpoints with few workers, or give
//! limits per worker count). Tables are bounded: past `ACCESS_MAX_TRACKED_CLIENTS` entries, full buckets are
//! forgotten first (a full bucket is what a new one starts as).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::config::defaults::ACCESS_MAX_TRACKED_CLIENTS;
use crate::config::schema::{AccessSettings, RateLimit};
use crate::error::RpcError;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Requests and compute units of one client.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    requests: Bucket,
    units: Bucket,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Key(String),
    Ip(IpAddr),
}

thread_local! {
    static TABLE: RefCell<HashMap<Who, Buckets>> = RefCell::new(HashMap::new());
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

fn charge_one(
    who: Who,
    limit: &RateLimit,
    workers: usize,
    requests: f64,
    units: f64,
) -> Result<(), u64> {
    let share = 1.0 / workers.max(1) as f64;
    let (rr, ur) = (
        limit.requests_per_s * share,
        limit.compute_units_per_s * share,
    );
    let (rcap, ucap) = ((rr * limit.burst_s).max(1.0), (ur * limit.burst_s).max(1.0));
    let now = Instant::now();
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() >= ACCESS_MAX_TRACKED_CLIENTS && !t.contains_key(&who) {
            t.retain(|_, b| b.requests.tokens < rcap && b.units.tokens < ucap);
            if t.len() >= ACCESS_MAX_TRACKED_CLIENTS {
                t.clear();
            }
        }
        let b = t.entry(who).or_insert(Buckets {
            requests: Bucket {
                tokens: rcap,
                last: now,
            },
            units: Bucket {
                tokens: ucap,
                last: now,
            },
        });
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
    })
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
    key_id: Option<&str>,
    ip: Option<IpAddr>,
    methods: &[&str],
) -> Result<(), RpcError> {
    let requests = methods.len().max(1) as f64;
    let units: f64 = methods
        .iter()
        .map(|m| crate::access::weights::weight(m, &access.weights))
        .sum::<f64>()
        .max(1.0);
    if let Some(id) = key_id {
        let limit = access
            .keys
            .iter()
            .find(|k| k.id == id)
            .and_then(|k| k.limit.as_ref())
            .or(access.per_key.as_ref());
        if let Some(limit) = limit {
            charge_one(Who::Key(id.to_string()), limit, workers, requests, units)
                .map_err(|ms| RpcError::RateLimited { retry_after_ms: ms })?;
        }
    }
    if let (Some(ip), Some(limit)) = (ip, access.per_ip.as_ref()) {
        charge_one(Who::Ip(ip), limit, workers, requests, units)
            .map_err(|ms| RpcError::RateLimited { retry_after_ms: ms })?;
    }
    Ok(())
}
