//! Real Ethereum nodes for the real-client tests (tests/ganache.rs, tests/ws_real_clients.rs): ganache processes
//! from `tests/js/node_modules`, free ports, captured output, a minimal JSON-RPC POST, and the `listening` line of a
//! Lasso process. Every wait has a deadline; processes are killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const CHAIN_ID: u64 = 1337;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Output of a child, drained on a thread so the child never blocks on a full pipe.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    pub fn tail(&self, max_lines: usize) -> String {
        let t = self.text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(max_lines)..].join("\n")
    }
}

/// Drains `r` line by line into `cap`; each line is also sent on `tx` (if any) while someone listens.
pub fn drain<R: Read + Send + 'static>(r: R, cap: Captured, tx: Option<mpsc::Sender<String>>) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    cap.0.lock().unwrap().push_str(&line);
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    });
}

/// A spawned process that is killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, stdout_tx: Option<mpsc::Sender<String>>) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let stdout = Captured::default();
        let stderr = Captured::default();
        drain(child.stdout.take().unwrap(), stdout.clone(), stdout_tx);
        drain(child.stderr.take().unwrap(), stderr.clone(), None);
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for exit up to `limit`; None if still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                // Let the drain threads catch the last lines.
                thread::sleep(Duration::from_millis(100));
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- {} stdout (tail) ---\n{}\n--- {} stderr (tail) ---\n{}\n",
            self.name,
            self.stdout.tail(60),
            self.name,
            self.stderr.tail(60)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One JSON-RPC POST over a fresh std TcpStream (HTTP/1.1, Connection: close). Returns the body.
pub fn rpc_post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {resp:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("not 200: {head}")));
    }
    Ok(body.to_string())
}

pub fn start_ganache(name: &str, node: &Path, cli: &Path, port: u16, extra_args: &[&str]) -> Proc {
    let mut cmd = Command::new(node);
    cmd.arg(cli)
        .args(["--port", &port.to_string()])
        .args(["--server.host", "127.0.0.1"])
        .args(["--chain.chainId", &CHAIN_ID.to_string()])
        .arg("--wallet.deterministic")
        .arg("--logging.quiet")
        .args(extra_args);
    Proc::spawn(name, &mut cmd, None)
}

/// Polls `eth_blockNumber` until ganache answers a JSON-RPC result, the process dies, or the deadline passes.
pub fn wait_ganache(p: &mut Proc, port: u16, deadline: Instant) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let req = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    loop {
        if let Some(st) = p.exited() {
            panic!(
                "{} exited early ({st}) before answering eth_blockNumber\n{}",
                p.name,
                p.diagnostics()
            );
        }
        let last_err = match rpc_post(addr, "/", req, Duration::from_secs(2)) {
            Ok(body) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| {
                    panic!(
                        "{}: eth_blockNumber answer is not JSON ({e}): {body}",
                        p.name
                    )
                });
                if v.get("result")
                    .and_then(|r| r.as_str())
                    .is_some_and(|r| r.starts_with("0x"))
                {
                    return;
                }
                format!("unexpected answer {body}")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            panic!(
                "{} did not answer eth_blockNumber on port {port} in time (last: {last_err})\n{}",
                p.name,
                p.diagnostics()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Strips ANSI escape sequences (tracing's text format may colour field names).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters/intermediates until a final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `address=IP:PORT` from a `listening` log line (the contract: tests parse `address=(\S+)`).
pub fn listening_address(line: &str) -> Option<String> {
    let line = strip_ansi(line);
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("address=")? + "address=".len()..];
    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    let addr = addr.trim_matches(|c| c == '"' || c == ',').to_string();
    (!addr.is_empty()).then_some(addr)
}

pub fn find_node() -> PathBuf {
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from("node"),
        Ok(o) => panic!(
            "`node --version` failed ({}): Node 20 is required for the real-client tests",
            o.status
        ),
        Err(e) => panic!(
            "`node` not found ({e}): Node 20 is required for the real-client tests (CI installs it)"
        ),
    }
}

/// Waits (up to `limit`) for Lasso's `listening ... address=IP:PORT` line on `rx`; panics with the process's output
/// when it exits first or the deadline passes. Returns the address.
pub fn wait_listening(lasso: &mut Proc, rx: mpsc::Receiver<String>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = lasso.exited() {
            panic!(
                "lasso exited ({st}) before logging `listening`\n{}",
                lasso.diagnostics()
            );
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            panic!(
                "lasso did not log a `listening ... address=` line within {limit:?}\n{}",
                lasso.diagnostics()
            );
        }
        match rx.recv_timeout(wait.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(a) = listening_address(&line) {
                    // The drain thread keeps capturing stdout; dropping `rx` only stops the forwarding.
                    return a;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is exiting; `exited()` reports it on the next turn.
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
