//! Rate limits shared by every node through Redis (`access.redis_url`): a key's `requests_per_s` holds across the
//! cluster, on top of the per-core buckets of [`crate::access::limits`] (which still hold per node, and are what a
//! worker serves from when Redis is slow or down).
//!
//! Fixed windows of one second: the counter `lasso:rl:v1:<key id>:<unix second>` counts the requests granted
//! cluster-wide in that second (`INCRBY`, and `PEXPIRE` of 2 s when the call created it). The hot path does not
//! talk to Redis per request: each worker reserves a batch of tokens ahead of use (`ACCESS_REDIS_BATCH_FRACTION` of
//! the limit, at least the request's size), serves from that local allowance without any I/O, and only awaits
//! Redis (monoio: the core keeps serving other connections) when its allowance for the current second is spent. A
//! reservation grants `min(batch, limit - granted before)`; a short grant marks the key exhausted on this worker
//! until the next second (refused locally with `retry_after_ms` = the rest of the second, no Redis call). So the
//! tokens granted per second across all nodes never exceed the limit; tokens reserved but unused at the end of a
//! second are lost (a node can be refused while another holds a partial batch: at most one batch per worker).
//!
//! Fail-open: a Redis command that fails, times out (`cache` Redis defaults: 20 ms, circuit after 3 failures for
//! 1 s) or is skipped by the open circuit lets the request through (it already passed the local share) and is
//! counted in `lasso_access_redis_fail_open_total`. Compute-unit limits and per-address limits stay per node.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::redis::Redis;
use crate::config::cache::RedisSettings;
use crate::config::defaults::{ACCESS_MAX_TRACKED_CLIENTS, ACCESS_REDIS_BATCH_FRACTION};
use crate::error::RpcError;

static FAIL_OPEN: AtomicU64 = AtomicU64::new(0);
static IN_USE: AtomicBool = AtomicBool::new(false);

/// Requests let through because Redis did not answer (fail-open), process-wide.
pub fn fail_open_total() -> u64 {
    FAIL_OPEN.load(Ordering::Relaxed)
}

/// Whether shared limits were used by this process (their metric is shown from then on).
pub fn in_use() -> bool {
    IN_USE.load(Ordering::Relaxed)
}

/// This worker's allowance for one key in one second.
#[derive(Clone, Copy)]
struct Allowance {
    second: u64,
    left: f64,
    exhausted: bool,
}

struct Client {
    addr: String,
    redis: Rc<Redis>,
}

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
    static ALLOWANCES: RefCell<HashMap<String, Allowance>> = RefCell::new(HashMap::new());
}

/// This worker's client for `settings` (a new one when the address changed with a reload).
fn client(settings: &RedisSettings) -> Rc<Redis> {
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        match &*c {
            Some(client) if client.addr == settings.addr => client.redis.clone(),
            _ => {
                let redis = Redis::new(settings.clone(), 64);
                *c = Some(Client {
                    addr: settings.addr.clone(),
                    redis: redis.clone(),
                });
                redis
            }
        }
    })
}

/// Takes `requests` from this worker's allowance of `key_id` for `second`: `Some(true)` taken, `Some(false)` the key
/// is spent cluster-wide this second, `None` the allowance is short (reserve more).
fn take(key_id: &str, second: u64, requests: f64) -> Option<bool> {
    ALLOWANCES.with(|a| {
        let mut a = a.borrow_mut();
        if a.len() >= ACCESS_MAX_TRACKED_CLIENTS && !a.contains_key(key_id) {
            a.retain(|_, v| v.second == second);
            if a.len() >= ACCESS_MAX_TRACKED_CLIENTS {
                a.clear();
            }
        }
        let entry = a.entry(key_id.to_string()).or_insert(Allowance {
            second,
            left: 0.0,
            exhausted: false,
        });
        if entry.second != second {
            *entry = Allowance {
                second,
                left: 0.0,
                exhausted: false,
            };
        }
        if entry.left >= requests {
            entry.left -= requests;
            Some(true)
        } else if entry.exhausted {
            Some(false)
        } else {
            None
        }
    })
}

/// Adds `granted` of `batch` reserved tokens to the allowance of `key_id` for `second`.
fn grant(key_id: &str, second: u64, granted: f64, batch: f64) {
    ALLOWANCES.with(|a| {
        let mut a = a.borrow_mut();
        if let Some(entry) = a.get_mut(key_id).filter(|e| e.second == second) {
            entry.left += granted;
            entry.exhausted |= granted < batch;
        }
    })
}

/// Charges one request of `requests` calls (a batch counts each) to `key_id`'s shared limit of `limit` requests per
/// second, through Redis `settings`.
pub async fn charge(
    settings: &RedisSettings,
    key_id: &str,
    limit: f64,
    requests: f64,
) -> Result<(), RpcError> {
    if limit <= 0.0 {
        return Ok(());
    }
    IN_USE.store(true, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let second = now.as_secs();
    let rest_ms = 1000 - u64::from(now.subsec_millis());
    let refused = || RpcError::RateLimited {
        retry_after_ms: rest_ms,
    };
    match take(key_id, second, requests) {
        Some(true) => return Ok(()),
        Some(false) => return Err(refused()),
        None => {}
    }
    let batch = (limit * ACCESS_REDIS_BATCH_FRACTION)
        .ceil()
        .max(requests)
        .max(1.0);
    let counter = format!("lasso:rl:v1:{key_id}:{second}");
    let redis = client(settings);
    let Some(total) = redis
        .incr_window(counter.as_bytes(), batch as i64, Duration::from_secs(2))
        .await
    else {
        FAIL_OPEN.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    let before = (total as f64 - batch).max(0.0);
    let granted = (limit.floor() - before).clamp(0.0, batch);
    grant(key_id, second, granted, batch);
    match take(key_id, second, requests) {
        Some(true) => Ok(()),
        // The second turned while Redis answered: the request counted in the old window.
        None if granted >= requests => Ok(()),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_serves_from_its_reservation_and_stops_after_a_short_grant() {
        let id = "unit-shared";
        assert_eq!(take(id, 7, 1.0), None, "nothing reserved yet");
        grant(id, 7, 2.0, 2.0);
        assert_eq!(take(id, 7, 1.0), Some(true));
        assert_eq!(take(id, 7, 1.0), Some(true));
        assert_eq!(take(id, 7, 1.0), None, "spent: reserve again");
        grant(id, 7, 1.0, 2.0);
        assert_eq!(take(id, 7, 1.0), Some(true));
        assert_eq!(
            take(id, 7, 1.0),
            Some(false),
            "short grant: spent this second"
        );
        assert_eq!(take(id, 8, 1.0), None, "a new second starts afresh");
        grant(id, 7, 5.0, 5.0);
        assert_eq!(
            take(id, 8, 1.0),
            None,
            "a late grant for an old second is dropped"
        );
    }
}
