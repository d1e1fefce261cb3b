//! Fault injection and counters of the mock provider. [`Faults`] is the run-time-changeable part of its behaviour
//! (error/429/reset/hang/garbage rates, head lag, chain-id override, stalled head, per-method latency distributions,
//! the `eth_getLogs` size knob); the control endpoint merges JSON patches into it. [`Counters`] are the numbers a
//! test reads back (requests per method, open WS connections and subscriptions, faults injected).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rng::Rng;

/// A latency distribution, e.g. `{"fixed_ms": 5}`, `{"uniform": {"min_ms": 1, "max_ms": 9}}`,
/// `{"lognormal": {"median_ms": 20, "sigma": 0.6}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    FixedMs(f64),
    Uniform { min_ms: f64, max_ms: f64 },
    Lognormal { median_ms: f64, sigma: f64 },
}

impl Latency {
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        let ms = match *self {
            Latency::FixedMs(ms) => ms,
            Latency::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms).max(0.0) * rng.f64(),
            Latency::Lognormal { median_ms, sigma } => rng.lognormal(median_ms, sigma),
        };
        Duration::from_micros((ms.clamp(0.0, 600_000.0) * 1000.0) as u64)
    }
}

/// What the mock does wrong, changeable at run time. Rates are probabilities per HTTP request in [0, 1].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// HTTP 500 with a JSON-RPC error (-32603).
    pub error_rate: f64,
    /// HTTP 200 with a JSON-RPC error (-32000) per call.
    pub rpc_error_rate: f64,
    /// HTTP 429 with `Retry-After: retry_after_s` and a JSON-RPC error (-32005).
    pub rate_limit_rate: f64,
    pub retry_after_s: u64,
    /// Close the connection with a TCP RST instead of answering.
    pub reset_rate: f64,
    /// Never answer (until the client closes, or `hang_ms`).
    pub hang_rate: f64,
    /// Hang every request.
    pub hang: bool,
    pub hang_ms: u64,
    /// HTTP 200 with a body that is not JSON.
    pub garbage_rate: f64,
    /// Report a head this many blocks behind the real one (eth_blockNumber, "latest", newHeads).
    pub lag_blocks: u64,
    /// Answer eth_chainId / net_version with this id instead of the chain's.
    pub chain_id: Option<u64>,
    /// Freeze the head.
    pub stall_head: bool,
    /// Added latency per method name; "*" applies to methods without their own entry.
    pub latency: BTreeMap<String, Latency>,
    /// When > 0, every eth_getLogs answer is padded to about this many bytes.
    pub logs_response_bytes: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            rpc_error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_s: 1,
            reset_rate: 0.0,
            hang_rate: 0.0,
            hang: false,
            hang_ms: 30_000,
            garbage_rate: 0.0,
            lag_blocks: 0,
            chain_id: None,
            stall_head: false,
            latency: BTreeMap::new(),
            logs_response_bytes: 0,
        }
    }
}

impl Faults {
    /// The added latency for a call of `method`.
    pub fn latency_for(&self, method: &str, rng: &mut Rng) -> Duration {
        match self.latency.get(method).or_else(|| self.latency.get("*")) {
            Some(l) => l.sample(rng),
            None => Duration::ZERO,
        }
    }
}

/// One-shot actions a control request can carry besides fault settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    /// Restore every fault to its default first.
    pub reset: bool,
    pub reset_counters: bool,
    /// Close every open WebSocket connection.
    pub drop_ws: bool,
    /// Replace the last N blocks (new hashes from head - N + 1 on).
    pub reorg: Option<u64>,
}

