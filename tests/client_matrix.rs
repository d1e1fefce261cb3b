//! The client matrix (issue 15): real, unmodified, version-pinned clients talk to the real Lasso binary in front of
//! two anvil nodes, and each test names the client and the call that failed. Clients: web3.py (HTTP single + batch;
//! `AsyncWeb3` + `WebSocketProvider` subscriptions, unsubscribe, a signed transfer), ethers v6 (`JsonRpcProvider`
//! batching; `WebSocketProvider` block and contract event listeners), viem (`http` batch; `webSocket` `watchBlocks`
//! and `watchEvent`), cast (block-number, block, logs, send, receipt over HTTP and WebSocket) and
//! `anvil --fork-url` (a fork through Lasso reads the same code, storage and balances as a fork of the node) and the
//! Ponder indexer (`tests/clients/ponder`, embedded PGlite: the rows it indexes through Lasso equal the rows it indexes
//! straight from the node, and hold every Tick emitted).
//!
//! Dependencies live in `tests/clients/` (`package-lock.json`, `requirements.txt`) and are installed by
//! `.ci/clients.sh`, which `.ci/run` calls; a missing one fails the test with a message naming that script.
//!
//! Each test starts its own anvil pair and Lasso: p1 (priority 1) mines on every transaction, p2 (priority 2) is an
//! idle standby; `hedge: false` so no read is answered by p2's other chain. Before the clients run, the test deploys
//! a small Tick contract on p1 (every call adds 1 to storage slot 0, starting at 42, and emits `Tick(uint256)` with
//! the new value). After them, it checks that p2 mined nothing: every transaction went to p1.

mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::Lasso;
use support::anvil::*;
use support::eventually;
use support::ganache::{Proc, find_node, free_port};

/// Init code of the Tick contract: stores 42 in slot 0 and returns the runtime
/// `slot0 += 1; mstore(0, slot0); log1(0, 32, keccak256("Tick(uint256)"))` (hand-assembled, 52 bytes).
const TICK_INIT_CODE: &str = "0x602a60005560348060106000396000f3600054600101806000556000527fb8c95b3cea6303a753d912e243\
                              354ef08add1085ed07d34191514ef1001ef9d860206000a100";
/// `tick()` and the topic of `Tick(uint256)`.
const TICK_SELECTOR: &str = "0x3eaf5d9f";
const TICK_TOPIC: &str = "0xb8c95b3cea6303a753d912e243354ef08add1085ed07d34191514ef1001ef9d8";
/// Calls each client makes to the Tick contract.
const TICKS: u64 = 3;
/// Whole run of one client script.
const CLIENT_RUN: Duration = Duration::from_secs(60);
/// One cast command.
const CAST_RUN: Duration = Duration::from_secs(30);
/// Stall detection of Lasso's feeds is 3 block times: the nodes only mine on a transaction, so a long block time
/// keeps the feeds on p1 between transactions.
const BLOCK_TIME_MS: u64 = 60_000;

/// The anvil nodes hold unlocked keys: the clients' `eth_accounts` / `eth_sendTransaction` (ethers `getSigner`,
/// viem `sendTransaction` from an address, `cast send --unlocked`) are refused by Lasso's default deny list unless the
/// operator opens them by name for these providers, as an operator of a dev node would.
const DEV_NODE_METHODS: &str = "{ allow: [\"*\", eth_accounts, eth_sendTransaction] }";

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
             - id: p1\n        url: {}\n        ws_url: {}\n        priority: 1\n        methods: {DEV_NODE_METHODS}\n      \
             - id: p2\n        url: {}\n        ws_url: {}\n        priority: 2\n        methods: {DEV_NODE_METHODS}\n",
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

/// Runs `cast <args> --rpc-url <url>` to the end; panics naming the subcommand and the transport.
fn cast(m: &Matrix, transport: &str, url: &str, args: &[&str]) -> String {
    let call = format!("cast {} over {transport}", args[0]);
    let mut cmd = Command::new(cast_bin());
    cmd.args(args)
        .args(["--rpc-url", url])
        .env_remove("ETH_RPC_URL")
        .env("NO_COLOR", "1")
        .current_dir(clients_dir());
    let mut proc = Proc::spawn(&call, &mut cmd, None);
    match proc.wait_for(CAST_RUN) {
        Some(st) if st.success() => proc.stdout.text().trim().to_string(),
        Some(st) => panic!("{call} failed ({st})\n{}", m.diagnostics(&proc)),
        None => panic!(
            "{call} did not finish within {CAST_RUN:?}\n{}",
            m.diagnostics(&proc)
        ),
    }
}

fn cast_json(m: &Matrix, transport: &str, url: &str, args: &[&str]) -> Value {
    let out = cast(m, transport, url, args);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("cast {} over {transport}: not JSON ({e}): {out}", args[0]))
}

