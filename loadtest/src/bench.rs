//! The side-by-side runner behind `lasso-bench`: for each scenario it starts the upstream mock providers (child
//! processes of the runner, pinned to the load CPUs), the targets (the mock provider itself as the limit, Lasso, nginx
//! as a plain reverse proxy with upstream keep-alive, blutgang with its cache compiled out — each pinned to the target
//! CPUs), runs every step against every target in turn with the in-process load generator (pinned to the load CPUs),
//! and collects rows for the report. Every child process is stopped when the scenario ends (and gets SIGTERM if the
//! runner dies: PR_SET_PDEATHSIG).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hist::fmt_ms;
use crate::loadgen::{self, LoadResult, LoadSpec, Mode};
use crate::mix::{HeadInfo, Mix, build_pool};
use crate::scenario::{RateBasis, Scenario, Step, StepKind};
use crate::sys;

/// The targets, in the order they run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Mock,
    Lasso,
    /// The floor forwarder ([`crate::floor`]): the runtime's own limit for a proxy on Lasso's stack.
    Floor,
    Nginx,
    Blutgang,
}

impl TargetKind {
    pub const ALL: [TargetKind; 5] = [
        TargetKind::Mock,
        TargetKind::Lasso,
        TargetKind::Floor,
        TargetKind::Nginx,
        TargetKind::Blutgang,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Mock => "mock",
            TargetKind::Lasso => "lasso",
            TargetKind::Floor => "floor",
            TargetKind::Nginx => "nginx",
            TargetKind::Blutgang => "blutgang",
        }
    }

    pub fn parse(s: &str) -> Result<TargetKind, String> {
        TargetKind::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown target {s:?} (mock, lasso, floor, nginx, blutgang)"))
    }
}

/// Everything the runner needs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub scenarios: Vec<Scenario>,
    pub targets: Vec<TargetKind>,
    pub lasso_bin: PathBuf,
    pub nginx_bin: Option<PathBuf>,
    pub blutgang_bin: Option<PathBuf>,
    /// The runner's own executable (`<exe> mock ...` starts a mock provider).
    pub self_exe: PathBuf,
    pub out_dir: PathBuf,
    pub target_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    pub progress: bool,
    pub command_line: String,
    /// Multiplies every step's duration and warm-up (e.g. 0.5 for a faster, noisier pass).
    pub time_scale: f64,
    /// Overrides every scenario's `rounds`.
    pub rounds: Option<usize>,
    /// CPUs of `workers: all` scenarios (default: every CPU).
    pub all_cpus: Vec<usize>,
    /// Overrides every step's load threads.
    pub load_threads: Option<usize>,
}

/// One step against one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub step: String,
    pub kind: StepKind,
    pub target: String,
    pub result: Option<LoadResult>,
    /// Why there is no result, or remarks (rate used, RSS, ...).
    pub note: String,
    pub rate: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_during_kib: Option<u64>,
    pub idle_established: Option<u64>,
    /// CPU seconds the target used during the run, over the run's wall seconds.
    pub target_cpu_util: Option<f64>,
    pub events: Vec<(f64, String)>,
    /// Every round's headline numbers (the row's result is the least disturbed round).
    #[serde(default)]
    pub rounds: Vec<RoundSummary>,
    /// Soak steps: RSS per phase.
    #[serde(default)]
    pub soak: Option<crate::soak::SoakResult>,
}

/// Headline numbers of one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundSummary {
    pub ok_rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub error_rate: f64,
}

/// Keeps the least disturbed of several rounds of one step against one target.
fn pick_round(mut rounds: Vec<Row>, kind: StepKind) -> Row {
    let summaries: Vec<RoundSummary> = rounds
        .iter()
        .filter_map(|r| r.result.as_ref())
        .map(|x| RoundSummary {
            ok_rps: x.ok_rps,
            p50_us: x.latency.p50_us,
            p99_us: x.latency.p99_us,
            p999_us: x.latency.p999_us,
            error_rate: x.error_rate(),
        })
        .collect();
    let score = |r: &Row| -> f64 {
        match &r.result {
            None => f64::NEG_INFINITY,
            Some(x) => match kind {
                StepKind::Closed | StepKind::Subscribe | StepKind::Soak => x.ok_rps,
                StepKind::Open | StepKind::Idle => {
                    -(x.latency.p99_us as f64) - x.errors as f64 * 1e6
                }
            },
        }
    };
    let best = (0..rounds.len())
        .max_by(|&a, &b| score(&rounds[a]).total_cmp(&score(&rounds[b])))
        .unwrap_or(0);
    let mut row = rounds.swap_remove(best);
    if summaries.len() > 1 {
        row.rounds = summaries;
    }
    row
}

