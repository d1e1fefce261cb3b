//! The simulated chain behind the mock provider. Its head advances with wall time (`start_block + elapsed /
//! block_time`), and everything else is a pure function of the block number: block, transaction and log hashes are
//! mixed from the number and a fork counter (so a reorg is "bump the fork of every block from N on"), transaction
//! hashes encode their block and index (so `eth_getTransactionReceipt` can answer any hash it handed out), and logs
//! are generated per block from a fixed set of contracts and topics. Rendering writes JSON text directly.

use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rng::mix64;

/// keccak256("Transfer(address,address,uint256)").
pub const TRANSFER_TOPIC: &str =
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
/// keccak256("Approval(address,address,uint256)").
pub const APPROVAL_TOPIC: &str =
    "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925";
/// How many distinct contracts emit logs.
pub const CONTRACTS: u64 = 8;

/// Static parameters of a simulated chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    pub chain_id: u64,
    pub block_time_ms: u64,
    /// Head at start-up.
    pub start_block: u64,
    pub txs_per_block: u32,
    pub logs_per_block: u32,
    /// Mixed into every hash: two mocks with different seeds disagree on hashes.
    pub seed: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            chain_id: 1,
            block_time_ms: 1000,
            start_block: 20_000_000,
            txs_per_block: 50,
            logs_per_block: 40,
            seed: 0,
        }
    }
}

/// The chain: configuration plus the mutable bits (stall, reorgs) shared by every worker thread.
#[derive(Debug)]
pub struct Chain {
    pub cfg: ChainConfig,
    t0: Instant,
    t0_unix_ns: u64,
    /// 0 = advancing; otherwise the frozen head + 1.
    stalled: AtomicU64,
    /// First block of each reorg, ascending: block n belongs to fork `count(starts <= n)`.
    reorgs: RwLock<Vec<u64>>,
    reorg_version: AtomicU64,
}

/// A parsed `eth_getLogs` / `logs` subscription filter.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// Lower-case 0x addresses; empty = any.
    pub addresses: Vec<String>,
    /// Per position: None = any, Some(list) = one of (lower-case).
    pub topics: Vec<Option<Vec<String>>>,
}

impl LogFilter {
    /// Parses the `address` / `topics` members of a filter object.
    pub fn from_json(v: &serde_json::Value) -> LogFilter {
        let mut f = LogFilter::default();
        match v.get("address") {
            Some(serde_json::Value::String(s)) => f.addresses.push(s.to_ascii_lowercase()),
            Some(serde_json::Value::Array(a)) => f.addresses.extend(
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(|s| s.to_ascii_lowercase()),
            ),
            _ => {}
        }
        if let Some(serde_json::Value::Array(ts)) = v.get("topics") {
            for t in ts {
                f.topics.push(match t {
                    serde_json::Value::String(s) => Some(vec![s.to_ascii_lowercase()]),
                    serde_json::Value::Array(a) => Some(
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .map(|s| s.to_ascii_lowercase())
                            .collect(),
                    ),
                    _ => None,
                });
            }
        }
        f
    }

    pub fn matches(&self, address: &str, topics: &[String]) -> bool {
        if !self.addresses.is_empty() && !self.addresses.iter().any(|a| a == address) {
            return false;
        }
        for (i, want) in self.topics.iter().enumerate() {
            if let Some(list) = want {
                match topics.get(i) {
                    Some(t) if list.iter().any(|w| w == t) => {}
                    _ => return false,
                }
            }
        }
        true
    }
}

/// One generated log, with its position.
#[derive(Clone, Debug)]
pub struct Log {
    pub block: u64,
    pub index: u32,
    pub tx_index: u32,
    pub address: String,
    pub topics: Vec<String>,
    pub data: String,
}

/// Appends `0x` + lower-case hex of `bytes`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + bytes.len() * 2);
    out.push_str("0x");
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// `0x`-hex of bytes as a new string.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    push_hex(&mut s, bytes);
    s
}

/// An Ethereum quantity: `0x` + minimal hex.
pub fn quantity(v: u64) -> String {
    format!("{v:#x}")
}

/// Parses a `0x` quantity (or decimal).
pub fn parse_quantity(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) if !h.is_empty() => u64::from_str_radix(h, 16).ok(),
        Some(_) => None,
        None => s.parse().ok(),
    }
}

