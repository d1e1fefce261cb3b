//! Knowledge about Ethereum JSON-RPC methods the router needs: a compact id per well-known method (so per-method
//! statistics need no string keys on the hot path), the class a method falls back to when it has few samples, which
//! methods are writes or safe to hedge, and which block a call targets (`latest`-sensitive or an explicit number).

use crate::wire::jsonrpc::{self, ArrayElement};
use sonic_rs::JsonValueTrait;

/// Groups of methods with similar cost, used when a method alone has too few samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodClass {
    /// Cheap point reads: block number, balance, nonce, code, storage, transaction lookups.
    Light,
    /// Execution: eth_call, eth_estimateGas, eth_createAccessList, simulations.
    Call,
    /// Log queries.
    Logs,
    /// Blocks and receipts by block.
    Block,
    /// debug_/trace_ methods.
    Trace,
    /// State-changing submissions.
    Write,
    Other,
}

impl MethodClass {
    pub const ALL: [MethodClass; 7] = [
        MethodClass::Light,
        MethodClass::Call,
        MethodClass::Logs,
        MethodClass::Block,
        MethodClass::Trace,
        MethodClass::Write,
        MethodClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MethodClass::Light => "light",
            MethodClass::Call => "call",
            MethodClass::Logs => "logs",
            MethodClass::Block => "block",
            MethodClass::Trace => "trace",
            MethodClass::Write => "write",
            MethodClass::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a method's block parameter is: a positional index, or the fromBlock/toBlock of a filter object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockParam {
    None,
    At(usize),
    Filter,
}

/// (name, class, block parameter) of the methods Lasso keeps separate statistics for. Index = method id.
const KNOWN: &[(&str, MethodClass, BlockParam)] = &[
    ("eth_blockNumber", MethodClass::Light, BlockParam::None),
    ("eth_chainId", MethodClass::Light, BlockParam::None),
    ("eth_gasPrice", MethodClass::Light, BlockParam::None),
    (
        "eth_maxPriorityFeePerGas",
        MethodClass::Light,
        BlockParam::None,
    ),
    ("eth_blobBaseFee", MethodClass::Light, BlockParam::None),
    ("eth_feeHistory", MethodClass::Light, BlockParam::At(1)),
    ("eth_getBalance", MethodClass::Light, BlockParam::At(1)),
    (
        "eth_getTransactionCount",
        MethodClass::Light,
        BlockParam::At(1),
    ),
    ("eth_getCode", MethodClass::Light, BlockParam::At(1)),
    ("eth_getStorageAt", MethodClass::Light, BlockParam::At(2)),
    ("eth_getProof", MethodClass::Light, BlockParam::At(2)),
    (
        "eth_getTransactionByHash",
        MethodClass::Light,
        BlockParam::None,
    ),
    (
        "eth_getTransactionReceipt",
        MethodClass::Light,
        BlockParam::None,
    ),
    (
        "eth_getTransactionByBlockHashAndIndex",
        MethodClass::Light,
        BlockParam::None,
    ),
    (
        "eth_getTransactionByBlockNumberAndIndex",
        MethodClass::Light,
        BlockParam::At(0),
    ),
    ("eth_syncing", MethodClass::Light, BlockParam::None),
    ("net_version", MethodClass::Light, BlockParam::None),
    ("web3_clientVersion", MethodClass::Light, BlockParam::None),
    ("eth_call", MethodClass::Call, BlockParam::At(1)),
    ("eth_estimateGas", MethodClass::Call, BlockParam::At(1)),
    ("eth_createAccessList", MethodClass::Call, BlockParam::At(1)),
    ("eth_simulateV1", MethodClass::Call, BlockParam::At(1)),
    ("eth_getLogs", MethodClass::Logs, BlockParam::Filter),
    (
        "eth_getBlockByNumber",
        MethodClass::Block,
        BlockParam::At(0),
    ),
    ("eth_getBlockByHash", MethodClass::Block, BlockParam::None),
    (
        "eth_getBlockReceipts",
        MethodClass::Block,
        BlockParam::At(0),
    ),
    (
        "eth_getBlockTransactionCountByNumber",
        MethodClass::Block,
        BlockParam::At(0),
    ),
    (
        "eth_getBlockTransactionCountByHash",
        MethodClass::Block,
        BlockParam::None,
    ),
    (
        "eth_getUncleCountByBlockNumber",
        MethodClass::Block,
        BlockParam::At(0),
    ),
    (
        "debug_traceTransaction",
        MethodClass::Trace,
        BlockParam::None,
    ),
    ("debug_traceCall", MethodClass::Trace, BlockParam::At(1)),
    (
        "debug_traceBlockByNumber",
        MethodClass::Trace,
        BlockParam::At(0),
    ),
    (
        "debug_traceBlockByHash",
        MethodClass::Trace,
        BlockParam::None,
    ),
    ("trace_block", MethodClass::Trace, BlockParam::At(0)),
    ("trace_transaction", MethodClass::Trace, BlockParam::None),
    ("trace_filter", MethodClass::Trace, BlockParam::None),
    (
        "trace_replayBlockTransactions",
        MethodClass::Trace,
        BlockParam::At(0),
    ),
    (
        "eth_sendRawTransaction",
        MethodClass::Write,
        BlockParam::None,
    ),
    ("eth_sendTransaction", MethodClass::Write, BlockParam::None),
    ("eth_sendBundle", MethodClass::Write, BlockParam::None),
    (
        "eth_sendPrivateTransaction",
        MethodClass::Write,
        BlockParam::None,
    ),
    (
        "eth_sendRawTransactionConditional",
        MethodClass::Write,
        BlockParam::None,
    ),
    (
        "eth_sendRawTransactionSync",
        MethodClass::Write,
        BlockParam::None,
    ),
];

/// Slots of [`KNOWN_BY_HASH`]: a power of two, more than twice the known methods (short probe runs).
const KNOWN_SLOTS: usize = 128;

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The known methods by name hash (open addressing, linear probing): slot -> index in [`KNOWN`] + 1, 0 = empty.
/// Every request's method is looked up here several times (its key, its class, whether it is a write), so a lookup
/// is one hash and about one comparison rather than a scan of the list.
const KNOWN_BY_HASH: [u8; KNOWN_SLOTS] = {
    assert!(KNOWN.len() * 2 < KNOWN_SLOTS && KNOWN.len() < u8::MAX as usize);
    let mut slots = [0u8; KNOWN_SLOTS];
    let mut i = 0;
    while i < KNOWN.len() {
        let mut slot = fnv1a(KNOWN[i].0.as_bytes()) as usize & (KNOWN_SLOTS - 1);
        while slots[slot] != 0 {
            slot = (slot + 1) & (KNOWN_SLOTS - 1);
        }
        slots[slot] = (i + 1) as u8;
        i += 1;
    }
    slots
};

/// The index of `method` in [`KNOWN`], if it is a known method.
fn known_index(method: &str) -> Option<usize> {
    let mut slot = fnv1a(method.as_bytes()) as usize & (KNOWN_SLOTS - 1);
    loop {
        let entry = KNOWN_BY_HASH[slot];
        if entry == 0 {
            return None;
        }
        let index = entry as usize - 1;
        if KNOWN[index].0 == method {
            return Some(index);
        }
        slot = (slot + 1) & (KNOWN_SLOTS - 1);
    }
}

/// Statistics key of a method: a well-known method's id, or its class for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodKey(pub u16);

impl MethodKey {
    /// Keys at or above this value stand for a class (`BASE + class index`) rather than one method.
    const CLASS_BASE: u16 = 1000;

