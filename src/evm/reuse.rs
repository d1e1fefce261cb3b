//! Which answers may be reused, and about which block: the knowledge behind in-flight multiplexing and the response
//! cache, with no state and no policy. A read that names a moving target (`latest`, `pending`, `safe`,
//! `finalized`, no block at all) may share an upstream call with identical reads in flight, never be kept; a read
//! about one block (an explicit number, or a hash whose block number the answer tells) may be kept, tagged with
//! the highest block height its answer depends on. Writes, filters, subscriptions, node-control methods and methods
//! Lasso does not know are never reused.

use sonic_rs::{JsonContainerTrait, JsonValueTrait};

/// Where an answer's block height comes from when the request does not name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerHeight {
    /// `result.blockNumber` (transactions, receipts).
    BlockNumber,
    /// `result.number` (blocks).
    Number,
    /// `result[0].blockNumber` (block receipts, logs by block hash).
    FirstBlockNumber,
    /// Not told (state at a block hash): kept as unfinalized and dropped on any reorg.
    Unknown,
}

/// How an answer may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Never: writes, filters, subscriptions, node control, unknown methods.
    Never,
    /// Shared with identical reads in flight, never kept (moving targets).
    InFlight,
    /// About blocks up to this height (an explicit number or range).
    At(u64),
    /// About the block the answer names.
    InAnswer(AnswerHeight),
}

impl Reuse {
    /// Identical calls in flight may share one upstream call.
    pub fn shareable(self) -> bool {
        self != Reuse::Never
    }

    /// The answer may be kept (subject to finality and policy).
    pub fn keepable(self) -> bool {
        matches!(self, Reuse::At(_) | Reuse::InAnswer(_))
    }
}

/// Reads whose answer depends on the parameters only (and on the chain at a block): every well-known read, and
/// traces. Nothing else is ever reused, whatever its parameters.
pub fn deterministic_read(method: &str) -> bool {
    if crate::evm::methods::default_denied(method).is_some()
        || crate::evm::methods::is_write(method)
    {
        return false;
    }
    crate::evm::methods::MethodKey::from_name(method).is_some()
        || method.starts_with("debug_trace")
        || (method.starts_with("trace_") && method != "trace_filter")
        || matches!(
            method,
            "eth_getUncleByBlockHashAndIndex"
                | "eth_getUncleByBlockNumberAndIndex"
                | "eth_getUncleCountByBlockHash"
        )
}

/// A block parameter: an explicit height, a hash (the answer may tell its height), or a moving tag.
enum BlockRef {
    Height(u64),
    Hash,
    Moving,
}

fn block_ref(v: Option<&sonic_rs::Value>) -> BlockRef {
    let Some(v) = v else {
        return BlockRef::Moving;
    };
    if let Some(s) = v.as_str() {
        return match s {
            "earliest" => BlockRef::Height(0),
            t if t.len() == 66 && t.starts_with("0x") => BlockRef::Hash,
            t => match t.strip_prefix("0x").map(|h| u64::from_str_radix(h, 16)) {
                Some(Ok(n)) => BlockRef::Height(n),
                _ => BlockRef::Moving,
            },
        };
    }
    if let Some(obj) = v.as_object() {
        // EIP-1898: {"blockNumber": ...} or {"blockHash": ...}
        if let Some(n) = obj.get(&"blockNumber") {
            return block_ref(Some(n));
        }
        if obj.get(&"blockHash").is_some() {
            return BlockRef::Hash;
        }
    }
    BlockRef::Moving
}

fn at(r: BlockRef, by_hash: AnswerHeight) -> Reuse {
    match r {
        BlockRef::Height(n) => Reuse::At(n),
        BlockRef::Hash => Reuse::InAnswer(by_hash),
        BlockRef::Moving => Reuse::InFlight,
    }
}