/// Applies a control patch to `current`: action keys (`reset`, `reset_counters`, `drop_ws`, `reorg`) are taken out,
/// `latency` entries are merged per method (`null` removes one; `"latency": null` clears all), every other key
/// replaces the field. Unknown keys and wrong types are errors.
pub fn apply_patch(current: &Faults, patch: &Value) -> Result<(Faults, Actions), String> {
    let Value::Object(obj) = patch else {
        return Err("control body must be a JSON object".into());
    };
    let mut obj = obj.clone();
    let mut actions = Actions::default();
    let take_bool = |obj: &mut Map<String, Value>, k: &str| -> Result<bool, String> {
        match obj.remove(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(format!("{k}: expected a boolean, got {v}")),
        }
    };
    actions.reset = take_bool(&mut obj, "reset")?;
    actions.reset_counters = take_bool(&mut obj, "reset_counters")?;
    actions.drop_ws = take_bool(&mut obj, "drop_ws")?;
    actions.reorg = match obj.remove("reorg") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&d| d > 0)
                .ok_or_else(|| format!("reorg: expected a depth >= 1, got {v}"))?,
        ),
    };
    let base = if actions.reset {
        Faults::default()
    } else {
        current.clone()
    };
    let mut merged = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    let m = merged
        .as_object_mut()
        .expect("Faults serializes to an object");
    for (k, v) in obj {
        if k == "latency" {
            match v {
                Value::Null => {
                    m.insert(k, Value::Object(Map::new()));
                }
                Value::Object(entries) => {
                    let lat = m
                        .entry("latency")
                        .or_insert_with(|| Value::Object(Map::new()));
                    let lat = lat.as_object_mut().expect("latency is an object");
                    for (method, spec) in entries {
                        if spec.is_null() {
                            lat.remove(&method);
                        } else {
                            lat.insert(method, spec);
                        }
                    }
                }
                other => return Err(format!("latency: expected an object, got {other}")),
            }
        } else {
            m.insert(k, v);
        }
    }
    let faults: Faults = serde_json::from_value(merged).map_err(|e| format!("control: {e}"))?;
    for (name, rate) in [
        ("error_rate", faults.error_rate),
        ("rpc_error_rate", faults.rpc_error_rate),
        ("rate_limit_rate", faults.rate_limit_rate),
        ("reset_rate", faults.reset_rate),
        ("hang_rate", faults.hang_rate),
        ("garbage_rate", faults.garbage_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{name}: {rate} is not in [0, 1]"));
        }
    }
    Ok((faults, actions))
}

/// Methods counted individually; everything else is "other".
pub const COUNTED_METHODS: &[&str] = &[
    "eth_blockNumber",
    "eth_chainId",
    "net_version",
    "web3_clientVersion",
    "eth_syncing",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_feeHistory",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_call",
    "eth_estimateGas",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getBlockTransactionCountByNumber",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getLogs",
    "eth_sendRawTransaction",
    "eth_subscribe",
    "eth_unsubscribe",
    "mock_bytes",
];

