//! Spawning the real `lasso` binary, and writing its config.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a Lasso process gets to print its `listening` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

pub fn lasso_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lasso")
}

/// Every variable Lasso reads, removed from each spawned process so results never depend on the shell; tests set
/// the ones they need explicitly.
const SCRUBBED_ENV: &[&str] = lasso::config::env::ALL;

/// Set by CI to run the suite on another event-loop driver (`legacy` = epoll): passed to every Lasso started here
/// as `LASSO_DRIVER`. This is the one variable of the test shell that reaches the process under test.
const TEST_DRIVER: &str = "LASSO_TEST_DRIVER";

fn test_driver() -> Option<String> {
    std::env::var(TEST_DRIVER).ok().filter(|v| !v.is_empty())
}

#[derive(Default)]
struct LogState {
    text: String,
    open_pipes: usize,
    /// While set, the stdout drain reads nothing: the pipe fills as behind a stalled log shipper.
    stdout_paused: bool,
}

/// Captured stdout+stderr, appended line by line by the drain threads.
#[derive(Default)]
struct Logs {
    state: Mutex<LogState>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes ANSI escape sequences (CSI ... final byte).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c2) {
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

fn drain<R: Read + Send + 'static>(pipe: R, logs: Arc<Logs>, tag: &'static str) -> JoinHandle<()> {
    thread::Builder::new()
        .name(format!("lasso-{tag}"))
        .spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                if tag == "stdout" && r.buffer().is_empty() {
                    let mut st = lock(&logs.state);
                    while st.stdout_paused {
                        st = logs.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                }
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        let mut st = lock(&logs.state);
                        st.text.push_str(&text);
                        if !text.ends_with('\n') {
                            st.text.push('\n');
                        }
                        drop(st);
                        logs.cv.notify_all();
                    }
                }
            }
            lock(&logs.state).open_pipes -= 1;
            logs.cv.notify_all();
        })
        .expect("spawn log drain thread")
}

/// Builder for a [`Lasso`] process.
pub struct LassoBuilder {
    config: String,
    files: Vec<(String, String)>,
    workers: usize,
    env: Vec<(String, String)>,
    rust_log: String,
    dir: Option<PathBuf>,
}