/// How the answer to `method` with parsed `params` may be reused.
pub fn reuse(method: &str, params: Option<&sonic_rs::Value>) -> Reuse {
    if !deterministic_read(method) {
        return Reuse::Never;
    }
    let arg = |i: usize| params.and_then(|p| p.as_array()).and_then(|a| a.get(i));
    match method {
        "eth_getBlockByNumber"
        | "eth_getBlockTransactionCountByNumber"
        | "eth_getUncleCountByBlockNumber"
        | "eth_getTransactionByBlockNumberAndIndex"
        | "eth_getUncleByBlockNumberAndIndex" => match block_ref(arg(0)) {
            BlockRef::Height(n) => Reuse::At(n),
            _ => Reuse::InFlight,
        },
        "eth_getBlockReceipts" => at(block_ref(arg(0)), AnswerHeight::FirstBlockNumber),
        "eth_getBlockByHash" => Reuse::InAnswer(AnswerHeight::Number),
        "eth_getTransactionByHash"
        | "eth_getTransactionReceipt"
        | "eth_getTransactionByBlockHashAndIndex" => Reuse::InAnswer(AnswerHeight::BlockNumber),
        "eth_getBlockTransactionCountByHash"
        | "eth_getUncleCountByBlockHash"
        | "eth_getUncleByBlockHashAndIndex" => Reuse::InAnswer(AnswerHeight::Unknown),
        "eth_getBalance" | "eth_getCode" | "eth_getTransactionCount" | "eth_call" => {
            at(block_ref(arg(1)), AnswerHeight::Unknown)
        }
        "eth_getStorageAt" | "eth_getProof" => at(block_ref(arg(2)), AnswerHeight::Unknown),
        "eth_getLogs" => logs(arg(0)),
        _ => Reuse::InFlight,
    }
}

/// A log filter: kept when it names a block hash or an explicit range (tagged with its highest block).
fn logs(filter: Option<&sonic_rs::Value>) -> Reuse {
    let Some(filter) = filter.and_then(|f| f.as_object()) else {
        return Reuse::InFlight;
    };
    if filter.get(&"blockHash").is_some() {
        return Reuse::InAnswer(AnswerHeight::FirstBlockNumber);
    }
    match (
        block_ref(filter.get(&"fromBlock")),
        block_ref(filter.get(&"toBlock")),
    ) {
        (BlockRef::Height(from), BlockRef::Height(to)) => Reuse::At(from.max(to)),
        _ => Reuse::InFlight,
    }
}

/// The block hash a state read (`eth_call`, `eth_getBalance`, `eth_getCode`, `eth_getTransactionCount`,
/// `eth_getStorageAt`, `eth_getProof`) is made at, as written (a hash string or EIP-1898 `{blockHash}`).
pub fn state_block_hash<'p>(method: &str, params: Option<&'p sonic_rs::Value>) -> Option<&'p str> {
    let at = match method {
        "eth_getBalance" | "eth_getCode" | "eth_getTransactionCount" | "eth_call" => 1,
        "eth_getStorageAt" | "eth_getProof" => 2,
        _ => return None,
    };
    let v = params?.as_array()?.get(at)?;
    let hash = match v.as_str() {
        Some(s) => s,
        None => v.as_object()?.get(&"blockHash")?.as_str()?,
    };
    (hash.len() == 66 && hash.starts_with("0x")).then_some(hash)
}

/// Whether a JSON-RPC `result` is empty (`null`, `[]`, `"0x"`).
pub fn is_empty_result(result: &[u8]) -> bool {
    let r = result.trim_ascii();
    r == b"null" || r == b"[]" || r == b"\"0x\""
}