/// Per-scenario metadata in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    pub workers: usize,
    pub providers: usize,
    pub wall_s: f64,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub started_utc: String,
    pub machine: String,
    pub command: String,
    pub placement: String,
    pub versions: BTreeMap<String, String>,
    /// Targets that did not run, and why.
    pub skipped: Vec<(String, String)>,
    /// Share of all CPUs busy with other work just before the run (0..1).
    #[serde(default)]
    pub busy_before: Option<f64>,
    pub scenarios: Vec<ScenarioInfo>,
    pub rows: Vec<Row>,
    pub total_wall_s: f64,
}

/// A child process, stopped (SIGTERM, then SIGKILL after 3 s) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub pid: u32,
}

impl Proc {
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` pinned to `cpus` (SIGTERM on the runner's death), stdout+stderr to `log`. With `wait_for`, waits
/// (up to `timeout`) for a stdout line containing it and returns that line (ANSI colour codes removed).
fn spawn(
    name: &str,
    cmd: &mut Command,
    cpus: &[usize],
    log: &Path,
    wait_for: Option<&str>,
    timeout: Duration,
) -> Result<(Proc, Option<String>), String> {
    let cpus = cpus.to_vec();
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if !cpus.is_empty() {
                let _ = sys::set_affinity(0, &cpus);
            }
            Ok(())
        });
    }
    let logf = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let errf = logf.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stderr(Stdio::from(errf));
    if wait_for.is_some() {
        cmd.stdout(Stdio::piped());
    } else {
        cmd.stdout(Stdio::from(logf.try_clone().map_err(|e| e.to_string())?));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id();
    let mut line_found = None;
    if let Some(pat) = wait_for {
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pat = pat.to_string();
        let mut logw = logf;
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let clean = strip_ansi(&line);
                let _ = writeln!(logw, "{clean}");
                if !sent && clean.contains(&pat) {
                    let _ = tx.send(clean);
                    sent = true;
                }
            }
        });
        let mut proc = Proc {
            name: name.to_string(),
            child,
            pid,
        };
        match rx.recv_timeout(timeout) {
            Ok(l) => line_found = Some(l),
            Err(_) => {
                proc.stop();
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(format!(
                    "{name}: no line with {wait_for:?} within {timeout:?}; log {}:\n{tail}",
                    log.display()
                ));
            }
        }
        return Ok((proc, line_found));
    }
    Ok((
        Proc {
            name: name.to_string(),
            child,
            pid,
        },
        line_found,
    ))
}

/// Removes ANSI escape sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `address=IP:PORT` in a log line.
pub fn parse_address(line: &str) -> Option<String> {
    let i = line.find("address=")?;
    let rest = &line[i + "address=".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != '"')
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// A free loopback port (bind :0, read it, close).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// "20240101T120000Z" for now (UTC).
pub fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A running target.
pub struct RunningTarget {
    pub kind: TargetKind,
    pub http_url: String,
    pub ws_url: Option<String>,
    /// The mock target's own control endpoint.
    pub control_url: Option<String>,
    pub proc: Proc,
}

/// A running upstream mock.
pub struct Upstream {
    pub addr: String,
    pub proc: Proc,
}

impl Upstream {
    pub fn control_url(&self) -> String {
        format!("http://{}/control", self.addr)
    }
}

fn control(url: &str, patch: &Value) -> Result<Value, String> {
    match crate::client::post_json(url, patch, Duration::from_secs(5)) {
        Ok((200, v)) => Ok(v),
        Ok((s, v)) => Err(format!("{url}: HTTP {s}: {v}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// Waits until `url` answers eth_blockNumber with a result.
fn wait_ready(url: &str, proc: &mut Proc, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if !proc.alive() {
            return Err(format!("{} exited during start-up", proc.name));
        }
        match crate::client::rpc_call(url, "eth_blockNumber", json!([]), Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{} did not answer eth_blockNumber at {url} within {timeout:?} (last: {last})",
        proc.name
    ))
}

fn mock_command(cfg: &BenchConfig, sc: &Scenario, workers: usize, cpus: &[usize]) -> Command {
    let mut c = Command::new(&cfg.self_exe);
    c.arg("mock")
        .arg("--port")
        .arg("0")
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--block-time-ms")
        .arg(sc.mock.block_time_ms.to_string())
        .arg("--txs-per-block")
        .arg(sc.mock.txs_per_block.to_string())
        .arg("--logs-per-block")
        .arg(sc.mock.logs_per_block.to_string())
        .arg("--exit-after")
        .arg("3600");
    if !cpus.is_empty() {
        c.arg("--cpus").arg(
            cpus.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    c
}

fn start_mock(
    cfg: &BenchConfig,
    sc: &Scenario,
    name: &str,
    workers: usize,
    cpus: &[usize],
    dir: &Path,
) -> Result<(Proc, String), String> {
    let (proc, line) = spawn(
        name,
        &mut mock_command(cfg, sc, workers, cpus),
        cpus,
        &dir.join(format!("{name}.log")),
        Some("address="),
        Duration::from_secs(20),
    )?;
    let addr = line
        .as_deref()
        .and_then(parse_address)
        .ok_or_else(|| format!("{name}: no address in its start-up line"))?;
    Ok((proc, addr))
}

/// Lasso's config for a scenario.
pub fn lasso_config(
    ups: &[Upstream],
    block_time_ms: u64,
    workers: usize,
    coalesce: bool,
) -> String {
    let mut s = format!(
        "# Written by lasso-bench.\nserver:\n  bind: \"127.0.0.1\"\n  port: 0\n  workers: {workers}\n  soft_max_connections: 30000\n  \
         hard_max_connections: 40000\n  max_connections_per_ip: 0\n  idle_timeout_ms: 300000\n  max_batch_size: 100\n  max_body_bytes: 16777216\n\
         upstream:\n  request_timeout_ms: 2000\n  connect_timeout_ms: 1000\n  max_attempts: 3\n  pool_max_idle_per_provider: 1024\n  coalesce: {coalesce}\n\
         chains:\n  bench:\n    chain_id: 1\n    block_time_ms: {block_time_ms}\n    default_strategy: priority\n    providers:\n"
    );
    for (i, u) in ups.iter().enumerate() {
        s.push_str(&format!(
            "      - id: mock{i}\n        url: http://{a}/\n        ws_url: ws://{a}/\n        priority: {p}\n",
            a = u.addr,
            p = i + 1
        ));
    }
    s
}

/// nginx's config: a plain reverse proxy to the upstream mocks (the first primary, the others `backup`), upstream
/// keep-alive, retries on errors/timeouts/5xx/429 for POST too, WebSocket upgrade passed through.
pub fn nginx_config(ups: &[Upstream], port: u16, workers: usize, dir: &Path) -> String {
    let d = dir.display();
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;\n"
    } else {
        ""
    };
    let mut servers = String::new();
    for (i, u) in ups.iter().enumerate() {
        servers.push_str(&format!(
            "    server {} max_fails=1 fail_timeout=2s{};\n",
            u.addr,
            if i > 0 { " backup" } else { "" }
        ));
    }
    format!(
        "# Written by lasso-bench.\n{user}daemon off;\nmaster_process on;\nworker_processes {workers};\nworker_rlimit_nofile 100000;\n\
         pid {d}/nginx.pid;\nerror_log {d}/nginx.error.log warn;\n\
         events {{ worker_connections 60000; multi_accept on; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx.client_body;\n  proxy_temp_path {d}/nginx.proxy;\n  \
         fastcgi_temp_path {d}/nginx.fastcgi;\n  uwsgi_temp_path {d}/nginx.uwsgi;\n  scgi_temp_path {d}/nginx.scgi;\n  \
         keepalive_requests 10000000;\n  keepalive_timeout 300s;\n  client_max_body_size 16m;\n  client_body_buffer_size 64k;\n\
         \n  upstream mocks {{\n{servers}    keepalive 512;\n    keepalive_requests 10000000;\n    keepalive_timeout 300s;\n  }}\n\
         \n  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
         \n  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{\n      proxy_pass http://mocks;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      \
         proxy_next_upstream error timeout http_500 http_502 http_503 http_429 non_idempotent;\n      \
         proxy_connect_timeout 1s;\n      proxy_read_timeout 2s;\n      proxy_buffer_size 64k;\n      proxy_buffers 64 64k;\n      \
         proxy_busy_buffers_size 128k;\n      proxy_max_temp_file_size 0;\n    }}\n  }}\n}}\n"
    )
}

/// blutgang's config (cache compiled out with the `no-cache` feature by install-baselines.sh).
pub fn blutgang_config(
    ups: &[Upstream],
    port: u16,
    admin_port: u16,
    block_time_ms: u64,
    dir: &Path,
) -> String {
    let mut s = format!(
        "# Written by lasso-bench.\n[blutgang]\ndo_clear = true\naddress = \"127.0.0.1:{port}\"\nma_length = 100\n\
         sort_on_startup = true\nhealth_check = true\nheader_check = false\nttl = 2000\nmax_retries = 3\n\
         expected_block_time = {block_time_ms}\nhealth_check_ttl = 2000\nsupress_rpc_check = true\n\n\
         [admin]\nenabled = false\naddress = \"127.0.0.1:{admin_port}\"\nreadonly = true\njwt = false\nkey = \"\"\n\n\
         [sled]\ndb_path = \"{}/blutgang-cache\"\nmode = \"HighThroughput\"\ncache_capacity = 100000000\ncompression = false\n\
         print_profile = false\nflush_every_ms = 1000\n",
        dir.display()
    );
    for (i, u) in ups.iter().enumerate() {
        s.push_str(&format!(
            "\n[mock{i}]\nurl = \"http://{a}/\"\nws_url = \"ws://{a}/\"\nmax_consecutive = 150\nmax_per_second = 0\n",
            a = u.addr
        ));
    }
    s
}

fn start_target(
    cfg: &BenchConfig,
    sc: &Scenario,
    kind: TargetKind,
    ups: &[Upstream],
    workers: usize,
    cpus: &[usize],
    dir: &Path,
) -> Result<RunningTarget, String> {
    match kind {
        TargetKind::Mock => {
            let (mut proc, addr) = start_mock(cfg, sc, "mock-target", workers, cpus, dir)?;
            let url = format!("http://{addr}/");
            wait_ready(&url, &mut proc, Duration::from_secs(10))?;
            Ok(RunningTarget {
                kind,
                http_url: url,
                ws_url: Some(format!("ws://{addr}/")),
                control_url: Some(format!("http://{addr}/control")),
                proc,
            })
        }
        TargetKind::Lasso => {
            let conf = dir.join("lasso.yml");
            std::fs::write(
                &conf,
                lasso_config(ups, sc.mock.block_time_ms, workers, sc.lasso_coalesce),
            )
            .map_err(|e| e.to_string())?;
            let mut cmd = Command::new(&cfg.lasso_bin);
            cmd.arg("--config")
                .arg(&conf)
                .arg("--workers")
                .arg(workers.to_string())
                .arg("--port")
                .arg("0")
                .arg("--bind")
                .arg("127.0.0.1")
                .env("RUST_LOG", "warn,lasso=info")
                .env("NO_COLOR", "1")
                .env_remove("LOG_FORMAT");
            let (mut proc, line) = spawn(
                "lasso",
                &mut cmd,
                cpus,
                &dir.join("lasso.log"),
                Some("listening"),
                Duration::from_secs(30),
            )?;
            let addr = line
                .as_deref()
                .and_then(parse_address)
                .ok_or("lasso: no address= in its listening line")?;
            let url = format!("http://{addr}/rpc/bench");
            wait_ready(&url, &mut proc, Duration::from_secs(10))?;
            Ok(RunningTarget {
                kind,
                http_url: url,
                ws_url: Some(format!("ws://{addr}/ws/rpc/bench")),
                control_url: None,
                proc,
            })
        }
        TargetKind::Floor => {
            // Forwards to the first upstream only, as nginx's config does (the others are its backups).
            let first = ups.first().ok_or("floor: no upstream")?;
            let mut cmd = Command::new(&cfg.self_exe);
            cmd.arg("floor")
                .arg("--upstream")
                .arg(format!("http://{}/", first.addr))
                .arg("--workers")
                .arg(workers.to_string());
            let (mut proc, line) = spawn(
                "floor",
                &mut cmd,
                cpus,
                &dir.join("floor.log"),
                Some("address="),
                Duration::from_secs(10),
            )?;
            let addr = line
                .as_deref()
                .and_then(parse_address)
                .ok_or("floor: no address= in its listening line")?;
            let url = format!("http://{addr}/");
            wait_ready(&url, &mut proc, Duration::from_secs(10))?;
            Ok(RunningTarget {
                kind,
                http_url: url,
                ws_url: None,
                control_url: None,
                proc,
            })
        }
        TargetKind::Nginx => {
            let bin = cfg
                .nginx_bin
                .clone()
                .ok_or("nginx not installed (bash loadtest/scripts/install-baselines.sh)")?;
            let port = free_port()?;
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_config(ups, port, workers, dir))
                .map_err(|e| e.to_string())?;
            let mut cmd = Command::new(bin);
            cmd.arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("nginx.error.log"))
                .arg("-c")
                .arg(&conf);
            let (mut proc, _) = spawn(
                "nginx",
                &mut cmd,
                cpus,
                &dir.join("nginx.log"),
                None,
                Duration::ZERO,
            )?;
            let url = format!("http://127.0.0.1:{port}/");
            wait_ready(&url, &mut proc, Duration::from_secs(10))?;
            Ok(RunningTarget {
                kind,
                http_url: url,
                ws_url: Some(format!("ws://127.0.0.1:{port}/")),
                control_url: None,
                proc,
            })
        }
        TargetKind::Blutgang => {
            let bin = cfg
                .blutgang_bin
                .clone()
                .ok_or("blutgang not installed (bash loadtest/scripts/install-baselines.sh)")?;
            let port = free_port()?;
            let admin = free_port()?;
            let conf = dir.join("blutgang.toml");
            std::fs::write(
                &conf,
                blutgang_config(ups, port, admin, sc.mock.block_time_ms, dir),
            )
            .map_err(|e| e.to_string())?;
            let mut cmd = Command::new(bin);
            cmd.arg("-c").arg(&conf).current_dir(dir);
            let (mut proc, _) = spawn(
                "blutgang",
                &mut cmd,
                cpus,
                &dir.join("blutgang.log"),
                None,
                Duration::ZERO,
            )?;
            let url = format!("http://127.0.0.1:{port}/");
            wait_ready(&url, &mut proc, Duration::from_secs(30))?;
            Ok(RunningTarget {
                kind,
                http_url: url,
                ws_url: Some(format!("ws://127.0.0.1:{port}/")),
                control_url: None,
                proc,
            })
        }
    }
}

/// Checks a WebSocket endpoint with a handshake (blocking).
fn ws_supported(url: &str) -> Result<(), String> {
    let t = crate::client::Target::parse(url)?;
    let mut s = std::net::TcpStream::connect_timeout(&t.addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    s.write_all(crate::ws::client_handshake(&t.host, &t.path, key).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = std::io::Read::read(&mut s, &mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Ok(Some(h)) = crate::http::parse_response_head(&got) {
            return if h.status == 101 {
                Ok(())
            } else {
                Err(format!("handshake answered HTTP {}", h.status))
            };
        }
    }
}

fn merge_patch(into: &mut serde_json::Map<String, Value>, patch: &Value) {
    if let Value::Object(o) = patch {
        for (k, v) in o {
            into.insert(k.clone(), v.clone());
        }
    }
}

fn reset_mocks(
    ups: &[Upstream],
    target: &RunningTarget,
    sc: &Scenario,
    step: Option<&Step>,
) -> Result<(), String> {
    let mut p = serde_json::Map::new();
    p.insert("reset".into(), Value::Bool(true));
    p.insert("reset_counters".into(), Value::Bool(true));
    merge_patch(&mut p, &sc.mock.faults);
    if let Some(f) = step.and_then(|s| s.faults.as_ref()) {
        merge_patch(&mut p, f);
    }
    let patch = Value::Object(p);
    for u in ups {
        control(&u.control_url(), &patch)?;
    }
    if let Some(c) = &target.control_url {
        control(c, &patch)?;
    }
    Ok(())
}

/// The rate for an open-loop step against `target`.
fn step_rate(step: &Step, rows: &[Row], scenario: &str, target: &str) -> Result<f64, String> {
    if let Some(r) = step.rate {
        return Ok(r);
    }
    let of = step.rate_of.as_deref().unwrap_or_default();
    let frac = step.rate_fraction.unwrap_or(0.5);
    let base: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario == scenario && r.step == of && r.result.is_some())
        .collect();
    let rps = |r: &Row| r.result.as_ref().map(|x| x.ok_rps).unwrap_or(0.0);
    let basis = match step.rate_basis {
        RateBasis::Each => base.iter().find(|r| r.target == target).map(|r| rps(r)),
        RateBasis::Slowest => {
            let proxies: Vec<f64> = base
                .iter()
                .filter(|r| r.target != "mock")
                .map(|r| rps(r))
                .filter(|&x| x > 0.0)
                .collect();
            let all: Vec<f64> = base.iter().map(|r| rps(r)).filter(|&x| x > 0.0).collect();
            let pick = if proxies.is_empty() { all } else { proxies };
            pick.into_iter().reduce(f64::min)
        }
    };
    match basis {
        Some(b) if b > 0.0 => Ok((b * frac).max(1.0)),
        _ => Err(format!(
            "no throughput from step {of:?} to take {:.0}% of",
            frac * 100.0
        )),
    }
}

/// Sends one request of the step's shape and checks the answer is JSON-RPC (an array of `batch` answers for batches).
fn probe(url: &str, pool: &[crate::mix::PoolEntry], batch: usize) -> Result<(), String> {
    let mut body = Vec::new();
    if batch > 1 {
        body.push(b'[');
    }
    for i in 0..batch.max(1) {
        if i > 0 {
            body.push(b',');
        }
        crate::mix::render_call(&mut body, i as u64 + 1, &pool[i % pool.len()].tail);
    }
    if batch > 1 {
        body.push(b']');
    }
    let (status, _, answer) =
        crate::client::blocking_request("POST", url, Some(&body), Duration::from_secs(10))
            .map_err(|e| format!("probe request failed: {e}"))?;
    let shown = || String::from_utf8_lossy(&answer[..answer.len().min(160)]).into_owned();
    if status != 200 {
        return Err(format!("probe answered HTTP {status}: {}", shown()));
    }
    let v: Value = serde_json::from_slice(&answer)
        .map_err(|_| format!("probe answer is not JSON: {}", shown()))?;
    match (batch > 1, &v) {
        (true, Value::Array(a)) if a.len() == batch => Ok(()),
        (true, _) => Err(format!(
            "a batch of {batch} was not answered with {batch} answers: {}",
            shown()
        )),
        (false, Value::Object(o)) if o.contains_key("result") || o.contains_key("error") => Ok(()),
        (false, _) => Err(format!("not a JSON-RPC answer: {}", shown())),
    }
}

fn scaled(secs: f64, scale: f64) -> Duration {
    Duration::from_secs_f64((secs * scale).max(0.0))
}

fn run_step(
    cfg: &BenchConfig,
    sc: &Scenario,
    step: &Step,
    t: &mut RunningTarget,
    ups: &[Upstream],
    rows: &[Row],
) -> Row {
    let mut row = Row {
        scenario: sc.name.clone(),
        step: step.name.clone(),
        kind: step.kind,
        target: t.kind.name().to_string(),
        result: None,
        note: String::new(),
        rate: None,
        rss_before_kib: None,
        rss_during_kib: None,
        idle_established: None,
        target_cpu_util: None,
        events: Vec::new(),
        rounds: Vec::new(),
        soak: None,
    };
    if !t.proc.alive() {
        row.note = "target process exited".into();
        return row;
    }
    if let Err(e) = reset_mocks(ups, t, sc, Some(step)) {
        row.note = format!("control: {e}");
        return row;
    }
    if step.kind == StepKind::Soak {
        run_soak(cfg, step, t, &mut row);
        let _ = reset_mocks(ups, t, sc, None);
        return row;
    }
    let url = if step.kind == StepKind::Subscribe {
        match &t.ws_url {
            Some(u) => match ws_supported(u) {
                Ok(()) => u.clone(),
                Err(e) => {
                    row.note = format!("no WebSocket support ({e})");
                    return row;
                }
            },
            None => {
                row.note = "no WebSocket endpoint".into();
                return row;
            }
        }
    } else {
        t.http_url.clone()
    };
    let rate = match step.kind {
        StepKind::Open | StepKind::Idle => match step_rate(step, rows, &sc.name, t.kind.name()) {
            Ok(r) => Some(r),
            Err(e) => {
                row.note = e;
                return row;
            }
        },
        _ => None,
    };
    row.rate = rate;
    let mix = match Mix::load(&step.mix) {
        Ok(m) => m,
        Err(e) => {
            row.note = e;
            return row;
        }
    };
    let head = HeadInfo::discover(&t.http_url, Duration::from_secs(5))
        .unwrap_or_else(|_| HeadInfo::synthetic());
    let pool = Arc::new(build_pool(&mix, &head, 4096, 7));
    if step.kind != StepKind::Subscribe {
        if let Err(e) = probe(&t.http_url, &pool, step.batch) {
            row.note = format!("unsupported: {e}");
            let _ = reset_mocks(ups, t, sc, None);
            return row;
        }
    }
    let idle = if step.kind == StepKind::Idle {
        row.rss_before_kib = sys::tree_rss_kib(t.proc.pid);
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
        let hold_for =
            scaled(step.duration_s + step.warmup_s, cfg.time_scale) + Duration::from_secs(90);
        match loadgen::hold_idle(
            &t.http_url,
            step.idle_connections,
            body,
            1,
            &cfg.load_cpus,
            hold_for,
        ) {
            Ok(h) => {
                row.idle_established = Some(h.established);
                std::thread::sleep(Duration::from_millis(500));
                row.rss_during_kib = sys::tree_rss_kib(t.proc.pid);
                Some(h)
            }
            Err(e) => {
                row.note = format!("idle connections: {e}");
                return row;
            }
        }
    } else {
        None
    };
    let connections = step.connections;
    let start_at = loadgen::default_start(connections);
    let spec = LoadSpec {
        label: format!("{}/{} {}", sc.name, step.name, t.kind.name()),
        url,
        mode: match step.kind {
            StepKind::Closed | StepKind::Soak => Mode::Closed, // soak steps return before this
            StepKind::Open | StepKind::Idle => Mode::Open,
            StepKind::Subscribe => Mode::Subscribe,
        },
        rate: rate.unwrap_or(0.0),
        duration: scaled(step.duration_s, cfg.time_scale),
        warmup: scaled(step.warmup_s, cfg.time_scale),
        connections,
        threads: cfg.load_threads.unwrap_or(step.threads),
        cpus: cfg.load_cpus.clone(),
        batch: step.batch,
        timeout: Duration::from_secs_f64(step.timeout_s),
        max_requests: 0,
        progress: cfg.progress,
        force_progress: false,
        start_at: Some(start_at),
    };
    // Timed fault events, relative to the start of the measured window.
    let measure_from = start_at + spec.warmup;
    let mut event_threads = Vec::new();
    for ev in &step.events {
        let url = if ev.provider == 0 && t.kind == TargetKind::Mock {
            t.control_url.clone()
        } else {
            ups.get(ev.provider).map(|u| u.control_url())
        };
        let Some(url) = url else { continue };
        let at = measure_from + scaled(ev.at_s, cfg.time_scale);
        let patch = ev.control.clone();
        row.events.push((
            ev.at_s * cfg.time_scale,
            if ev.label.is_empty() {
                ev.control.to_string()
            } else {
                ev.label.clone()
            },
        ));
        event_threads.push(std::thread::spawn(move || {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let _ = control(&url, &patch);
        }));
    }
    let cpu0 = sys::tree_cpu_s(t.proc.pid);
    let wall0 = Instant::now();
    let res = loadgen::run(&spec, pool);
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = sys::tree_cpu_s(t.proc.pid) - cpu0;
    row.target_cpu_util = Some(cpu / wall.max(1e-9));
    for th in event_threads {
        let _ = th.join();
    }
    if let Some(h) = idle {
        if row.rss_during_kib.is_none() {
            row.rss_during_kib = sys::tree_rss_kib(t.proc.pid);
        }
        h.release();
    }
    // Leave the mocks clean (ends hangs) and give the target a moment between runs.
    let _ = reset_mocks(ups, t, sc, None);
    std::thread::sleep(Duration::from_millis(300));
    match res {
        Ok(r) => row.result = Some(r),
        Err(e) => row.note = e,
    }
    if !t.proc.alive() {
        row.note = format!("{} (target process exited during the run)", row.note)
            .trim()
            .to_string();
    }
    row
}

/// A soak step (see `crate::soak`): the target's RSS per phase, into `row.soak`.
fn run_soak(cfg: &BenchConfig, step: &Step, t: &mut RunningTarget, row: &mut Row) {
    let spec = crate::soak::SoakSpec {
        url: t.http_url.clone(),
        pid: t.proc.pid,
        warmup_connections: step.warmup_connections as u64,
        sequential_connections: step.sequential_connections as u64,
        idle_connections: step.idle_connections as u64,
        idle_rounds: step.idle_rounds.clamp(1, 2) as u32,
        hold: scaled(step.duration_s, cfg.time_scale),
        time_limit: scaled(step.time_limit_s, cfg.time_scale),
        cpus: cfg.load_cpus.clone(),
        progress: cfg.progress,
    };
    let cpu0 = sys::tree_cpu_s(t.proc.pid);
    let wall0 = Instant::now();
    match crate::soak::run(&spec) {
        Ok(r) => {
            row.rss_before_kib = Some(r.rss_before_kib);
            row.rss_during_kib = Some(r.rss_idle_held_kib);
            row.idle_established = Some(r.idle_established);
            row.soak = Some(r);
        }
        Err(e) => row.note = format!("soak: {e}"),
    }
    row.target_cpu_util =
        Some((sys::tree_cpu_s(t.proc.pid) - cpu0) / wall0.elapsed().as_secs_f64().max(1e-9));
    if !t.proc.alive() {
        row.note = format!("{} (target process exited during the run)", row.note)
            .trim()
            .to_string();
    }
}

/// One line for a finished row (printed live).
pub fn row_line(r: &Row) -> String {
    if let Some(s) = &r.soak {
        return format!(
            "  {:<34} {:<9} {}",
            format!("{}/{}", r.scenario, r.step),
            r.target,
            s.summary()
        );
    }
    match &r.result {
        Some(x) => format!(
            "  {:<34} {:<9} {:>10.0} req/s  p50 {:>8} ms  p99 {:>8} ms  p99.9 {:>8} ms  errors {:.2}%{}{}",
            format!("{}/{}", r.scenario, r.step),
            r.target,
            x.ok_rps,
            fmt_ms(x.latency.p50_us),
            fmt_ms(x.latency.p99_us),
            fmt_ms(x.latency.p999_us),
            x.error_rate() * 100.0,
            r.target_cpu_util
                .map(|c| format!("  target cpu {:.0}%", c * 100.0))
                .unwrap_or_default(),
            r.rss_during_kib
                .map(|k| format!("  rss {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default(),
        ),
        None => format!(
            "  {:<34} {:<9} skipped: {}",
            format!("{}/{}", r.scenario, r.step),
            r.target,
            r.note
        ),
    }
}

fn version_of(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Runs every scenario; returns the report (also written by the caller).
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, String> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| format!("{}: {e}", cfg.out_dir.display()))?;
    sys::raise_nofile(200_000);
    if let Some(c) = cfg.load_cpus.first() {
        let _ = sys::pin_current_thread(&[*c]);
    }
    let mut versions = BTreeMap::new();
    let mut skipped = Vec::new();
    versions.insert(
        "lasso".to_string(),
        format!(
            "{} ({})",
            version_of(&cfg.lasso_bin, "--version"),
            cfg.lasso_bin.display()
        ),
    );
    match &cfg.nginx_bin {
        Some(n) => {
            versions.insert("nginx".into(), version_of(n, "-v"));
        }
        None if cfg.targets.contains(&TargetKind::Nginx) => skipped.push((
            "nginx".into(),
            "not installed: run bash loadtest/scripts/install-baselines.sh".into(),
        )),
        None => {}
    }
    match &cfg.blutgang_bin {
        Some(b) => {
            versions.insert("blutgang".into(), format!("{} (cache compiled out: feature no-cache)", version_of(b, "--version")));
        }
        None if cfg.targets.contains(&TargetKind::Blutgang) => skipped.push((
            "blutgang".into(),
            "not installed: run bash loadtest/scripts/install-baselines.sh (builds blutgang 0.3.6 into loadtest/.tools)".into(),
        )),
        None => {}
    }
    let busy_before = sys::cpu_busy_fraction(Duration::from_secs(1));
    if let Some(b) = busy_before.filter(|&b| b > 0.15) {
        eprintln!(
            "lasso-bench: warning: {:.0}% of the CPUs were busy with other work just before the run; results will be noisy \
             (compare target cpu % and req per CPU-second, which are less sensitive)",
            b * 100.0
        );
    }
    let placement = format!(
        "targets on CPU {:?} (workers: all = CPUs {:?}), upstream mock providers and the load generator on CPU {:?}",
        cfg.target_cpus, cfg.all_cpus, cfg.load_cpus
    );
    let mut report = BenchReport {
        started_utc: utc_stamp(),
        machine: sys::machine_description(),
        command: cfg.command_line.clone(),
        placement,
        versions,
        skipped: skipped.clone(),
        busy_before,
        scenarios: Vec::new(),
        rows: Vec::new(),
        total_wall_s: 0.0,
    };
    for sc in &cfg.scenarios {
        let s0 = Instant::now();
        let tcpus: Vec<usize> = if sc.workers == "all" {
            cfg.all_cpus.clone()
        } else {
            cfg.target_cpus.clone()
        };
        let workers = sc.worker_count(tcpus.len().max(1));
        let dir = cfg.out_dir.join(&sc.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        eprintln!(
            "== scenario {} ({} worker(s) on CPUs {:?}): {}",
            sc.name,
            workers,
            tcpus,
            sc.labelled_description()
        );
        let mut ups = Vec::new();
        for i in 0..sc.providers.max(1) {
            let (proc, addr) =
                start_mock(cfg, sc, &format!("upstream{i}"), 1, &cfg.load_cpus, &dir)?;
            ups.push(Upstream { addr, proc });
        }
        let wanted: Vec<TargetKind> = match &sc.targets {
            Some(list) => list
                .iter()
                .filter_map(|n| TargetKind::parse(n).ok())
                .filter(|t| cfg.targets.contains(t))
                .collect(),
            None => cfg.targets.clone(),
        };
        let mut running = Vec::new();
        for kind in wanted {
            if skipped.iter().any(|(n, _)| n == kind.name()) {
                continue;
            }
            match start_target(cfg, sc, kind, &ups, workers, &tcpus, &dir) {
                Ok(t) => running.push(t),
                Err(e) => {
                    eprintln!("  {}: failed to start: {e}", kind.name());
                    for st in &sc.steps {
                        report.rows.push(Row {
                            scenario: sc.name.clone(),
                            step: st.name.clone(),
                            kind: st.kind,
                            target: kind.name().into(),
                            result: None,
                            note: format!("failed to start: {}", e.lines().next().unwrap_or("")),
                            rate: None,
                            rss_before_kib: None,
                            rss_during_kib: None,
                            idle_established: None,
                            target_cpu_util: None,
                            events: Vec::new(),
                            rounds: Vec::new(),
                            soak: None,
                        });
                    }
                }
            }
        }
        for st in &sc.steps {
            let rounds = cfg.rounds.or(st.rounds).unwrap_or(sc.rounds).max(1);
            let mut per_target: Vec<Vec<Row>> = running.iter().map(|_| Vec::new()).collect();
            for round in 0..rounds {
                for (i, t) in running.iter_mut().enumerate() {
                    let row = run_step(cfg, sc, st, t, &ups, &report.rows);
                    let line = row_line(&row);
                    if rounds > 1 {
                        eprintln!("{line}  (round {}/{rounds})", round + 1);
                    } else {
                        eprintln!("{line}");
                    }
                    per_target[i].push(row);
                }
            }
            for rows in per_target {
                report.rows.push(pick_round(rows, st.kind));
            }
        }
        for mut t in running {
            t.proc.stop();
        }
        for mut u in ups {
            u.proc.stop();
        }
        report.scenarios.push(ScenarioInfo {
            name: sc.name.clone(),
            description: sc.labelled_description(),
            workers,
            providers: sc.providers.max(1),
            wall_s: s0.elapsed().as_secs_f64(),
        });
    }
    report.total_wall_s = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Finds a program on PATH (or one of `extra` paths).
pub fn which(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(extra.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Default output directory: `loadtest/results/<UTC timestamp>`.
pub fn default_out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("results")
        .join(utc_stamp())
}

/// The workspace root (parent of `loadtest/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi_and_parses_address() {
        let l = "\u{1b}[2m2024\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening \u{1b}[3maddress\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:4000 workers=1";
        assert_eq!(
            parse_address(&strip_ansi(l)).as_deref(),
            Some("127.0.0.1:4000")
        );
    }

    #[test]
    fn utc_stamp_shape() {
        let s = utc_stamp();
        assert_eq!(s.len(), 16);
        assert!(s.ends_with('Z') && s.contains('T'));
    }
}
