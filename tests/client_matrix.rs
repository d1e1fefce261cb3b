//! The client matrix (issue 15): real, unmodified, version-pinned clients talk to the real Lasso binary in front of
//! two anvil nodes, and each test names the client and the call that failed. Clients: web3.py (HTTP single + batch;
//! `AsyncWeb3` + `WebSocketProvider` subscriptions, unsubscribe, a signed transfer), ethers v6 (`JsonRpcProvider`
//! batching; `WebSocketProvider` block and contract event listeners), viem (`http` batch; `webSocket` `watchBlocks`
//! and `watchEvent`), cast (block-number, block, logs, send, receipt over HTTP and WebSocket) and
//! `anvil --fork-url` (a fork through Lasso reads the same code, storage and balances as a fork of the node).
//!
//! Dependencies live in `tests/clients/` (`package-lock.json`, `requirements.txt`) and are installed by
//! `.ci/clients.sh`, which `.ci/run` calls; a missing one fails the test with a message naming that script.
//!
//! Each test starts its own anvil pair and Lasso: p1 (priority 1) mines on every transaction, p2 (priority 2) is an
//! idle standby; `hedge: false` so no read is answered by p2's other chain. Before the clients run, the test deploys
//! a small Tick contract on p1 (every call adds 1 to storage slot 0, starting at 42, and emits `Tick(uint256)` with
//! the new value). After them, it checks that p2 mined nothing: every transaction went to p1.

mod support;

use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::Lasso;
use support::anvil::*;
use support::ganache::{Proc, find_node};

/// Init code of the Tick contract: stores 42 in slot 0 and returns the runtime
/// `slot0 += 1; mstore(0, slot0); log1(0, 32, keccak256("Tick(uint256)"))` (hand-assembled, 52 bytes).
const TICK_INIT_CODE: &str = "0x602a60005560348060106000396000f3600054600101806000556000527fb8c95b3cea6303a753d912e243\
                              354ef08add1085ed07d34191514ef1001ef9d860206000a100";
/// Calls each client makes to the Tick contract.
const TICKS: u64 = 3;
/// Whole run of one client script.
const CLIENT_RUN: Duration = Duration::from_secs(60);
/// Stall detection of Lasso's feeds is 3 block times: the nodes only mine on a transaction, so a long block time
/// keeps the feeds on p1 between transactions.
const BLOCK_TIME_MS: u64 = 60_000;

/// Two anvil nodes, a Tick contract on p1, and Lasso in front.
struct Matrix {
    lasso: Lasso,
    p1: Anvil,
    p2: Anvil,
    contract: String,
}

impl Matrix {
    fn start() -> Matrix {
        let p1 = Anvil::start("anvil-p1", &[]);
        let p2 = Anvil::start("anvil-p2", &[]);
        let receipt =
            p1.send_and_mine(json!({"from": ACCOUNT0, "data": TICK_INIT_CODE, "gas": "0x30000"}));
        let contract = receipt["contractAddress"]
            .as_str()
            .expect("contractAddress")
            .to_string();
        let config = format!(
            "chains:\n  devnet:\n    chain_id: {ANVIL_CHAIN_ID}\n    block_time_ms: {BLOCK_TIME_MS}\n    \
             default_strategy: priority\n    hedge: false\n    providers:\n      \
             - id: p1\n        url: {}\n        ws_url: {}\n        priority: 1\n      \
             - id: p2\n        url: {}\n        ws_url: {}\n        priority: 2\n",
            p1.http_url(),
            p1.ws_url(),
            p2.http_url(),
            p2.ws_url()
        );
        let lasso = Lasso::start(&config);
        Matrix {
            lasso,
            p1,
            p2,
            contract,
        }
    }

    fn http_url(&self) -> String {
        self.lasso.url("/rpc/devnet")
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws/rpc/devnet", self.lasso.addr())
    }

    /// What every client script reads from its environment.
    fn client_env(&self, cmd: &mut Command) {
        cmd.env("LASSO_HTTP_URL", self.http_url())
            .env("LASSO_WS_URL", self.ws_url())
            .env("LASSO_CHAIN_ID", ANVIL_CHAIN_ID.to_string())
            .env("LASSO_CONTRACT", &self.contract)
            .env("LASSO_TICKS", TICKS.to_string());
    }

    /// Runs a client script to the end; panics naming `client` (the script prints the failed call) with every
    /// process's output.
    fn run_client(&self, client: &str, cmd: &mut Command) -> String {
        self.client_env(cmd);
        cmd.current_dir(clients_dir());
        let mut proc = Proc::spawn(client, cmd, None);
        let status = proc.wait_for(CLIENT_RUN);
        let out = proc.stdout.text();
        match status {
            Some(st) if st.success() => {}
            Some(st) => panic!(
                "{client} failed ({st}): {}\n{}",
                failed_call(&out),
                self.diagnostics(&proc)
            ),
            None => panic!(
                "{client} did not finish within {CLIENT_RUN:?}\n{}",
                self.diagnostics(&proc)
            ),
        }
        eprint!("{out}");
        self.assert_p2_untouched(client);
        out
    }

    fn diagnostics(&self, client: &Proc) -> String {
        format!(
            "{}{}{}--- lasso logs (tail) ---\n{}\n",
            client.diagnostics(),
            self.p1.proc.diagnostics(),
            self.p2.proc.diagnostics(),
            support::lasso::tail(&self.lasso.logs(), 60)
        )
    }

    /// p2 is the standby: a transaction routed there would have mined a block on it.
    fn assert_p2_untouched(&self, client: &str) {
        let p2_head = quantity(&self.p2.rpc("eth_blockNumber", json!([])));
        assert_eq!(
            p2_head, 0,
            "{client}: a transaction went to p2 (priority 2), which mined {p2_head} blocks"
        );
    }
}

/// The `FAIL ...` line a client script printed, or a note that it printed none.
fn failed_call(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("FAIL "))
        .unwrap_or("(no FAIL line: see its output below)")
        .to_string()
}

fn python(script: &str, arg: &str) -> Command {
    let mut cmd = Command::new(venv_python());
    cmd.arg(installed(script)).arg(arg);
    cmd
}

#[test]
fn web3py_http_single_and_batch_calls() {
    let m = Matrix::start();
    m.run_client("web3.py http", &mut python("web3py_client.py", "http"));
}

#[test]
fn web3py_websocket_subscriptions_unsubscribe_and_signed_transfer() {
    let m = Matrix::start();
    m.run_client("web3.py ws", &mut python("web3py_client.py", "ws"));
}

fn node_script(script: &str, arg: &str) -> Command {
    let mut cmd = Command::new(find_node());
    cmd.arg(installed(script)).arg(arg);
    installed("node_modules/ethers");
    installed("node_modules/viem");
    cmd
}

#[test]
fn ethers_http_batching_and_signer() {
    let m = Matrix::start();
    m.run_client("ethers http", &mut node_script("ethers_client.mjs", "http"));
}

#[test]
fn ethers_websocket_block_and_contract_event_listeners() {
    let m = Matrix::start();
    m.run_client("ethers ws", &mut node_script("ethers_client.mjs", "ws"));
}

#[test]
fn viem_http_batch() {
    let m = Matrix::start();
    m.run_client("viem http", &mut node_script("viem_client.mjs", "http"));
}

#[test]
fn viem_websocket_watch_blocks_and_watch_event() {
    let m = Matrix::start();
    m.run_client("viem ws", &mut node_script("viem_client.mjs", "ws"));
}