/// `n` pseudo-random bytes derived from the key words.
pub fn derive_bytes<const N: usize>(k1: u64, k2: u64, k3: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let mut state = mix64(k1 ^ mix64(k2 ^ mix64(k3)));
    for chunk in out.chunks_mut(8) {
        state = mix64(state);
        chunk.copy_from_slice(&state.to_be_bytes()[..chunk.len()]);
    }
    out
}

/// The address of account number `k` (EOAs and contracts come from disjoint ranges).
pub fn address(k: u64) -> String {
    hex(&derive_bytes::<20>(0xADD2E55, k, 0))
}

/// The address of log-emitting contract `c` (0..CONTRACTS).
pub fn contract(c: u64) -> String {
    address(1_000_000 + c % CONTRACTS)
}

fn topic_for_address(addr_k: u64) -> String {
    let a = derive_bytes::<20>(0xADD2E55, addr_k, 0);
    let mut t = [0u8; 32];
    t[12..].copy_from_slice(&a);
    hex(&t)
}

impl Chain {
    pub fn new(cfg: ChainConfig) -> Chain {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Chain {
            cfg: ChainConfig {
                block_time_ms: cfg.block_time_ms.max(1),
                ..cfg
            },
            t0: Instant::now(),
            t0_unix_ns: unix.as_nanos() as u64,
            stalled: AtomicU64::new(0),
            reorgs: RwLock::new(Vec::new()),
            reorg_version: AtomicU64::new(0),
        }
    }

    /// The head as time alone says.
    pub fn time_head(&self) -> u64 {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.cfg.start_block + ms / self.cfg.block_time_ms
    }

    /// The current head (frozen while stalled).
    pub fn head(&self) -> u64 {
        match self.stalled.load(Ordering::Relaxed) {
            0 => self.time_head(),
            s => s - 1,
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed) != 0
    }