impl LassoBuilder {
    /// Runs in `dir` (config `dir/lasso.yml`, written from the builder's text) instead of a fresh temporary
    /// directory, so a later process can start on what an earlier one left there.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// `RUST_LOG` for the process (default `info`).
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_string();
        self
    }

    /// An extra file next to the config (e.g. a profile file referenced by a relative path).
    pub fn file(mut self, rel: &str, content: &str) -> Self {
        self.files.push((rel.to_string(), content.to_string()));
        self
    }

    /// Spawns Lasso and waits for its `listening` line. Panics (with the logs) on failure.
    pub fn start(self) -> Lasso {
        let temp = match &self.dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("tempdir")),
        };
        let dir_path = match (&self.dir, &temp) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.path().to_path_buf(),
            (None, None) => unreachable!(),
        };
        let config_path = dir_path.join("lasso.yml");
        std::fs::write(&config_path, &self.config).unwrap();
        for (rel, content) in &self.files {
            let p = dir_path.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let mut cmd = Command::new(lasso_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .args(["--port", "0", "--bind", "127.0.0.1", "--workers"])
            .arg(self.workers.to_string())
            .current_dir(&dir_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd.env("NO_COLOR", "1").env("RUST_LOG", &self.rust_log);
        if let Some(driver) = test_driver() {
            cmd.env(lasso::config::env::DRIVER, driver);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", lasso_bin()));
        let logs = Arc::new(Logs::default());
        lock(&logs.state).open_pipes = 2;
        let readers = vec![
            drain(child.stdout.take().unwrap(), logs.clone(), "stdout"),
            drain(child.stderr.take().unwrap(), logs.clone(), "stderr"),
        ];
        let mut lasso = Lasso {
            child: Some(child),
            addr: None,
            logs,
            readers,
            config_path,
            config: self.config,
            _dir: temp,
        };
        match lasso.wait_listening(STARTUP_TIMEOUT) {
            Ok(addr) => {
                lasso.addr = Some(addr);
                if test_driver().as_deref() == Some("legacy") {
                    // The driver line comes before `listening`: a run meant for epoll must really be on epoll.
                    let logs = lasso.logs();
                    assert!(
                        logs.contains("io driver: legacy"),
                        "{TEST_DRIVER}=legacy but Lasso did not use the legacy driver:\n{logs}"
                    );
                }
            }
            Err(why) => {
                let status = lasso.kill_and_wait();
                panic!(
                    "lasso did not start: {why} (exit: {status:?})\n--- config ---\n{}\n--- logs ---\n{}",
                    lasso.config,
                    lasso.logs()
                );
            }
        }
        lasso
    }
}

/// A running `lasso` process; killed on drop.
pub struct Lasso {
    child: Option<Child>,
    addr: Option<SocketAddr>,
    logs: Arc<Logs>,
    readers: Vec<JoinHandle<()>>,
    config_path: PathBuf,
    config: String,
    _dir: Option<tempfile::TempDir>,
}

/// The last `lines` lines of `s`.
pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Parses `address=IP:PORT` out of a log line (quotes tolerated).
pub fn parse_address(line: &str) -> Option<SocketAddr> {
    let i = line.find("address=")?;
    let rest = &line[i + "address=".len()..];
    let tok: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != '}')
        .collect();
    tok.trim_matches('"').parse().ok()
}

impl Lasso {
    pub fn builder(config_yaml: &str) -> LassoBuilder {
        LassoBuilder {
            config: config_yaml.to_string(),
            files: Vec::new(),
            workers: 2,
            env: Vec::new(),
            rust_log: "info".to_string(),
            dir: None,
        }
    }

    /// Starts Lasso with 2 workers and default env.
    pub fn start(config_yaml: &str) -> Lasso {
        Lasso::builder(config_yaml).start()
    }

    fn wait_listening(&self, timeout: Duration) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.logs.state);
        loop {
            for line in st.text.lines() {
                if line.contains("listening") {
                    if let Some(a) = parse_address(line) {
                        return Ok(a);
                    }
                }
            }
            if st.open_pipes == 0 {
                return Err("process closed stdout/stderr (exited?)".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no `listening ... address=IP:PORT` line within {timeout:?}"
                ));
            }
            st = self
                .logs
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("lasso address")
    }

    /// `http://IP:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Stops (`true`) or resumes reading the process's stdout: while stopped its pipe fills up, like a log shipper
    /// that stalled. Lines already read stay in [`Lasso::logs`].
    pub fn pause_stdout(&self, paused: bool) {
        lock(&self.logs.state).stdout_paused = paused;
        self.logs.cv.notify_all();
    }

    /// Everything the process printed so far (stdout and stderr interleaved by line, ANSI stripped).
    pub fn logs(&self) -> String {
        lock(&self.logs.state).text.clone()
    }

    /// Waits until the logs contain `needle`; false at the deadline.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.logs.state);
        loop {
            if st.text.contains(needle) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.open_pipes == 0 {
                return st.text.contains(needle);
            }
            st = self
                .logs
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn send_signal(&self, sig: i32) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for the process to exit (bounded). Panics with the logs at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        // The exit closes both pipes: wait for that event first.
        {
            let mut st = lock(&self.logs.state);
            while st.open_pipes > 0 {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = self
                    .logs
                    .cv
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let child = self.child.as_mut().expect("child");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let logs = self.logs();
                panic!("lasso did not exit within {timeout:?}\n--- logs ---\n{logs}");
            }
            // Pipes may be closed a moment before the kernel reports the exit.
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_and_wait(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let status = match child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                let _ = child.kill();
                child.wait().ok()
            }
        };
        self.pause_stdout(false);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }
}

impl Drop for Lasso {
    fn drop(&mut self) {
        self.kill_and_wait();
        if thread::panicking() && std::env::var_os("LASSO_TEST_LOGS").is_some() {
            eprintln!("--- lasso logs ---\n{}", self.logs());
        }
    }
}