/// The block height an answer names, per `from` (`None` when absent or not a number).
pub fn answer_height(result: &[u8], from: AnswerHeight) -> Option<u64> {
    let value = match from {
        AnswerHeight::BlockNumber => sonic_rs::get(result, ["blockNumber"]).ok()?,
        AnswerHeight::Number => sonic_rs::get(result, ["number"]).ok()?,
        AnswerHeight::FirstBlockNumber => {
            sonic_rs::get(result, sonic_rs::pointer![0, "blockNumber"]).ok()?
        }
        AnswerHeight::Unknown => return None,
    };
    let s = value.as_str()?;
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, params: &str) -> Reuse {
        let v: sonic_rs::Value = sonic_rs::from_str(params).unwrap();
        reuse(method, Some(&v))
    }

    #[test]
    fn reuse_table() {
        let hash = format!("\"0x{}\"", "ab".repeat(32));
        let rows: Vec<(&str, String, Reuse)> = vec![
            (
                "eth_getBlockByNumber",
                r#"["0x10",false]"#.into(),
                Reuse::At(16),
            ),
            (
                "eth_getBlockByNumber",
                r#"["latest",false]"#.into(),
                Reuse::InFlight,
            ),
            (
                "eth_getBlockByNumber",
                r#"["finalized",true]"#.into(),
                Reuse::InFlight,
            ),
            (
                "eth_getBlockByNumber",
                r#"["safe",true]"#.into(),
                Reuse::InFlight,
            ),
            (
                "eth_getBlockByNumber",
                r#"["pending",true]"#.into(),
                Reuse::InFlight,
            ),
            (
                "eth_getBlockByNumber",
                r#"["earliest",true]"#.into(),
                Reuse::At(0),
            ),
            (
                "eth_getBlockByHash",
                format!("[{hash},false]"),
                Reuse::InAnswer(AnswerHeight::Number),
            ),
            (
                "eth_getTransactionReceipt",
                format!("[{hash}]"),
                Reuse::InAnswer(AnswerHeight::BlockNumber),
            ),
            ("eth_getBlockReceipts", r#"["0x5"]"#.into(), Reuse::At(5)),
            (
                "eth_getBlockReceipts",
                format!("[{hash}]"),
                Reuse::InAnswer(AnswerHeight::FirstBlockNumber),
            ),
            ("eth_call", r#"[{"to":"0x1"},"0x20"]"#.into(), Reuse::At(32)),
            (
                "eth_call",
                r#"[{"to":"0x1"},"latest"]"#.into(),
                Reuse::InFlight,
            ),
            ("eth_call", r#"[{"to":"0x1"}]"#.into(), Reuse::InFlight),
            (
                "eth_getCode",
                format!(r#"["0x1",{{"blockHash":{hash}}}]"#),
                Reuse::InAnswer(AnswerHeight::Unknown),
            ),
            (
                "eth_getStorageAt",
                r#"["0x1","0x0",{"blockNumber":"0x7"}]"#.into(),
                Reuse::At(7),
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x1","toBlock":"0x9"}]"#.into(),
                Reuse::At(9),
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x1","toBlock":"latest"}]"#.into(),
                Reuse::InFlight,
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x1"}]"#.into(),
                Reuse::InFlight,
            ),
            (
                "eth_getLogs",
                format!(r#"[{{"blockHash":{hash}}}]"#),
                Reuse::InAnswer(AnswerHeight::FirstBlockNumber),
            ),
            ("eth_blockNumber", "[]".into(), Reuse::InFlight),
            ("eth_sendRawTransaction", r#"["0x00"]"#.into(), Reuse::Never),
            ("eth_newFilter", r#"[{}]"#.into(), Reuse::Never),
            ("eth_getFilterChanges", r#"["0x1"]"#.into(), Reuse::Never),
            ("eth_subscribe", r#"["newHeads"]"#.into(), Reuse::Never),
            ("evm_mine", "[]".into(), Reuse::Never),
            ("eth_accounts", "[]".into(), Reuse::Never),
            ("custom_method", "[]".into(), Reuse::Never),
            (
                "debug_traceTransaction",
                format!("[{hash}]"),
                Reuse::InFlight,
            ),
        ];
        for (method, params, expected) in rows {
            assert_eq!(of(method, &params), expected, "{method} {params}");
        }
    }

    #[test]
    fn state_reads_name_their_block_hash() {
        let hash = format!("0x{}", "ab".repeat(32));
        let p = |s: String| -> sonic_rs::Value { sonic_rs::from_str(&s).unwrap() };
        let v = p(format!(r#"["0x1",{{"blockHash":"{hash}"}}]"#));
        assert_eq!(
            state_block_hash("eth_getCode", Some(&v)),
            Some(hash.as_str())
        );
        let v = p(format!(r#"["0x1","0x0","{hash}"]"#));
        assert_eq!(
            state_block_hash("eth_getStorageAt", Some(&v)),
            Some(hash.as_str())
        );
        let v = p(r#"["0x1","0x10"]"#.to_string());
        assert_eq!(state_block_hash("eth_getCode", Some(&v)), None);
        let v = p(format!(r#"["{hash}"]"#));
        assert_eq!(state_block_hash("eth_getBlockByHash", Some(&v)), None);
    }

    #[test]
    fn heights_and_emptiness_are_read_from_results() {
        assert_eq!(
            answer_height(br#"{"number":"0x1f","hash":"0x1"}"#, AnswerHeight::Number),
            Some(31)
        );
        assert_eq!(
            answer_height(br#"{"blockNumber":"0x2"}"#, AnswerHeight::BlockNumber),
            Some(2)
        );
        assert_eq!(
            answer_height(br#"{"blockNumber":null}"#, AnswerHeight::BlockNumber),
            None
        );
        assert_eq!(
            answer_height(
                br#"[{"blockNumber":"0x3"}]"#,
                AnswerHeight::FirstBlockNumber
            ),
            Some(3)
        );
        assert_eq!(answer_height(b"[]", AnswerHeight::FirstBlockNumber), None);
        assert!(is_empty_result(b" null"));
        assert!(is_empty_result(b"[]"));
        assert!(!is_empty_result(b"[1]"));
    }
}
