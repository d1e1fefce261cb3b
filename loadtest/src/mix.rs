//! Method mixes: weighted lists of JSON-RPC calls with parameter templates (YAML files; built-ins `default`,
//! `small`, `reads`, `block-number`, `get-logs` live in `loadtest/mixes/`), the live-head information templates are filled
//! from (discovered from the target with `eth_blockNumber` + `eth_getBlockByNumber(head, true)`, or synthetic), and a
//! pre-rendered pool of request bodies so that building a request on the hot path is two `memcpy`s.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain;
use crate::rng::Rng;

/// A mix file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    pub name: String,
    pub methods: Vec<MixEntry>,
}

/// One weighted call template.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    pub method: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "empty_params")]
    pub params: Value,
}

fn one() -> u32 {
    1
}

fn empty_params() -> Value {
    Value::Array(Vec::new())
}

const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../mixes/default.yml")),
    ("small", include_str!("../mixes/small.yml")),
    ("reads", include_str!("../mixes/reads.yml")),
    ("block-number", include_str!("../mixes/block-number.yml")),
    ("get-logs", include_str!("../mixes/get-logs.yml")),
];

/// Names of the built-in mixes.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

impl Mix {
    /// A built-in mix by name, a YAML/JSON file path, or `method:NAME` for a single parameterless method.
    pub fn load(spec: &str) -> Result<Mix, String> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
            return Mix::parse(text).map_err(|e| format!("built-in mix {spec}: {e}"));
        }
        if let Some(m) = spec.strip_prefix("method:") {
            return Ok(Mix {
                name: m.to_string(),
                methods: vec![MixEntry {
                    method: m.to_string(),
                    weight: 1,
                    params: empty_params(),
                }],
            });
        }
        let text = std::fs::read_to_string(spec).map_err(|e| {
            format!(
                "{spec}: {e} (built-in mixes: {})",
                builtin_names().join(", ")
            )
        })?;
        Mix::parse(&text).map_err(|e| format!("{spec}: {e}"))
    }

    pub fn parse(text: &str) -> Result<Mix, String> {
        let m: Mix = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        if m.methods.is_empty() || m.methods.iter().all(|e| e.weight == 0) {
            return Err("a mix needs at least one method with weight > 0".into());
        }
        Ok(m)
    }
}

/// Values templates are filled from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeadInfo {
    pub head: u64,
    pub block_hash: String,
    pub tx_hashes: Vec<String>,
    pub addresses: Vec<String>,
    pub contracts: Vec<String>,
    /// "live" when discovered from the target, "synthetic" otherwise.
    pub source: String,
}

impl HeadInfo {
    /// Values that need no target (the mock provider answers any of them).
    pub fn synthetic() -> HeadInfo {
        let c = chain::Chain::new(chain::ChainConfig::default());
        let head = c.head();
        HeadInfo {
            head,
            block_hash: c.block_hash(head),
            tx_hashes: (0..32)
                .map(|i| c.tx_hash(head - 1 - i % 8, i as u32))
                .collect(),
            addresses: (0..32).map(|k| chain::address(100_000 + k * 7)).collect(),
            contracts: (0..chain::CONTRACTS).map(chain::contract).collect(),
            source: "synthetic".into(),
        }
    }

    /// Reads the head block (with full transactions) from an HTTP JSON-RPC endpoint.
    pub fn discover(url: &str, timeout: Duration) -> Result<HeadInfo, String> {
        let bn = crate::client::rpc_call(url, "eth_blockNumber", Value::Array(vec![]), timeout)
            .map_err(|e| e.to_string())?;
        let head = bn
            .as_str()
            .and_then(chain::parse_quantity)
            .ok_or_else(|| format!("eth_blockNumber returned {bn}"))?;
        let block = crate::client::rpc_call(
            url,
            "eth_getBlockByNumber",
            serde_json::json!([chain::quantity(head), true]),
            timeout,
        )
        .map_err(|e| e.to_string())?;
        let mut info = HeadInfo::synthetic();
        info.head = head;
        info.source = "live".into();
        if let Some(h) = block.get("hash").and_then(|v| v.as_str()) {
            info.block_hash = h.to_string();
        }
        let txs = block
            .get("transactions")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let mut hashes = Vec::new();
        let mut addrs = Vec::new();
        let mut contracts = Vec::new();
        for tx in &txs {
            if let Some(h) = tx.get("hash").and_then(|v| v.as_str()) {
                hashes.push(h.to_string());
            }
            if let Some(f) = tx.get("from").and_then(|v| v.as_str()) {
                addrs.push(f.to_string());
            }
            let input_len = tx
                .get("input")
                .and_then(|v| v.as_str())
                .map(|s| s.len())
                .unwrap_or(0);
            if let Some(t) = tx.get("to").and_then(|v| v.as_str()) {
                if input_len > 10 {
                    contracts.push(t.to_string())
                } else {
                    addrs.push(t.to_string())
                }
            }
        }
        for (dst, src) in [
            (&mut info.tx_hashes, hashes),
            (&mut info.addresses, addrs),
            (&mut info.contracts, contracts),
        ] {
            if !src.is_empty() {
                let mut s = src;
                s.sort();
                s.dedup();
                s.truncate(256);
                *dst = s;
            }
        }
        Ok(info)
    }