    pub fn of(method: &str) -> MethodKey {
        match known_index(method) {
            Some(i) => MethodKey(i as u16),
            None => MethodKey(Self::CLASS_BASE + class_of(method).index() as u16),
        }
    }

    pub fn class(self) -> MethodClass {
        match KNOWN.get(self.0 as usize) {
            Some((_, class, _)) => *class,
            None => MethodClass::ALL
                .get((self.0 - Self::CLASS_BASE) as usize)
                .copied()
                .unwrap_or(MethodClass::Other),
        }
    }

    /// The method name, or `class:<name>` for class keys.
    pub fn name(self) -> String {
        match KNOWN.get(self.0 as usize) {
            Some((name, _, _)) => (*name).to_string(),
            None => format!("class:{}", self.class().as_str()),
        }
    }

    pub fn from_name(name: &str) -> Option<MethodKey> {
        if let Some(class) = name.strip_prefix("class:") {
            let c = MethodClass::ALL.iter().find(|c| c.as_str() == class)?;
            return Some(MethodKey(Self::CLASS_BASE + c.index() as u16));
        }
        known_index(name).map(|i| MethodKey(i as u16))
    }
}

/// The class of any method name.
pub fn class_of(method: &str) -> MethodClass {
    if let Some(i) = known_index(method) {
        return KNOWN[i].1;
    }
    if is_listed_write(method) {
        MethodClass::Write
    } else if method.starts_with("debug_") || method.starts_with("trace_") {
        MethodClass::Trace
    } else {
        MethodClass::Other
    }
}

/// True for methods that change state (sent to at most one provider once they may have reached it).
pub fn is_write(method: &str) -> bool {
    class_of(method) == MethodClass::Write
}

/// Methods that send something to the network or the node: never retried once they may have arrived, never hedged,
/// never coalesced. Names ending in `*` are prefixes.
pub const WRITE_METHODS: &[&str] = &[
    "eth_send*",
    "eth_submitWork",
    "eth_submitHashrate",
    "eth_cancelPrivateTransaction",
    "personal_sendTransaction",
    "personal_signAndSendTransaction",
    "mev_*",
    "flashbots_*",
    "bor_sendRawTransactionConditional",
];

/// Whether `method` matches `pattern`: an exact name, or a prefix ending in `*`.
pub fn matches_pattern(pattern: &str, method: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => method.starts_with(prefix),
        None => pattern == method,
    }
}

