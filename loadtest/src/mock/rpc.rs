//! JSON-RPC method handling of the mock provider: request parsing (single and batch), block-tag resolution, and the
//! answers for the common read methods from the simulated [`crate::chain::Chain`]. Pure functions of the shared state,
//! used by both the HTTP and the WebSocket side.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::MockChain;
use super::faults::{Faults, bump};
use crate::chain::{LogFilter, hex, parse_quantity, quantity};
use crate::rng::{Rng, mix64};

/// Largest block range of one eth_getLogs.
pub const MAX_LOG_RANGE: u64 = 10_000;
/// Most logs in one eth_getLogs answer (without the size knob).
pub const MAX_LOGS: usize = 10_000;

/// A JSON-RPC request, borrowing from the body.
#[derive(Deserialize, Debug)]
pub struct Req<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
}

/// A JSON-RPC error: code and message.
pub type RpcError = (i64, String);

fn err(code: i64, msg: impl Into<String>) -> RpcError {
    (code, msg.into())
}

/// Appends `{"jsonrpc":"2.0","id":..,"result":..}`.
pub fn write_result(out: &mut String, id: Option<&RawValue>, result: &str) {
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(id.map(|r| r.get()).unwrap_or("null"));
    out.push_str(",\"result\":");
    out.push_str(result);
    out.push('}');
}

/// Appends `{"jsonrpc":"2.0","id":..,"error":{"code":..,"message":..}}`.
pub fn write_error(out: &mut String, id: Option<&RawValue>, code: i64, message: &str) {
    let _ = write!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{{\"code\":{code},\"message\":{}}}}}",
        id.map(|r| r.get()).unwrap_or("null"),
        Value::String(message.to_string())
    );
}

/// Handles an HTTP body (single request or batch). Returns the response body; `methods` receives each method
/// called (for per-method latency).
pub fn handle_body(
    state: &MockChain,
    faults: &Faults,
    rng: &mut Rng,
    body: &[u8],
    methods: &mut Vec<String>,
) -> String {
    let trimmed = body.trim_ascii_start();
    let mut out = String::new();
    if trimmed.first() == Some(&b'[') {
        let items: Vec<&RawValue> = match serde_json::from_slice(trimmed) {
            Ok(v) => v,
            Err(e) => {
                write_error(&mut out, None, -32700, &format!("parse error: {e}"));
                return out;
            }
        };
        if items.is_empty() {
            write_error(&mut out, None, -32600, "empty batch");
            return out;
        }
        out.reserve(items.len() * 128);
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            respond_one(state, faults, rng, item.get().as_bytes(), &mut out, methods);
        }
        out.push(']');
    } else {
        respond_one(state, faults, rng, trimmed, &mut out, methods);
    }
    out
}

/// Handles one request object, appending its response.
pub fn respond_one(
    state: &MockChain,
    faults: &Faults,
    rng: &mut Rng,
    raw: &[u8],
    out: &mut String,
    methods: &mut Vec<String>,
) {
    let req: Req = match serde_json::from_slice(raw) {
        Ok(r) => r,
        Err(e) => {
            let code = if e.is_syntax() || e.is_eof() {
                -32700
            } else {
                -32600
            };
            write_error(out, None, code, &format!("invalid request: {e}"));
            return;
        }
    };
    let Some(method) = req.method.as_deref() else {
        write_error(out, req.id, -32600, "missing method");
        return;
    };
    state.counters.count_method(method);
    methods.push(method.to_string());
    if rng.chance(faults.rpc_error_rate) {
        bump(&state.counters.injected_rpc_errors);
        write_error(out, req.id, -32000, "mock: injected rpc error");
        return;
    }
    let params: Vec<Value> = match req.params {
        None => Vec::new(),
        Some(p) => match serde_json::from_str::<Value>(p.get()) {
            Ok(Value::Array(a)) => a,
            Ok(Value::Null) => Vec::new(),
            Ok(v) => vec![v],
            Err(_) => Vec::new(),
        },
    };
    match call(state, faults, method, &params) {
        Ok(result) => write_result(out, req.id, &result),
        Err((code, msg)) => write_error(out, req.id, code, &msg),
    }
}

/// Resolves a block parameter (tag, quantity or EIP-1898 object) against the visible head.
pub fn block_arg(v: Option<&Value>, head: u64) -> Result<u64, RpcError> {
    match v {
        None | Some(Value::Null) => Ok(head),
        Some(Value::String(s)) => match s.as_str() {
            "latest" | "pending" => Ok(head),
            "safe" => Ok(head.saturating_sub(32)),
            "finalized" => Ok(head.saturating_sub(64)),
            "earliest" => Ok(0),
            other => parse_quantity(other)
                .ok_or_else(|| err(-32602, format!("invalid block number {other:?}"))),
        },
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| err(-32602, "invalid block number")),
        Some(Value::Object(o)) => block_arg(o.get("blockNumber"), head),
        Some(_) => Err(err(-32602, "invalid block parameter")),
    }
}

fn str_param(params: &[Value], i: usize) -> &str {
    params.get(i).and_then(|v| v.as_str()).unwrap_or("")
}