    fn pick<'a>(list: &'a [String], rng: &mut Rng, fallback: &'a str) -> &'a str {
        if list.is_empty() {
            fallback
        } else {
            &list[rng.below(list.len() as u64) as usize]
        }
    }
}

/// One pre-rendered call: the method's index in the mix and the request text after the id
/// (`"method":"..","params":[..]}`).
#[derive(Clone, Debug)]
pub struct PoolEntry {
    pub entry: usize,
    pub tail: Vec<u8>,
}

fn fill(v: &Value, vars: &dyn Fn(&str) -> Option<String>) -> Value {
    match v {
        Value::String(s) if s.starts_with('{') && s.ends_with('}') => {
            match vars(&s[1..s.len() - 1]) {
                Some(x) => Value::String(x),
                None => v.clone(),
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, vars)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), fill(x, vars))).collect())
        }
        _ => v.clone(),
    }
}

/// Renders `size` calls drawn from the mix by weight, each with fresh template values.
pub fn build_pool(mix: &Mix, head: &HeadInfo, size: usize, seed: u64) -> Vec<PoolEntry> {
    let mut rng = Rng::new(seed);
    let total: u64 = mix.methods.iter().map(|e| e.weight as u64).sum();
    let mut out = Vec::with_capacity(size);
    for _ in 0..size.max(1) {
        let mut x = rng.below(total);
        let mut idx = 0;
        for (i, e) in mix.methods.iter().enumerate() {
            if x < e.weight as u64 {
                idx = i;
                break;
            }
            x -= e.weight as u64;
        }
        let e = &mix.methods[idx];
        let recent = head.head.saturating_sub(rng.below(16));
        let old = head.head.saturating_sub(100 + rng.below(9_900));
        let address = HeadInfo::pick(
            &head.addresses,
            &mut rng,
            "0x0000000000000000000000000000000000000001",
        )
        .to_string();
        let contract = HeadInfo::pick(
            &head.contracts,
            &mut rng,
            "0x0000000000000000000000000000000000000002",
        )
        .to_string();
        let tx_hash = HeadInfo::pick(&head.tx_hashes, &mut rng, &head.block_hash).to_string();
        let word = format!(
            "0x{:016x}{:016x}{:016x}{:016x}",
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64()
        );
        let holder = HeadInfo::pick(
            &head.addresses,
            &mut rng,
            "0x0000000000000000000000000000000000000001",
        )
        .to_string();
        let vars = |name: &str| -> Option<String> {
            Some(match name {
                "head" => chain::quantity(head.head),
                "recent_block" => chain::quantity(recent),
                "old_block" => chain::quantity(old),
                "block_hash" => head.block_hash.clone(),
                "tx_hash" => tx_hash.clone(),
                "address" => address.clone(),
                "contract" => contract.clone(),
                "balance_of_calldata" => {
                    format!("0x70a08231{:0>64}", holder.trim_start_matches("0x"))
                }
                "random_word" => word.clone(),
                _ => return None,
            })
        };
        let params = fill(&e.params, &vars);
        let tail = format!(
            "\"method\":{},\"params\":{}}}",
            Value::String(e.method.clone()),
            params
        );
        out.push(PoolEntry {
            entry: idx,
            tail: tail.into_bytes(),
        });
    }
    out
}

/// Appends `{"jsonrpc":"2.0","id":ID,` + tail.
#[inline]
pub fn render_call(out: &mut Vec<u8>, id: u64, tail: &[u8]) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_default_has_16_entries() {
        for n in builtin_names() {
            Mix::load(n).unwrap();
        }
        assert_eq!(Mix::load("default").unwrap().methods.len(), 16);
        assert_eq!(Mix::load("reads").unwrap().methods.len(), 8);
        assert!(Mix::load("/nonexistent.yml").is_err());
        assert_eq!(
            Mix::load("method:eth_chainId").unwrap().methods[0].method,
            "eth_chainId"
        );
    }

    #[test]
    fn pool_renders_valid_json_with_filled_templates() {
        let mix = Mix::load("default").unwrap();
        let head = HeadInfo::synthetic();
        let pool = build_pool(&mix, &head, 500, 1);
        let mut seen = std::collections::HashSet::new();
        for (i, p) in pool.iter().enumerate() {
            let mut b = Vec::new();
            render_call(&mut b, i as u64, &p.tail);
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["id"], i as u64);
            assert!(
                !String::from_utf8_lossy(&b).contains("\"{"),
                "unfilled template in {}",
                String::from_utf8_lossy(&b)
            );
            seen.insert(v["method"].as_str().unwrap().to_string());
        }
        assert!(seen.len() >= 12, "{seen:?}");
    }
}