fn is_listed_write(method: &str) -> bool {
    WRITE_METHODS.iter().any(|p| matches_pattern(p, method))
}

/// Node-control and key-holding methods refused unless a provider's `methods.allow` names them (the exact method,
/// or the very pattern below that denies it): they let a caller steer or stop a self-hosted node, or use keys held
/// by it.
pub const DEFAULT_DENY: &[&str] = &[
    "admin_*",
    "personal_*",
    "miner_*",
    "engine_*",
    "clique_*",
    "debug_setHead",
    "debug_setGCPercent",
    "debug_setBlockProfileRate",
    "debug_setMutexProfileFraction",
    "debug_startCPUProfile",
    "debug_stopCPUProfile",
    "debug_startGoTrace",
    "debug_stopGoTrace",
    "debug_writeBlockProfile",
    "debug_writeMemProfile",
    "debug_writeMutexProfile",
    "debug_cpuProfile",
    "debug_goTrace",
    "debug_blockProfile",
    "debug_mutexProfile",
    "debug_freeOSMemory",
    "debug_verbosity",
    "debug_vmodule",
    "eth_sign*",
    "eth_accounts",
    "eth_sendTransaction",
    "eth_coinbase",
    "anvil_*",
    "hardhat_*",
    "evm_*",
];

/// For each first byte, the rules of [`DEFAULT_DENY`] that start with it (bit `i` = rule `i`): a method is compared
/// with those few rules only (an `eth_` read with six, not thirty-one).
const DENY_RULES_BY_FIRST_BYTE: [u64; 256] = {
    assert!(DEFAULT_DENY.len() <= 64, "one bit per rule");
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < DEFAULT_DENY.len() {
        let first = DEFAULT_DENY[i].as_bytes()[0];
        assert!(first != b'*', "a rule names its first byte");
        table[first as usize] |= 1 << i;
        i += 1;
    }
    table
};

/// The default-deny pattern that refuses `method`, if one does (the first in list order).
pub fn default_denied(method: &str) -> Option<&'static str> {
    let first = *method.as_bytes().first()?;
    let mut rules = DENY_RULES_BY_FIRST_BYTE[first as usize];
    while rules != 0 {
        let rule = DEFAULT_DENY[rules.trailing_zeros() as usize];
        if matches_pattern(rule, method) {
            return Some(rule);
        }
        rules &= rules - 1;
    }
    None
}

/// Which block a call reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTarget {
    /// No block involved, or one named by hash: any provider.
    Any,
    /// The chain head (`latest`, `pending`, or no block given): providers far behind must not answer.
    Head,
    /// An explicit block number.
    Number(u64),
}

/// The block a string block parameter names: a tag or a `0x` quantity.
fn tag_str_target(tag: &str) -> BlockTarget {
    match tag {
        "latest" | "pending" => BlockTarget::Head,
        "earliest" => BlockTarget::Number(0),
        t if t.starts_with("0x") => {
            u64::from_str_radix(&t[2..], 16).map_or(BlockTarget::Any, BlockTarget::Number)
        }
        _ => BlockTarget::Any,
    }
}