fn key_of(s: &str) -> u64 {
    mix64(s.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    }))
}

fn word(k: u64) -> String {
    hex(&crate::chain::derive_bytes::<32>(0x3030, k, 0))
}

fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    q.push_str(s);
    q.push('"');
    q
}

/// The result (as JSON text) of one call.
pub fn call(
    state: &MockChain,
    faults: &Faults,
    method: &str,
    params: &[Value],
) -> Result<String, RpcError> {
    let chain = &state.chain;
    let head = state.visible_head(faults);
    let chain_id = faults.chain_id.unwrap_or(chain.cfg.chain_id);
    Ok(match method {
        "eth_chainId" => quoted(&quantity(chain_id)),
        "net_version" => quoted(&chain_id.to_string()),
        "web3_clientVersion" => "\"lasso-mockprovider/0.1.0\"".to_string(),
        "eth_syncing" => "false".to_string(),
        "net_listening" => "true".to_string(),
        "eth_blockNumber" => quoted(&quantity(head)),
        "eth_gasPrice" => quoted(&quantity(2_000_000_000 + mix64(head) % 20_000_000_000)),
        "eth_maxPriorityFeePerGas" => {
            quoted(&quantity(1_000_000_000 + mix64(head ^ 1) % 2_000_000_000))
        }
        "eth_feeHistory" => {
            let count = params
                .first()
                .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(parse_quantity)))
                .unwrap_or(1);
            let count = count.clamp(1, 1024);
            let newest = block_arg(params.get(1), head)?.min(head);
            let oldest = newest.saturating_sub(count - 1);
            let pcts = params
                .get(2)
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .unwrap_or(0);
            let mut s = format!("{{\"oldestBlock\":\"{oldest:#x}\",\"baseFeePerGas\":[");
            for (i, n) in (oldest..=newest + 1).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "\"{:#x}\"",
                    1_000_000_000 + mix64(n ^ 0xBA5E) % 30_000_000_000
                );
            }
            s.push_str("],\"gasUsedRatio\":[");
            for (i, n) in (oldest..=newest).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{:.4}", (mix64(n) % 10_000) as f64 / 10_000.0);
            }
            s.push(']');
            if pcts > 0 {
                s.push_str(",\"reward\":[");
                for (i, n) in (oldest..=newest).enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push('[');
                    for p in 0..pcts {
                        if p > 0 {
                            s.push(',');
                        }
                        let _ = write!(
                            s,
                            "\"{:#x}\"",
                            100_000_000 * (p as u64 + 1) + mix64(n ^ p as u64) % 100_000_000
                        );
                    }
                    s.push(']');
                }
                s.push(']');
            }
            s.push('}');
            s
        }
        "eth_getBalance" => {
            let n = block_arg(params.get(1), head)?;
            quoted(&quantity(
                mix64(key_of(str_param(params, 0)) ^ (n / 100)) % 10_000_000_000_000_000_000,
            ))
        }
        "eth_getTransactionCount" => quoted(&quantity(key_of(str_param(params, 0)) % 5000)),
        "eth_getCode" => {
            let k = key_of(str_param(params, 0));
            if k % 3 == 0 {
                "\"0x\"".to_string()
            } else {
                let mut s = String::from("\"0x608060405234801561001057600080fd5b50");
                for i in 0..(32 + k % 200) {
                    let _ = write!(s, "{:02x}", mix64(k ^ i) as u8);
                }
                s.push('"');
                s
            }
        }
        "eth_getStorageAt" => quoted(&word(
            key_of(str_param(params, 0)) ^ key_of(str_param(params, 1)),
        )),
        "eth_call" => {
            let tx = params.first().cloned().unwrap_or(Value::Null);
            let n = block_arg(params.get(1), head)?;
            let to = tx.get("to").and_then(|v| v.as_str()).unwrap_or("");
            let data = tx
                .get("data")
                .or_else(|| tx.get("input"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            quoted(&word(key_of(to) ^ key_of(data) ^ (n / 10)))
        }
        "eth_estimateGas" => "\"0x5208\"".to_string(),
        "eth_getBlockByNumber" => {
            let n = block_arg(params.first(), head)?;
            let full = params.get(1).and_then(|v| v.as_bool()).unwrap_or(false);
            if n > head {
                "null".to_string()
            } else {
                chain.block_json(n, full, chain_id)
            }
        }
        "eth_getBlockByHash" => {
            let h = str_param(params, 0).to_ascii_lowercase();
            let full = params.get(1).and_then(|v| v.as_bool()).unwrap_or(false);
            match (head.saturating_sub(256)..=head)
                .rev()
                .find(|&n| chain.block_hash(n) == h)
            {
                Some(n) => chain.block_json(n, full, chain_id),
                None => "null".to_string(),
            }
        }
        "eth_getBlockTransactionCountByNumber" => {
            let n = block_arg(params.first(), head)?;
            if n > head {
                "null".to_string()
            } else {
                quoted(&quantity(chain.cfg.txs_per_block as u64))
            }
        }
        "eth_getTransactionByHash" => {
            let (n, i) = chain.locate_tx(str_param(params, 0));
            if n > head {
                "null".to_string()
            } else {
                let mut s = String::new();
                chain.write_tx(&mut s, n, i, chain_id);
                s
            }
        }
        "eth_getTransactionReceipt" => {
            let (n, i) = chain.locate_tx(str_param(params, 0));
            if n > head {
                "null".to_string()
            } else {
                chain.receipt_json(n, i)
            }
        }
        "eth_getLogs" => get_logs(state, faults, params.first().unwrap_or(&Value::Null), head)?,
        "eth_sendRawTransaction" => quoted(&word(key_of(str_param(params, 0)))),
        "eth_subscribe" | "eth_unsubscribe" => {
            return Err(err(
                -32601,
                "notifications not supported over HTTP; use the WebSocket endpoint",
            ));
        }
        "mock_bytes" => {
            // A string result of about N bytes (tiny to multi-MB answers on demand).
            let n = params
                .first()
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
                .min(64 << 20) as usize;
            let mut s = String::with_capacity(n + 2);
            s.push('"');
            s.extend(std::iter::repeat_n('x', n));
            s.push('"');
            s
        }
        other => {
            return Err(err(
                -32601,
                format!("the method {other} does not exist/is not available"),
            ));
        }
    })
}

