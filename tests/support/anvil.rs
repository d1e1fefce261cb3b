//! anvil nodes and the client binaries of the client matrix (tests/client_matrix.rs), all from
//! `tests/clients/node_modules` and `tests/clients/.venv`, which `.ci/clients.sh` installs. A missing one is a test
//! failure naming that script. Every wait has a deadline; processes are killed on drop (via [`Proc`]).

use super::eventually;
use super::ganache::{Proc, repo_root, rpc_post};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// anvil's default chain id.
pub const ANVIL_CHAIN_ID: u64 = 31337;
/// anvil's first two dev accounts (mnemonic "test test ... junk"); both unlocked on every anvil node.
pub const ACCOUNT0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
pub const ACCOUNT1: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// How long an anvil process gets to print `Listening on IP:PORT`.
pub const ANVIL_READY: Duration = Duration::from_secs(20);
/// One JSON-RPC call made by the test itself (not by a client).
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// anvil mines a transaction a moment after accepting it.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `tests/clients`: the matrix's scripts, npm packages and Python venv.
pub fn clients_dir() -> PathBuf {
    repo_root().join("tests/clients")
}

/// A file the matrix needs from `.ci/clients.sh`; panics naming the script when it is not there.
pub fn installed(rel: &str) -> PathBuf {
    let p = clients_dir().join(rel);
    assert!(
        p.exists(),
        "client matrix dependency missing: tests/clients/{rel} (run `bash .ci/clients.sh`; `bash .ci/run` does)"
    );
    p
}

pub fn anvil_bin() -> PathBuf {
    installed("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

pub fn cast_bin() -> PathBuf {
    installed("node_modules/@foundry-rs/cast-linux-amd64/bin/cast")
}

pub fn venv_python() -> PathBuf {
    installed(".venv/bin/python")
}

/// A running anvil node on 127.0.0.1 (port chosen by anvil), killed on drop.
pub struct Anvil {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Anvil {
    /// Starts `anvil --host 127.0.0.1 --port 0 <extra>` and waits for its `Listening on` line.
    pub fn start(name: &str, extra: &[&str]) -> Anvil {
        let (tx, rx) = mpsc::channel();
        let mut cmd = Command::new(anvil_bin());
        cmd.args(["--host", "127.0.0.1", "--port", "0"]).args(extra);
        let mut proc = Proc::spawn(name, &mut cmd, Some(tx));
        let deadline = Instant::now() + ANVIL_READY;
        loop {
            if let Some(st) = proc.exited() {
                panic!(
                    "{name} exited ({st}) before listening\n{}",
                    proc.diagnostics()
                );
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                panic!(
                    "{name} printed no `Listening on` line within {ANVIL_READY:?}\n{}",
                    proc.diagnostics()
                );
            }
            if let Ok(line) = rx.recv_timeout(wait.min(Duration::from_millis(200))) {
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    let addr = addr
                        .parse()
                        .unwrap_or_else(|e| panic!("{name}: bad address {addr:?}: {e}"));
                    return Anvil { proc, addr };
                }
            }
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The `result` of one call straight to this node; panics on an error answer.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        rpc_result(self.addr, "/", &self.proc.name, method, params)
    }

    /// `eth_sendTransaction` from an unlocked dev account, then its receipt once anvil has mined it.
    pub fn send_and_mine(&self, tx: Value) -> Value {
        let hash = self.rpc("eth_sendTransaction", serde_json::json!([tx]));
        let receipt = eventually(
            RECEIPT_TIMEOUT,
            &format!("{}: receipt of {hash}", self.proc.name),
            || match self.rpc("eth_getTransactionReceipt", serde_json::json!([hash])) {
                Value::Null => Err("no receipt yet".to_string()),
                r => Ok(r),
            },
        );
        assert_eq!(
            receipt["status"], "0x1",
            "{}: transaction failed: {receipt}",
            self.proc.name
        );
        receipt
    }
}

/// The `result` of one JSON-RPC call to `addr` + `path`; panics (naming `who` and the method) otherwise.
pub fn rpc_result(addr: SocketAddr, path: &str, who: &str, method: &str, params: Value) -> Value {
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let body =
        rpc_post(addr, path, &req, RPC_TIMEOUT).unwrap_or_else(|e| panic!("{who} {method}: {e}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{who} {method}: not JSON ({e}): {body}"));
    match v.get("result") {
        Some(r) if v.get("error").is_none() => r.clone(),
        _ => panic!("{who} {method}: no result: {body}"),
    }
}

/// A hex quantity (`"0x1a"`) as a number.
pub fn quantity(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("bad quantity {s}: {e}"))
}