/// Runs `lasso` with arbitrary args to completion (bounded); used for `check-config`.
pub fn run_lasso(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = Command::new(lasso_bin());
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in SCRUBBED_ENV {
        cmd.env_remove(k);
    }
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn lasso");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = BufReader::new(out).read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = BufReader::new(err).read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lasso {args:?} did not exit within {timeout:?}");
        }
        // No event to wait on for a child's exit in std; poll with a bounded deadline.
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// Config writing

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A provider entry of a chain.
#[derive(Clone, Debug)]
pub struct Provider {
    pub id: String,
    pub url: String,
    pub name: Option<String>,
    pub ws_url: Option<String>,
    pub priority: Option<i64>,
    pub cost: Option<f64>,
    pub api_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub archival: Option<bool>,
    /// `batch:` (upstream batching opt-in) and `batch_max:`.
    pub batch: Option<bool>,
    pub batch_max: Option<usize>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

impl Provider {
    pub fn new(id: &str, url: &str) -> Provider {
        Provider {
            id: id.to_string(),
            url: url.to_string(),
            name: None,
            ws_url: None,
            priority: None,
            cost: None,
            api_key: None,
            headers: Vec::new(),
            archival: None,
            batch: None,
            batch_max: None,
            allow: None,
            deny: None,
        }
    }

    pub fn name(mut self, n: &str) -> Self {
        self.name = Some(n.to_string());
        self
    }

    pub fn ws_url(mut self, u: &str) -> Self {
        self.ws_url = Some(u.to_string());
        self
    }

    pub fn priority(mut self, p: i64) -> Self {
        self.priority = Some(p);
        self
    }

    pub fn cost(mut self, c: f64) -> Self {
        self.cost = Some(c);
        self
    }