/// Bytes of size-knob answers a mock worker keeps rendered (the load asks for the same few recent blocks over and
/// over: `{recent_block}` is one of the 16 newest).
const SIZED_LOGS_KEPT_BYTES: usize = 64 << 20;

/// Rendered size-knob answers by (from, to, size), oldest first.
type SizedLogs = std::collections::VecDeque<((u64, u64, usize), String)>;

thread_local! {
    static SIZED_LOGS: std::cell::RefCell<SizedLogs> = const { std::cell::RefCell::new(SizedLogs::new()) };
}

/// The size knob's answer: padded logs cycling over the range until the answer is about `target` bytes (the
/// address and topic filter is ignored in this mode). Kept once rendered (up to [`SIZED_LOGS_KEPT_BYTES`]), so the
/// megabyte answers of the large-response steps cost the mock a copy rather than a rendering, and the steps measure
/// the proxy between client and mock rather than the mock's JSON formatting.
fn sized_logs(chain: &crate::chain::Chain, from: u64, to: u64, target: usize) -> String {
    let key = (from, to, target);
    if let Some(body) = SIZED_LOGS.with_borrow(|kept| {
        kept.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, body)| body.clone())
    }) {
        return body;
    }
    let mut s = String::with_capacity(target + 2048);
    s.push('[');
    let range = to - from + 1;
    let pad = 1400usize;
    let mut k: u64 = 0;
    while s.len() < target {
        if k > 0 {
            s.push(',');
        }
        let log = chain.log_at(from + k % range, (k / range) as u32);
        let pad_now = pad.min(target.saturating_sub(s.len())) & !1;
        chain.write_log(&mut s, &log, pad_now);
        k += 1;
    }
    s.push(']');
    SIZED_LOGS.with_borrow_mut(|kept| {
        kept.push_back((key, s.clone()));
        while kept.iter().map(|(_, b)| b.len()).sum::<usize>() > SIZED_LOGS_KEPT_BYTES {
            kept.pop_front();
        }
    });
    s
}

fn get_logs(
    state: &MockChain,
    faults: &Faults,
    filter: &Value,
    head: u64,
) -> Result<String, RpcError> {
    let chain = &state.chain;
    let (from, to) = if let Some(h) = filter.get("blockHash").and_then(|v| v.as_str()) {
        let h = h.to_ascii_lowercase();
        match (head.saturating_sub(1024)..=head)
            .rev()
            .find(|&n| chain.block_hash(n) == h)
        {
            Some(n) => (n, n),
            None => return Err(err(-32000, "unknown block")),
        }
    } else {
        (
            block_arg(filter.get("fromBlock"), head)?,
            block_arg(filter.get("toBlock"), head)?.min(head),
        )
    };
    if from > to {
        return Ok("[]".to_string());
    }
    if to - from + 1 > MAX_LOG_RANGE {
        return Err(err(
            -32005,
            format!("query exceeds max block range {MAX_LOG_RANGE}"),
        ));
    }
    if faults.logs_response_bytes > 0 {
        return Ok(sized_logs(
            chain,
            from,
            to,
            faults.logs_response_bytes as usize,
        ));
    }
    let mut s = String::from("[");
    let f = LogFilter::from_json(filter);
    let mut count = 0usize;
    for n in from..=to {
        for log in chain.logs_of_block(n) {
            if f.matches(&log.address, &log.topics) {
                count += 1;
                if count > MAX_LOGS {
                    return Err(err(
                        -32005,
                        format!("query returned more than {MAX_LOGS} results"),
                    ));
                }
                if count > 1 {
                    s.push(',');
                }
                chain.write_log(&mut s, &log, 0);
            }
        }
    }
    s.push(']');
    Ok(s)
}