/// Live counters, shared by every worker.
#[derive(Debug)]
pub struct Counters {
    per_method: Vec<AtomicU64>,
    pub http_requests: AtomicU64,
    pub rpc_calls: AtomicU64,
    pub connections: AtomicU64,
    pub ws_messages: AtomicU64,
    pub ws_connections_open: AtomicI64,
    pub ws_subscriptions_open: AtomicI64,
    pub notifications: AtomicU64,
    pub injected_errors: AtomicU64,
    pub injected_rpc_errors: AtomicU64,
    pub injected_rate_limits: AtomicU64,
    pub injected_resets: AtomicU64,
    pub injected_hangs: AtomicU64,
    pub injected_garbage: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            per_method: (0..=COUNTED_METHODS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            http_requests: AtomicU64::new(0),
            rpc_calls: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            ws_messages: AtomicU64::new(0),
            ws_connections_open: AtomicI64::new(0),
            ws_subscriptions_open: AtomicI64::new(0),
            notifications: AtomicU64::new(0),
            injected_errors: AtomicU64::new(0),
            injected_rpc_errors: AtomicU64::new(0),
            injected_rate_limits: AtomicU64::new(0),
            injected_resets: AtomicU64::new(0),
            injected_hangs: AtomicU64::new(0),
            injected_garbage: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

#[inline]
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn count_method(&self, method: &str) {
        let i = COUNTED_METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(COUNTED_METHODS.len());
        bump(&self.per_method[i]);
        bump(&self.rpc_calls);
    }

    pub fn method_count(&self, method: &str) -> u64 {
        let i = COUNTED_METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(COUNTED_METHODS.len());
        self.per_method[i].load(Ordering::Relaxed)
    }

    /// Zeroes every counter but the gauges (open connections and subscriptions).
    pub fn reset(&self) {
        for c in &self.per_method {
            c.store(0, Ordering::Relaxed);
        }
        for c in [
            &self.http_requests,
            &self.rpc_calls,
            &self.connections,
            &self.ws_messages,
            &self.notifications,
            &self.injected_errors,
            &self.injected_rpc_errors,
            &self.injected_rate_limits,
            &self.injected_resets,
            &self.injected_hangs,
            &self.injected_garbage,
            &self.bytes_out,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Value {
        let r = |c: &AtomicU64| Value::from(c.load(Ordering::Relaxed));
        let mut per = Map::new();
        for (i, m) in COUNTED_METHODS.iter().enumerate() {
            let v = self.per_method[i].load(Ordering::Relaxed);
            if v > 0 {
                per.insert(m.to_string(), v.into());
            }
        }
        let other = self.per_method[COUNTED_METHODS.len()].load(Ordering::Relaxed);
        if other > 0 {
            per.insert("other".into(), other.into());
        }
        serde_json::json!({
            "requests": per,
            "http_requests": r(&self.http_requests),
            "rpc_calls": r(&self.rpc_calls),
            "connections": r(&self.connections),
            "ws_messages": r(&self.ws_messages),
            "ws_connections_open": self.ws_connections_open.load(Ordering::Relaxed),
            "ws_subscriptions_open": self.ws_subscriptions_open.load(Ordering::Relaxed),
            "notifications": r(&self.notifications),
            "injected": {
                "errors": r(&self.injected_errors),
                "rpc_errors": r(&self.injected_rpc_errors),
                "rate_limits": r(&self.injected_rate_limits),
                "resets": r(&self.injected_resets),
                "hangs": r(&self.injected_hangs),
                "garbage": r(&self.injected_garbage),
            },
            "bytes_out": r(&self.bytes_out),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_merges_and_validates() {
        let f = Faults::default();
        let (f, a) = apply_patch(
            &f,
            &json!({"error_rate": 0.5, "latency": {"eth_call": {"fixed_ms": 5}}}),
        )
        .unwrap();
        assert_eq!(f.error_rate, 0.5);
        assert_eq!(f.latency["eth_call"], Latency::FixedMs(5.0));
        assert_eq!(a, Actions::default());
        let (f, _) =
            apply_patch(&f, &json!({"latency": {"*": {"lognormal": {"median_ms": 2, "sigma": 0.3}}, "eth_call": null}}))
                .unwrap();
        assert!(!f.latency.contains_key("eth_call"));
        assert!(f.latency.contains_key("*"));
        assert_eq!(f.error_rate, 0.5);
        let (f, a) = apply_patch(
            &f,
            &json!({"reset": true, "drop_ws": true, "reorg": 3, "lag_blocks": 2}),
        )
        .unwrap();
        assert_eq!(
            f,
            Faults {
                lag_blocks: 2,
                ..Faults::default()
            }
        );
        assert!(a.reset && a.drop_ws && a.reorg == Some(3));
        assert!(apply_patch(&f, &json!({"eror_rate": 1})).is_err());
        assert!(apply_patch(&f, &json!({"error_rate": 2.0})).is_err());
        assert!(apply_patch(&f, &json!({"latency": {"x": {"fixed": 1}}})).is_err());
    }

    #[test]
    fn latency_samples() {
        let mut rng = Rng::new(1);
        assert_eq!(
            Latency::FixedMs(5.0).sample(&mut rng),
            Duration::from_millis(5)
        );
        for _ in 0..100 {
            let d = Latency::Uniform {
                min_ms: 1.0,
                max_ms: 2.0,
            }
            .sample(&mut rng);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(2));
        }
    }
}