    pub fn api_key(mut self, k: &str) -> Self {
        self.api_key = Some(k.to_string());
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn archival(mut self, a: bool) -> Self {
        self.archival = Some(a);
        self
    }

    /// Opts this provider in to (or out of) upstream batching, with an optional batch size.
    pub fn batch(mut self, on: bool, max: Option<usize>) -> Self {
        self.batch = Some(on);
        self.batch_max = max;
        self
    }

    pub fn allow(mut self, methods: &[&str]) -> Self {
        self.allow = Some(methods.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn deny(mut self, methods: &[&str]) -> Self {
        self.deny = Some(methods.iter().map(|s| s.to_string()).collect());
        self
    }

    fn yaml(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        out.push_str(&format!("{pad}- id: {}\n", q(&self.id)));
        let pad = " ".repeat(indent + 2);
        out.push_str(&format!("{pad}url: {}\n", q(&self.url)));
        if let Some(n) = &self.name {
            out.push_str(&format!("{pad}name: {}\n", q(n)));
        }
        if let Some(w) = &self.ws_url {
            out.push_str(&format!("{pad}ws_url: {}\n", q(w)));
        }
        if let Some(p) = self.priority {
            out.push_str(&format!("{pad}priority: {p}\n"));
        }
        if let Some(c) = self.cost {
            out.push_str(&format!("{pad}cost: {c}\n"));
        }
        if let Some(k) = &self.api_key {
            out.push_str(&format!("{pad}api_key: {}\n", q(k)));
        }
        if !self.headers.is_empty() {
            out.push_str(&format!("{pad}headers:\n"));
            for (k, v) in &self.headers {
                out.push_str(&format!("{pad}  {}: {}\n", q(k), q(v)));
            }
        }
        if let Some(a) = self.archival {
            out.push_str(&format!("{pad}archival: {a}\n"));
        }
        if let Some(b) = self.batch {
            out.push_str(&format!("{pad}batch: {b}\n"));
        }
        if let Some(m) = self.batch_max {
            out.push_str(&format!("{pad}batch_max: {m}\n"));
        }
        if self.allow.is_some() || self.deny.is_some() {
            out.push_str(&format!("{pad}methods:\n"));
            let list = |v: &Vec<String>| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
            if let Some(a) = &self.allow {
                out.push_str(&format!("{pad}  allow: [{}]\n", list(a)));
            }
            if let Some(d) = &self.deny {
                out.push_str(&format!("{pad}  deny: [{}]\n", list(d)));
            }
        }
    }
}

/// A chain entry.
#[derive(Clone, Debug)]
pub struct Chain {
    pub name: String,
    /// The YAML scalar written after `chain_id:` (e.g. `1` or `"0xc72dd9d5e883e"`).
    pub chain_id: String,
    pub aliases: Vec<String>,
    pub block_time_ms: Option<u64>,
    pub strategy: Option<String>,
    pub providers: Vec<Provider>,
}

impl Chain {
    pub fn new(name: &str, chain_id: u64) -> Chain {
        Chain {
            name: name.to_string(),
            chain_id: chain_id.to_string(),
            aliases: Vec::new(),
            block_time_ms: None,
            strategy: None,
            providers: Vec::new(),
        }
    }

    /// Chain id given as a `"0x.."` string.
    pub fn hex_id(name: &str, hex: &str) -> Chain {
        let mut c = Chain::new(name, 0);
        c.chain_id = q(hex);
        c
    }

    pub fn alias(mut self, a: &str) -> Self {
        self.aliases.push(a.to_string());
        self
    }

    pub fn block_time_ms(mut self, ms: u64) -> Self {
        self.block_time_ms = Some(ms);
        self
    }

    pub fn strategy(mut self, s: &str) -> Self {
        self.strategy = Some(s.to_string());
        self
    }

    pub fn provider(mut self, p: Provider) -> Self {
        self.providers.push(p);
        self
    }

    fn yaml(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        out.push_str(&format!("{pad}{}:\n", q(&self.name)));
        let pad = " ".repeat(indent + 2);
        out.push_str(&format!("{pad}chain_id: {}\n", self.chain_id));
        if !self.aliases.is_empty() {
            let a: Vec<String> = self.aliases.iter().map(|s| q(s)).collect();
            out.push_str(&format!("{pad}aliases: [{}]\n", a.join(", ")));
        }
        if let Some(b) = self.block_time_ms {
            out.push_str(&format!("{pad}block_time_ms: {b}\n"));
        }
        if let Some(s) = &self.strategy {
            out.push_str(&format!("{pad}default_strategy: {}\n", q(s)));
        }
        out.push_str(&format!("{pad}providers:\n"));
        for p in &self.providers {
            p.yaml(out, indent + 4);
        }
    }
}

/// A whole Lasso config file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub server: Vec<(String, String)>,
    pub upstream: Vec<(String, String)>,
    pub routing: Vec<(String, String)>,
    pub chains: Vec<Chain>,
    pub profiles: Vec<(String, Vec<Chain>)>,
    /// Profiles given as a file path (relative to the config).
    pub profile_files: Vec<(String, String)>,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// `server.<key>: <value>` (value written verbatim as a YAML scalar).
    pub fn server(mut self, key: &str, value: impl ToString) -> Self {
        self.server.push((key.to_string(), value.to_string()));
        self
    }

    /// `upstream.<key>: <value>` (value written verbatim as a YAML scalar).
    pub fn upstream(mut self, key: &str, value: impl ToString) -> Self {
        self.upstream.push((key.to_string(), value.to_string()));
        self
    }

    /// `routing.<key>: <value>` (value written verbatim as YAML, e.g. a flow map `{ light: 500 }`).
    pub fn routing(mut self, key: &str, value: impl ToString) -> Self {
        self.routing.push((key.to_string(), value.to_string()));
        self
    }

    pub fn chain(mut self, c: Chain) -> Self {
        self.chains.push(c);
        self
    }

    pub fn profile(mut self, name: &str, chains: Vec<Chain>) -> Self {
        self.profiles.push((name.to_string(), chains));
        self
    }

    pub fn profile_file(mut self, name: &str, rel_path: &str) -> Self {
        self.profile_files
            .push((name.to_string(), rel_path.to_string()));
        self
    }

    pub fn yaml(&self) -> String {
        let mut out = String::new();
        for (section, kvs) in [
            ("server", &self.server),
            ("upstream", &self.upstream),
            ("routing", &self.routing),
        ] {
            if !kvs.is_empty() {
                out.push_str(&format!("{section}:\n"));
                for (k, v) in kvs {
                    out.push_str(&format!("  {k}: {v}\n"));
                }
            }
        }
        out.push_str("chains:\n");
        for c in &self.chains {
            c.yaml(&mut out, 2);
        }
        if !self.profiles.is_empty() || !self.profile_files.is_empty() {
            out.push_str("profiles:\n");
            for (name, chains) in &self.profiles {
                out.push_str(&format!("  {}:\n    chains:\n", q(name)));
                for c in chains {
                    c.yaml(&mut out, 6);
                }
            }
            for (name, path) in &self.profile_files {
                out.push_str(&format!("  {}: {}\n", q(name), q(path)));
            }
        }
        out
    }

    /// Just the `chains:` document (for profile files).
    pub fn chains_yaml(chains: &[Chain]) -> String {
        let mut out = String::from("chains:\n");
        for c in chains {
            c.yaml(&mut out, 2);
        }
        out
    }
}
