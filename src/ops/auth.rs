//! Authentication of the operator plane: the admin token (`LASSO_ADMIN_TOKEN`) and the cluster secret
//! (`LASSO_CLUSTER_SECRET`), compared in constant time, with every failed attempt logged (the endpoint, the client
//! address and the running count; never what was presented) and limited per client address: past
//! `server.auth_max_failures` failures within `server.auth_failure_window_ms`, that address gets 429 with
//! `Retry-After` from every authenticated endpoint, right secret or not, until its window ends. IPv6 addresses count
//! per /64 (one host holds a whole /64). The table is process-wide (shared by workers and generations) and bounded
//! (`AUTH_FAILURE_TRACKED_ADDRESSES`, the stalest entry forgotten first); it is touched only by requests that carry
//! or need a secret, never on the JSON-RPC path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::ServerSettings;
use crate::config::defaults::AUTH_FAILURE_TRACKED_ADDRESSES;
use crate::ops::error::OpsError;

/// Failures of one client address in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

fn table() -> &'static Mutex<HashMap<IpAddr, Window>> {
    static TABLE: OnceLock<Mutex<HashMap<IpAddr, Window>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The key an address counts under: itself for IPv4, its /64 for IPv6 (IPv4-mapped IPv6 as IPv4).
fn key_of(ip: IpAddr) -> IpAddr {
    crate::shard::peers::client_address(ip)
}

/// Seconds until `w` ends (at least 1).
fn retry_after(w: &Window, window: Duration, now: Instant) -> u64 {
    let left = (w.started + window).saturating_duration_since(now);
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

/// Checks one attempt from `peer` at `endpoint`: 429 while the address is over its limit (without looking at the
/// secret), 401 when `authenticated` is false (the failure counted and logged as a wrong `what`), `Ok` otherwise.
/// A connection without a known address is never limited, only checked.
pub fn check(
    peer: Option<IpAddr>,
    server: &ServerSettings,
    endpoint: &str,
    what: &'static str,
    authenticated: bool,
) -> Result<(), OpsError> {
    check_at(Instant::now(), peer, server, endpoint, what, authenticated)
}

fn check_at(
    now: Instant,
    peer: Option<IpAddr>,
    server: &ServerSettings,
    endpoint: &str,
    what: &'static str,
    authenticated: bool,
) -> Result<(), OpsError> {
    let Some(peer) = peer else {
        return if authenticated {
            Ok(())
        } else {
            Err(OpsError::unauthorized(format!("missing or wrong {what}")))
        };
    };
    let key = key_of(peer);
    let window = server.auth_failure_window;
    let limit = server.auth_max_failures.max(1);
    let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = table.get(&key).copied() {
        if now.duration_since(w.started) >= window {
            table.remove(&key);
        } else if w.failures >= limit {
            return Err(OpsError::too_many_attempts(retry_after(&w, window, now)));
        }
    }
    if authenticated {
        return Ok(());
    }
    if !table.contains_key(&key) && table.len() >= AUTH_FAILURE_TRACKED_ADDRESSES {
        table.retain(|_, w| now.duration_since(w.started) < window);
        if table.len() >= AUTH_FAILURE_TRACKED_ADDRESSES {
            if let Some(stalest) = table.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k) {
                table.remove(&stalest);
            }
        }
    }
    let w = table.entry(key).or_insert(Window {
        started: now,
        failures: 0,
    });
    w.failures += 1;
    let failures = w.failures;
    drop(table);
    if failures >= limit {
        tracing::warn!(
            endpoint,
            peer = %peer,
            failures,
            window_ms = window.as_millis() as u64,
            "authentication failed: {what} wrong or missing; this address is refused (429) until its window ends"
        );
    } else {
        tracing::warn!(
            endpoint,
            peer = %peer,
            failures,
            "authentication failed: {what} wrong or missing"
        );
    }
    Err(OpsError::unauthorized(format!("missing or wrong {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: u32, window_ms: u64) -> ServerSettings {
        let mut s = crate::config::load_str(
            "chains: { e: { chain_id: 1, providers: [ { id: a, url: \"http://x\" } ] } }",
            std::path::Path::new("t.yml"),
            &|_| None,
        )
        .unwrap()
        .server
        .clone();
        s.auth_max_failures = max;
        s.auth_failure_window = Duration::from_millis(window_ms);
        s
    }

    #[test]
    fn failures_past_the_limit_refuse_the_address_then_the_window_ends() {
        let s = settings(3, 2_000);
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        let other: IpAddr = "192.0.2.78".parse().unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..3 {
            let e = check_at(at(i), Some(ip), &s, "t", "token", false).unwrap_err();
            assert_eq!(e.status, 401);
        }
        // Over the limit: even the right secret waits, until the window (from the first failure) ends.
        let e = check_at(at(500), Some(ip), &s, "t", "token", true).unwrap_err();
        assert_eq!(e.status, 429);
        assert_eq!(e.header, Some(("Retry-After", "2".to_string())));
        assert!(check_at(at(500), Some(other), &s, "t", "token", true).is_ok());
        assert_eq!(
            check_at(at(1_999), Some(ip), &s, "t", "token", true)
                .unwrap_err()
                .status,
            429
        );
        assert!(check_at(at(2_000), Some(ip), &s, "t", "token", true).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(key_of(a), key_of(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key_of(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