/// A block parameter read from its raw bytes without a parser when it is a plain string (no escapes) or an unsigned
/// integer, as nearly all are; `None` for anything else (an EIP-1898 object, escapes), which the parser reads.
fn plain_target(raw: &[u8]) -> Option<BlockTarget> {
    match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            Some(tag_str_target(std::str::from_utf8(inner).ok()?))
        }
        digits if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(digits)
                .ok()?
                .parse()
                .ok()
                .map(BlockTarget::Number)
        }
        _ => None,
    }
}

fn tag_target(v: &sonic_rs::LazyValue<'_>) -> BlockTarget {
    if let Some(tag) = v.as_str() {
        return tag_str_target(tag);
    }
    if let Some(n) = v.as_u64() {
        return BlockTarget::Number(n);
    }
    // {"blockHash": ...} / {"blockNumber": ...} (EIP-1898)
    if v.is_object() {
        if let Some(n) = v.get("blockNumber") {
            return tag_target(&n);
        }
    }
    BlockTarget::Any
}

/// The position of `method`'s block parameter (`latest`, a number, or an EIP-1898 object), if it has one.
pub fn block_param_index(method: &str) -> Option<usize> {
    match known_index(method).map(|i| &KNOWN[i].2) {
        Some(BlockParam::At(i)) => Some(*i),
        _ => None,
    }
}