    /// Freezes the head where it is, or lets it run again (it jumps to where time says, like a node catching up).
    pub fn set_stalled(&self, on: bool) {
        if on {
            let h = self.head();
            let _ = self
                .stalled
                .compare_exchange(0, h + 1, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            self.stalled.store(0, Ordering::Relaxed);
        }
    }

    /// Replaces the last `depth` blocks (head - depth + 1 ..= head) with new hashes; returns the first replaced block.
    pub fn reorg(&self, depth: u64) -> u64 {
        let first = self.head().saturating_sub(depth.max(1) - 1);
        let mut r = self.reorgs.write().unwrap_or_else(|e| e.into_inner());
        r.push(first);
        r.sort_unstable();
        self.reorg_version.fetch_add(1, Ordering::Relaxed);
        first
    }

    /// Bumped on every reorg.
    pub fn reorg_version(&self) -> u64 {
        self.reorg_version.load(Ordering::Relaxed)
    }

    /// The latest reorg's first block, if any.
    pub fn last_reorg_start(&self) -> Option<u64> {
        let r = self.reorgs.read().unwrap_or_else(|e| e.into_inner());
        r.last().copied()
    }

    /// The fork block `n` is on.
    pub fn fork_of(&self, n: u64) -> u64 {
        let r = self.reorgs.read().unwrap_or_else(|e| e.into_inner());
        if r.is_empty() {
            return 0;
        }
        r.iter().filter(|&&s| s <= n).count() as u64
    }

    pub fn block_hash(&self, n: u64) -> String {
        hex(&derive_bytes::<32>(
            self.cfg.seed ^ 0xB10C,
            n,
            self.fork_of(n),
        ))
    }

    /// Transaction `i` of block `n`: 20 mixed bytes, then the block number (8 bytes) and the index (4 bytes).
    pub fn tx_hash(&self, n: u64, i: u32) -> String {
        let mut b = [0u8; 32];
        b[..20].copy_from_slice(&derive_bytes::<20>(
            self.cfg.seed ^ 0x7C,
            n,
            ((self.fork_of(n)) << 32) | i as u64,
        ));
        b[20..28].copy_from_slice(&n.to_be_bytes());
        b[28..].copy_from_slice(&i.to_be_bytes());
        hex(&b)
    }

    /// Block and index a transaction hash stands for. Hashes this chain did not make (e.g. taken from a real chain)
    /// map deterministically onto some recent block, so every receipt lookup gets an answer.
    pub fn locate_tx(&self, hash: &str) -> (u64, u32) {
        let h = hash.trim_start_matches("0x");
        let head = self.head();
        if h.len() == 64 {
            let n = u64::from_str_radix(&h[40..56], 16).ok();
            let i = u32::from_str_radix(&h[56..64], 16).ok();
            if let (Some(n), Some(i)) = (n, i) {
                if n <= head && n + 10_000_000 > head && i < self.cfg.txs_per_block.max(1) {
                    return (n, i);
                }
            }
        }
        let k = mix64(
            h.bytes()
                .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64)),
        );
        (
            head.saturating_sub(k % 1000),
            (k >> 32) as u32 % self.cfg.txs_per_block.max(1),
        )
    }

    /// When block `n` is (or was) produced, in Unix nanoseconds.
    pub fn block_unix_ns(&self, n: u64) -> u64 {
        let bt = self.cfg.block_time_ms as i128 * 1_000_000;
        let d = (n as i128 - self.cfg.start_block as i128) * bt;
        (self.t0_unix_ns as i128 + d).max(0) as u64
    }

    /// The instant block `n` appears (by time; stalls aside).
    pub fn block_instant(&self, n: u64) -> Instant {
        let k = n.saturating_sub(self.cfg.start_block);
        self.t0 + Duration::from_millis(k.saturating_mul(self.cfg.block_time_ms))
    }

    fn timestamp_s(&self, n: u64) -> u64 {
        self.block_unix_ns(n) / 1_000_000_000
    }

    fn tx_from(&self, n: u64, i: u32) -> u64 {
        mix64(n ^ ((i as u64) << 40) ^ self.cfg.seed) % 50_000
    }

    fn tx_to(&self, n: u64, i: u32) -> u64 {
        // Half the transactions call a contract.
        let k = mix64(n.rotate_left(17) ^ i as u64);
        if k & 1 == 0 {
            1_000_000 + (k >> 1) % CONTRACTS
        } else {
            100_000 + (k >> 1) % 50_000
        }
    }

    /// Appends the header fields (no `{`/`}`), as in `eth_subscribe("newHeads")` and blocks.
    fn write_header_fields(&self, out: &mut String, n: u64) {
        let parent = if n == 0 {
            hex(&[0u8; 32])
        } else {
            self.block_hash(n - 1)
        };
        let gas_used = 15_000_000 + mix64(n) % 10_000_000;
        let base_fee = 1_000_000_000 + mix64(n ^ 0xBA5E) % 30_000_000_000;
        let _ = write!(
            out,
            "\"number\":\"{n:#x}\",\"hash\":\"{}\",\"parentHash\":\"{parent}\",\"nonce\":\"0x0000000000000000\",\
             \"sha3Uncles\":\"0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347\",\"logsBloom\":\"0x",
            self.block_hash(n)
        );
        for _ in 0..64 {
            out.push_str("00000000");
        }
        let _ = write!(
            out,
            "\",\"transactionsRoot\":\"{}\",\"stateRoot\":\"{}\",\"receiptsRoot\":\"{}\",\"miner\":\"{}\",\
             \"difficulty\":\"0x0\",\"extraData\":\"0x6d6f636b\",\"gasLimit\":\"0x1c9c380\",\"gasUsed\":\"{gas_used:#x}\",\
             \"timestamp\":\"{:#x}\",\"baseFeePerGas\":\"{base_fee:#x}\",\"mixHash\":\"{}\",\"mockTimeNs\":\"{:#x}\"",
            hex(&derive_bytes::<32>(
                self.cfg.seed ^ 0x7800,
                n,
                self.fork_of(n)
            )),
            hex(&derive_bytes::<32>(
                self.cfg.seed ^ 0x5700,
                n,
                self.fork_of(n)
            )),
            hex(&derive_bytes::<32>(
                self.cfg.seed ^ 0x4200,
                n,
                self.fork_of(n)
            )),
            address(200_000 + n % 16),
            self.timestamp_s(n),
            hex(&derive_bytes::<32>(self.cfg.seed ^ 0x3100, n, 0)),
            self.block_unix_ns(n),
        );
    }

    /// A `newHeads` header object.
    pub fn header_json(&self, n: u64) -> String {
        let mut s = String::with_capacity(1600);
        s.push('{');
        self.write_header_fields(&mut s, n);
        s.push('}');
        s
    }

    /// A block object (`eth_getBlockByNumber`), with transaction hashes or full transactions.
    pub fn block_json(&self, n: u64, full: bool, chain_id: u64) -> String {
        let txs = self.cfg.txs_per_block;
        let mut s = String::with_capacity(if full {
            1600 + txs as usize * 800
        } else {
            1600 + txs as usize * 70
        });
        s.push('{');
        self.write_header_fields(&mut s, n);
        let size = 1_000 + txs as u64 * 400;
        let _ = write!(
            s,
            ",\"size\":\"{size:#x}\",\"totalDifficulty\":\"0xc70d815d562d3cfa955\",\"uncles\":[],\"withdrawals\":[],\"transactions\":["
        );
        for i in 0..txs {
            if i > 0 {
                s.push(',');
            }
            if full {
                self.write_tx(&mut s, n, i, chain_id);
            } else {
                s.push('"');
                s.push_str(&self.tx_hash(n, i));
                s.push('"');
            }
        }
        s.push_str("]}");
        s
    }

    /// A transaction object.
    pub fn write_tx(&self, s: &mut String, n: u64, i: u32, chain_id: u64) {
        let to = self.tx_to(n, i);
        let input = if to >= 1_000_000 {
            let mut x = String::from("0xa9059cbb");
            x.push_str(&topic_for_address(self.tx_to(n, i + 1))[2..]);
            x.push_str(&format!("{:064x}", mix64(n ^ i as u64) % 1_000_000_000_000));
            x
        } else {
            "0x".to_string()
        };
        let _ = write!(
            s,
            "{{\"blockHash\":\"{}\",\"blockNumber\":\"{n:#x}\",\"from\":\"{}\",\"gas\":\"0x5208\",\"gasPrice\":\"{:#x}\",\
             \"maxFeePerGas\":\"0x9502f9000\",\"maxPriorityFeePerGas\":\"0x3b9aca00\",\"hash\":\"{}\",\"input\":\"{input}\",\
             \"nonce\":\"{:#x}\",\"to\":\"{}\",\"transactionIndex\":\"{i:#x}\",\"value\":\"{:#x}\",\"type\":\"0x2\",\
             \"accessList\":[],\"chainId\":\"{chain_id:#x}\",\"v\":\"0x1\",\"r\":\"{}\",\"s\":\"{}\",\"yParity\":\"0x1\"}}",
            self.block_hash(n),
            address(self.tx_from(n, i)),
            2_000_000_000 + mix64(n ^ 0x6A5) % 10_000_000_000,
            self.tx_hash(n, i),
            mix64(n ^ i as u64) % 5000,
            address(to),
            mix64(i as u64 ^ n.rotate_left(9)) % 1_000_000_000_000_000_000,
            hex(&derive_bytes::<32>(0x5151, n, i as u64)),
            hex(&derive_bytes::<32>(0x5252, n, i as u64)),
        );
    }

    /// Logs of block `n`, in log-index order.
    pub fn logs_of_block(&self, n: u64) -> Vec<Log> {
        (0..self.cfg.logs_per_block)
            .map(|j| self.log_at(n, j))
            .collect()
    }

    /// Log `j` of block `n` (any `j`: indices past `logs_per_block` are used for padded, MB-scale answers).
    pub fn log_at(&self, n: u64, j: u32) -> Log {
        let txs = self.cfg.txs_per_block.max(1);
        let k = mix64(n.wrapping_mul(1_000_003) ^ j as u64 ^ self.cfg.seed);
        let tx_index = j % txs;
        let topic0 = if k % 5 == 0 {
            APPROVAL_TOPIC
        } else {
            TRANSFER_TOPIC
        };
        Log {
            block: n,
            index: j,
            tx_index,
            address: contract(k >> 8),
            topics: vec![
                topic0.to_string(),
                topic_for_address(self.tx_from(n, tx_index)),
                topic_for_address(100_000 + (k >> 20) % 50_000),
            ],
            data: format!("0x{:064x}", (k >> 3) % 1_000_000_000_000_000_000),
        }
    }

    /// Appends a log object; `pad_hex` extra hex digits are appended to `data` (for MB-scale answers).
    pub fn write_log(&self, s: &mut String, log: &Log, pad_hex: usize) {
        let _ = write!(s, "{{\"address\":\"{}\",\"topics\":[", log.address);
        for (i, t) in log.topics.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('"');
            s.push_str(t);
            s.push('"');
        }
        s.push_str("],\"data\":\"");
        s.push_str(&log.data);
        // Digit k is HEX[(7k + index) mod 16]: a 16-digit period, appended a period at a time.
        let mut period = [0u8; 16];
        for (k, digit) in period.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(k * 7 + log.index as usize) % 16];
        }
        let period = std::str::from_utf8(&period).expect("hex digits");
        for _ in 0..pad_hex / 16 {
            s.push_str(period);
        }
        s.push_str(&period[..pad_hex % 16]);
        let _ = write!(
            s,
            "\",\"blockNumber\":\"{:#x}\",\"blockHash\":\"{}\",\"transactionHash\":\"{}\",\"transactionIndex\":\"{:#x}\",\
             \"logIndex\":\"{:#x}\",\"removed\":false}}",
            log.block,
            self.block_hash(log.block),
            self.tx_hash(log.block, log.tx_index),
            log.tx_index,
            log.index
        );
    }

    /// A receipt for transaction `i` of block `n`.
    pub fn receipt_json(&self, n: u64, i: u32) -> String {
        let mut s = String::with_capacity(2000);
        let _ = write!(
            s,
            "{{\"blockHash\":\"{}\",\"blockNumber\":\"{n:#x}\",\"contractAddress\":null,\"cumulativeGasUsed\":\"{:#x}\",\
             \"effectiveGasPrice\":\"0x2540be400\",\"from\":\"{}\",\"gasUsed\":\"0x5208\",\"logs\":[",
            self.block_hash(n),
            21_000 * (i as u64 + 1),
            address(self.tx_from(n, i)),
        );
        let mut first = true;
        for log in self.logs_of_block(n).iter().filter(|l| l.tx_index == i) {
            if !first {
                s.push(',');
            }
            first = false;
            self.write_log(&mut s, log, 0);
        }
        s.push_str("],\"logsBloom\":\"0x");
        for _ in 0..64 {
            s.push_str("00000000");
        }
        let _ = write!(
            s,
            "\",\"status\":\"0x1\",\"to\":\"{}\",\"transactionHash\":\"{}\",\"transactionIndex\":\"{i:#x}\",\"type\":\"0x2\"}}",
            address(self.tx_to(n, i)),
            self.tx_hash(n, i)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain::new(ChainConfig {
            block_time_ms: 50,
            start_block: 100,
            ..Default::default()
        })
    }

    #[test]
    fn hashes_are_deterministic_and_linked() {
        let a = chain();
        let b = chain();
        assert_eq!(a.block_hash(123), b.block_hash(123));
        assert_ne!(a.block_hash(123), a.block_hash(124));
        let h: serde_json::Value = serde_json::from_str(&a.header_json(124)).unwrap();
        assert_eq!(h["parentHash"], a.block_hash(123));
        assert_eq!(h["number"], "0x7c");
    }

    #[test]
    fn reorg_changes_hashes_from_its_start() {
        let c = chain();
        let before: Vec<String> = (95..=100).map(|n| c.block_hash(n)).collect();
        let first = c.reorg(2);
        assert_eq!(first, c.head() - 1);
        for (k, n) in (95..=100).enumerate() {
            assert_eq!(before[k] == c.block_hash(n), n < first, "block {n}");
        }
    }

    #[test]
    fn tx_hash_locates_back() {
        let c = chain();
        let h = c.tx_hash(100, 7);
        assert_eq!(c.locate_tx(&h), (100, 7));
        let (n, i) = c.locate_tx("0x1234");
        assert!(n <= c.head() && i < 50);
        let r: serde_json::Value = serde_json::from_str(&c.receipt_json(100, 7)).unwrap();
        assert_eq!(r["transactionHash"], h);
    }

    #[test]
    fn blocks_and_logs_are_valid_json() {
        let c = chain();
        let b: serde_json::Value = serde_json::from_str(&c.block_json(100, true, 1)).unwrap();
        assert_eq!(b["transactions"].as_array().unwrap().len(), 50);
        let logs = c.logs_of_block(100);
        let mut s = String::new();
        c.write_log(&mut s, &logs[0], 10);
        let l: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(l["logIndex"], "0x0");
        // Padding: digit k of the pad is HEX[(7k + logIndex) mod 16], whatever its length.
        let mut padded = String::new();
        c.write_log(&mut padded, &logs[3], 37);
        let padded: serde_json::Value = serde_json::from_str(&padded).unwrap();
        let expected: String = (0..37)
            .map(|k| b"0123456789abcdef"[(k * 7 + 3) % 16] as char)
            .collect();
        assert!(padded["data"].as_str().unwrap().ends_with(&expected));
        let f = LogFilter {
            addresses: vec![logs[0].address.clone()],
            topics: vec![Some(vec![logs[0].topics[0].clone()])],
        };
        assert!(f.matches(&logs[0].address, &logs[0].topics));
        assert!(!f.matches("0xdead", &logs[0].topics));
    }

    #[test]
    fn stall_freezes_head() {
        let c = chain();
        c.set_stalled(true);
        let h = c.head();
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(c.head(), h);
        c.set_stalled(false);
        assert!(c.head() >= h + 2);
    }
}