/// block-number, block, send, receipt and logs, each checked against what the node itself answers.
fn cast_matrix(transport: &str, url_of: fn(&Matrix) -> String) {
    let m = Matrix::start();
    let url = url_of(&m);
    let who = |call: &str| format!("cast {call} over {transport}");

    let sent = cast_json(
        &m,
        transport,
        &url,
        &[
            "send",
            &m.contract,
            "tick()",
            "--from",
            ACCOUNT0,
            "--unlocked",
            "--json",
        ],
    );
    assert_eq!(sent["status"], "0x1", "{}: receipt {sent}", who("send"));
    let tx = sent["transactionHash"].as_str().expect("transactionHash");

    let head: u64 = cast(&m, transport, &url, &["block-number"])
        .parse()
        .unwrap_or_else(|e| panic!("{}: not a number: {e}", who("block-number")));
    let node_head = quantity(&m.p1.rpc("eth_blockNumber", json!([])));
    assert_eq!(
        head,
        node_head,
        "{}: node says {node_head}",
        who("block-number")
    );

    let block = cast_json(&m, transport, &url, &["block", &head.to_string(), "--json"]);
    let node_block =
        m.p1.rpc("eth_getBlockByNumber", json!([format!("{head:#x}"), false]));
    assert_eq!(
        block["hash"],
        node_block["hash"],
        "{}: {block}",
        who("block")
    );

    let receipt = cast_json(&m, transport, &url, &["receipt", tx, "--json"]);
    let node_receipt = m.p1.rpc("eth_getTransactionReceipt", json!([tx]));
    for field in ["blockHash", "blockNumber", "status", "gasUsed"] {
        assert_eq!(
            receipt[field],
            node_receipt[field],
            "{}: {field} in {receipt}",
            who("receipt")
        );
    }
    assert_eq!(
        receipt["logs"].as_array().map(Vec::len),
        Some(1),
        "{}: {receipt}",
        who("receipt")
    );

    let logs = cast_json(
        &m,
        transport,
        &url,
        &[
            "logs",
            "--from-block",
            "0",
            "--to-block",
            "latest",
            "--address",
            &m.contract,
            "Tick(uint256)",
            "--json",
        ],
    );
    let node_logs = m.p1.rpc(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest", "address": m.contract, "topics": [TICK_TOPIC]}]),
    );
    let key = |v: &Value| -> Vec<(Value, Value, Value)> {
        v.as_array()
            .unwrap_or_else(|| panic!("{}: not a list: {v}", who("logs")))
            .iter()
            .map(|l| {
                (
                    l["blockHash"].clone(),
                    l["logIndex"].clone(),
                    l["data"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(key(&logs), key(&node_logs), "{}: {logs}", who("logs"));
    assert_eq!(
        key(&logs).len(),
        1,
        "{}: one tick, one log: {logs}",
        who("logs")
    );
    m.assert_p2_untouched(&who("send"));
}

#[test]
fn cast_over_http() {
    cast_matrix("HTTP", Matrix::http_url);
}

#[test]
fn cast_over_websocket() {
    cast_matrix("WebSocket", Matrix::ws_url);
}

#[test]
fn anvil_fork_through_lasso_reads_what_a_fork_of_the_node_reads() {
    let m = Matrix::start();
    m.p1.send_and_mine(json!({"from": ACCOUNT0, "to": m.contract, "data": TICK_SELECTOR}));
    let through_lasso = Anvil::start("anvil --fork-url <lasso>", &["--fork-url", &m.http_url()]);
    let straight = Anvil::start("anvil --fork-url <node>", &["--fork-url", &m.p1.http_url()]);
    let reads = [
        ("eth_chainId", json!([])),
        ("eth_blockNumber", json!([])),
        ("eth_getBlockByNumber", json!(["latest", false])),
        ("eth_getCode", json!([m.contract, "latest"])),
        ("eth_getStorageAt", json!([m.contract, "0x0", "latest"])),
        ("eth_getBalance", json!([ACCOUNT0, "latest"])),
        ("eth_getBalance", json!([ACCOUNT1, "latest"])),
        ("eth_getTransactionCount", json!([ACCOUNT0, "latest"])),
    ];
    for (method, params) in reads {
        let want = straight.rpc(method, params.clone());
        let got = through_lasso.rpc(method, params.clone());
        let got = if method == "eth_getBlockByNumber" {
            (got["hash"].clone(), got["number"].clone())
        } else {
            (got, Value::Null)
        };
        let want = if method == "eth_getBlockByNumber" {
            (want["hash"].clone(), want["number"].clone())
        } else {
            (want, Value::Null)
        };
        assert_eq!(
            got,
            want,
            "anvil --fork-url <lasso> {method} {params}: differs from a fork of the node\n{}",
            through_lasso.proc.diagnostics()
        );
    }
    let slot0 = through_lasso.rpc("eth_getStorageAt", json!([m.contract, "0x0", "latest"]));
    assert_eq!(
        quantity(&slot0),
        43,
        "anvil --fork-url <lasso> eth_getStorageAt: slot 0 after one tick"
    );
    // The fork runs the contract code it read through Lasso; the node is left as it was.
    through_lasso.send_and_mine(json!({"from": ACCOUNT0, "to": m.contract, "data": TICK_SELECTOR}));
    let forked = through_lasso.rpc("eth_getStorageAt", json!([m.contract, "0x0", "latest"]));
    let node =
        m.p1.rpc("eth_getStorageAt", json!([m.contract, "0x0", "latest"]));
    assert_eq!(
        (quantity(&forked), quantity(&node)),
        (44, 43),
        "anvil --fork-url <lasso> tick(): (fork, node) slot 0"
    );
    m.assert_p2_untouched("anvil --fork-url <lasso>");
}

/// Ticks the Ponder test makes before indexing.
const PONDER_TICKS: u64 = 5;
/// One Ponder run: build, PGlite start, backfill and live indexing up to the head (about 15 s on a busy 2-core box).
const PONDER_RUN: Duration = Duration::from_secs(120);

/// One GET to a Ponder HTTP server; `Err` while it is not up or answers another status.
fn ponder_get(port: u16, path: &str) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn =
        support::http::Conn::try_connect(addr).map_err(|e| format!("GET {path}: {e}"))?;
    conn.send(&support::http::request_bytes("GET", path, &[], b""));
    let resp = conn
        .try_read_response()
        .map_err(|e| format!("GET {path}: {e}"))?;
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    if resp.status == 200 {
        Ok(body)
    } else {
        Err(format!("GET {path}: {} {body}", resp.status))
    }
}

/// Runs `ponder start` (tests/clients/ponder) against `rpc_url` with a fresh PGlite directory until it has indexed
/// up to block `head`, and returns its rows (GET /ticks); the process is killed on return.
fn ponder_rows(m: &Matrix, client: &str, rpc_url: &str, head: u64) -> Value {
    let db = tempfile::tempdir().expect("tempdir for PGlite");
    let port = free_port();
    let mut cmd = Command::new(find_node());
    cmd.arg(installed("node_modules/ponder/dist/esm/bin/ponder.js"))
        .args(["--root", "ponder", "--log-format", "json", "start"])
        .args(["--schema", "public", "--port", &port.to_string()])
        .args(["--hostname", "127.0.0.1"])
        .env("PONDER_RPC_URL", rpc_url)
        .env("PONDER_PGLITE_DIR", db.path())
        .env("PONDER_TELEMETRY_DISABLED", "true")
        .env("NO_COLOR", "1");
    m.client_env(&mut cmd);
    cmd.current_dir(clients_dir());
    let mut proc = Proc::spawn(client, &mut cmd, None);
    // Ready (backfill done) and the live head reached: /status names the last block indexed.
    let indexed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(
            PONDER_RUN,
            &format!("{client}: indexed up to block {head}"),
            || {
                if let Some(st) = proc.exited() {
                    return Ok(Err(format!("exited ({st})")));
                }
                ponder_get(port, "/ready")?;
                let status: Value = serde_json::from_str(&ponder_get(port, "/status")?)
                    .map_err(|e| format!("/status: not JSON: {e}"))?;
                match status["devnet"]["block"]["number"].as_u64() {
                    Some(n) if n >= head => Ok(Ok(())),
                    _ => Err(format!("/status: {status}")),
                }
            },
        )
    }));
    match indexed {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{client} {why}\n{}", m.diagnostics(&proc)),
        Err(_) => panic!(
            "{client} GET /status: not at block {head}\n{}",
            m.diagnostics(&proc)
        ),
    }
    let body = ponder_get(port, "/ticks")
        .unwrap_or_else(|e| panic!("{client} {e}\n{}", m.diagnostics(&proc)));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{client} GET /ticks: not JSON ({e}): {body}"))
}

#[test]
fn ponder_indexes_through_lasso_the_rows_it_indexes_from_the_node() {
    let m = Matrix::start();
    let mut emitted = Vec::new();
    for i in 0..PONDER_TICKS {
        let r =
            m.p1.send_and_mine(json!({"from": ACCOUNT0, "to": m.contract, "data": TICK_SELECTOR}));
        let log = &r["logs"][0];
        emitted.push(json!({
            "blockNumber": quantity(&r["blockNumber"]).to_string(),
            "logIndex": quantity(&log["logIndex"]),
            "txHash": r["transactionHash"],
            "value": (43 + i).to_string(),
        }));
    }
    let head = quantity(&m.p1.rpc("eth_blockNumber", json!([])));
    let through_lasso = ponder_rows(&m, "ponder <lasso>", &m.http_url(), head);
    let straight = ponder_rows(&m, "ponder <node>", &m.p1.http_url(), head);
    assert_eq!(
        through_lasso, straight,
        "ponder <lasso> GET /ticks: rows differ from ponder <node>"
    );
    assert_eq!(
        straight,
        Value::Array(emitted),
        "ponder <node> GET /ticks: not every Tick emitted"
    );
    m.assert_p2_untouched("ponder <lasso>");
}