/// A `0x` hex quantity as a number.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The block `method` with raw JSON `params` targets.
pub fn block_target(method: &str, params: Option<&[u8]>) -> BlockTarget {
    if method == "eth_blockNumber" {
        return BlockTarget::Head;
    }
    let Some(where_) = known_index(method).map(|i| &KNOWN[i].2) else {
        return BlockTarget::Any;
    };
    // Only the one parameter that names the block is looked at (a scan of the params array: no tree of the rest,
    // which for `eth_call` is a whole transaction object).
    let param = |i: usize| params.and_then(|p| sonic_rs::get_from_slice(p, [i]).ok());
    match where_ {
        BlockParam::None => BlockTarget::Any,
        BlockParam::At(i) => {
            let parsed = || match param(*i) {
                Some(v) if !v.is_null() => tag_target(&v),
                _ => BlockTarget::Head,
            };
            match params.map_or(ArrayElement::Missing, |p| jsonrpc::array_element(p, *i)) {
                ArrayElement::Missing | ArrayElement::Found(b"null") => BlockTarget::Head,
                ArrayElement::Found(raw) => plain_target(raw).unwrap_or_else(parsed),
                ArrayElement::NeedsParser => parsed(),
            }
        }
        BlockParam::Filter => {
            let Some(filter) = param(0).filter(|f| f.is_object()) else {
                return BlockTarget::Head;
            };
            if filter.get("blockHash").is_some() {
                return BlockTarget::Any;
            }
            match filter.get("fromBlock") {
                Some(v) => match tag_target(&v) {
                    BlockTarget::Any => BlockTarget::Head,
                    other => other,
                },
                None => BlockTarget::Head,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_method_is_found_at_its_own_index_and_nothing_else_is() {
        for (i, (name, _, _)) in KNOWN.iter().enumerate() {
            assert_eq!(known_index(name), Some(i), "{name}");
            assert_eq!(MethodKey::from_name(name), Some(MethodKey(i as u16)));
            // Near misses (a prefix, one more byte, another case) are not known methods.
            assert_eq!(known_index(&name[..name.len() - 1]), None, "{name}");
            assert_eq!(known_index(&format!("{name}x")), None, "{name}");
            assert_eq!(known_index(&name.to_uppercase()), None, "{name}");
        }
        assert_eq!(known_index(""), None);
        assert_eq!(known_index(&"eth_call".repeat(1000)), None);
    }

    #[test]
    fn keys_round_trip_and_fall_back_to_classes() {
        // A key's class is its method's class, known or not (the plan reads write-ness from the key).
        for method in [
            "eth_call",
            "eth_sendRawTransaction",
            "eth_sendBundle",
            "mev_sendBundle",
            "debug_somethingNew",
            "trace_filter",
            "foo_bar",
            "",
        ] {
            assert_eq!(MethodKey::of(method).class(), class_of(method), "{method}");
        }
        let k = MethodKey::of("eth_call");
        assert_eq!(k.class(), MethodClass::Call);
        assert_eq!(MethodKey::from_name(&k.name()), Some(k));
        let other = MethodKey::of("debug_somethingNew");
        assert_eq!(other.class(), MethodClass::Trace);
        assert_eq!(other.name(), "class:trace");
        assert_eq!(MethodKey::from_name("class:trace"), Some(other));
        for write in [
            "eth_sendRawTransactionConditional",
            "personal_sendTransaction",
            "eth_submitWork",
            "eth_sendBundle",
            "mev_sendBundle",
            "flashbots_getBundleStats",
        ] {
            assert!(is_write(write), "{write}");
        }
        for (method, rule) in [
            ("admin_addPeer", Some("admin_*")),
            ("debug_setHead", Some("debug_setHead")),
            ("eth_signTypedData_v4", Some("eth_sign*")),
            ("eth_accounts", Some("eth_accounts")),
            ("debug_traceTransaction", None),
            ("eth_sendRawTransaction", None),
        ] {
            assert_eq!(default_denied(method), rule, "{method}");
        }
        // Every rule denies what it names (the first-letter shortcut never skips a rule that matches).
        for rule in DEFAULT_DENY {
            let method = match rule.strip_suffix('*') {
                Some(prefix) => format!("{prefix}Anything"),
                None => rule.to_string(),
            };
            assert_eq!(default_denied(&method), Some(*rule), "{method}");
        }
        assert_eq!(default_denied(""), None);
        assert!(is_write("eth_sendRawTransaction"));
        assert!(!is_write("eth_call"));
    }

    #[test]
    fn block_targets_table() {
        let rows: &[(&str, &str, BlockTarget)] = &[
            ("eth_blockNumber", "[]", BlockTarget::Head),
            ("eth_getBalance", r#"["0xabc","latest"]"#, BlockTarget::Head),
            ("eth_getBalance", r#"["0xabc"]"#, BlockTarget::Head),
            (
                "eth_getBalance",
                r#"["0xabc","0x10"]"#,
                BlockTarget::Number(16),
            ),
            (
                "eth_getBalance",
                r#"["0xabc",{"blockHash":"0x12"}]"#,
                BlockTarget::Any,
            ),
            (
                "eth_getBalance",
                r#"["0xabc",{"blockNumber":"0x20"}]"#,
                BlockTarget::Number(32),
            ),
            (
                "eth_call",
                r#"[{"to":"0x1"},"finalized"]"#,
                BlockTarget::Any,
            ),
            (
                "eth_getBlockByNumber",
                r#"["0x1b4",false]"#,
                BlockTarget::Number(436),
            ),
            (
                "eth_getBlockByNumber",
                r#"["earliest",false]"#,
                BlockTarget::Number(0),
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x5","toBlock":"latest"}]"#,
                BlockTarget::Number(5),
            ),
            ("eth_getLogs", r#"[{"address":"0x1"}]"#, BlockTarget::Head),
            ("eth_getLogs", r#"[{"blockHash":"0x1"}]"#, BlockTarget::Any),
            ("eth_getTransactionReceipt", r#"["0x1"]"#, BlockTarget::Any),
            ("foo_bar", r#"[1]"#, BlockTarget::Any),
            ("eth_getBalance", r#"["0xabc",null]"#, BlockTarget::Head),
            ("eth_getBalance", r#"{"a":1}"#, BlockTarget::Head),
            ("eth_getBalance", r#"["0xabc",16]"#, BlockTarget::Number(16)),
            (
                "eth_getBalance",
                r#"["0xabc","lat\u0065st"]"#,
                BlockTarget::Head,
            ),
            (
                "eth_call",
                r#"[{"to":"0x1","data":"0x00","nested":[{"a":[1,2,{"b":"latest"}]}]},"0x7"]"#,
                BlockTarget::Number(7),
            ),
            ("eth_getLogs", r#"["x"]"#, BlockTarget::Head),
            (
                "eth_getBalance",
                " [ \"0xabc\" ,\n\t\"0x10\" ] ",
                BlockTarget::Number(16),
            ),
            (
                "eth_getBalance",
                r#"["0x\"],[{,\\","0x11"]"#,
                BlockTarget::Number(17),
            ),
            ("eth_getBalance", r#"["0xabc", null ]"#, BlockTarget::Head),
            (
                "eth_getBalance",
                r#"["0xabc",18446744073709551616]"#,
                BlockTarget::Any,
            ),
            ("eth_getBalance", r#"["0xabc",-1]"#, BlockTarget::Any),
            ("eth_getBalance", r#"["0xabc","0x"]"#, BlockTarget::Any),
        ];
        for (method, params, expected) in rows {
            assert_eq!(
                block_target(method, Some(params.as_bytes())),
                *expected,
                "{method} {params}"
            );
        }
    }
}
