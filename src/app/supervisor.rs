//! Process start-up and shutdown: resolves settings (flags > environment > config file), seeds a missing
//! `LASSO_CHAINS_PATH`, binds one SO_REUSEPORT listener per worker (after checking no other process holds the port),
//! starts one pinned thread per worker with its own monoio runtime (io_uring, or the legacy driver with a log line),
//! and on SIGINT/SIGTERM drains every worker before exiting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_channel::mpsc;
use socket2::{Domain, Protocol, Socket, Type};

use crate::app::thread::block_on;
use crate::config::change::{ChangeError, ConfigChange, SupervisorCommand};
use crate::config::{self, Config};
use crate::shard::control::Control;
use crate::shard::state::{Shared, Worker};

/// What the command line and environment ask for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub workers: Option<usize>,
    pub port: Option<u16>,
    pub bind: Option<String>,
}

/// Resolves the config path, seeding it from the image default when `LASSO_CHAINS_PATH` names a missing file.
pub fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(path) = explicit {
        return path;
    }
    if let Some(path) = config::env::process(config::env::CHAINS_PATH).map(PathBuf::from) {
        let candidates = [
            config::load::image_default_path(),
            PathBuf::from("config/chains.yml"),
        ];
        if let Some(default) = candidates.iter().find(|p| p.exists() && **p != path) {
            match config::load::seed_if_missing(&path, default) {
                Ok(true) => {
                    tracing::info!(path = %path.display(), from = %default.display(), "seeded config from image default")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not seed config")
                }
            }
        }
        return path;
    }
    PathBuf::from("config/chains.yml")
}

fn node_id() -> String {
    if let Some(id) = config::env::node_id(&config::env::process) {
        return id;
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        return String::from_utf8_lossy(&buf[..end]).into_owned();
    }
    format!("pid-{}", std::process::id())
}

fn listener_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds `workers` SO_REUSEPORT listeners on one port, failing if any other socket holds it.
fn bind_listeners(
    addr: SocketAddr,
    workers: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), String> {
    // A probe without SO_REUSEPORT fails if any other process listens there, even one that set SO_REUSEPORT.
    let probe = listener_socket(addr, false)
        .map_err(|e| format!("cannot bind {addr}: {e} (is another process using the port?)"))?;
    probe
        .listen(1)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let actual = probe
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| format!("cannot read the bound address of {addr}"))?;
    drop(probe);
    let mut listeners = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket =
            listener_socket(actual, true).map_err(|e| format!("cannot bind {actual}: {e}"))?;
        socket
            .listen(4096)
            .map_err(|e| format!("cannot listen on {actual}: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        listeners.push(socket.into());
    }
    Ok((actual, listeners))
}

fn parse_bind(bind: &str, port: u16) -> Result<SocketAddr, String> {
    let host = bind.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("invalid bind address '{bind}'"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Process-wide facts every generation shares.
struct Process {
    /// The listening sockets, bound once. Each generation's workers accept on duplicates of them, so a reload never
    /// closes a socket (closing one would reset the connections waiting in its accept queue).
    listeners: Vec<std::net::TcpListener>,
    workers: usize,
    uring: bool,
    path: PathBuf,
    started: Instant,
    started_epoch_ms: u64,
    node_id: String,
    region: Option<String>,
    log_sample_rate: f64,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    peers: Arc<crate::shard::peers::PeerCounts>,
    supervisor: std::sync::mpsc::Sender<SupervisorCommand>,
}

/// One configuration generation: its workers (one thread each) and its monitor.
struct Generation {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    monitor: Option<crate::app::monitor::MonitorHandle>,
}

impl Generation {
    fn tell(&self, make: impl Fn() -> Control) {
        for control in &self.shared.controls {
            let _ = control.unbounded_send(make());
        }
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Joins the workers and stops the monitor (which writes its last snapshot); true if a worker panicked.
    fn join(mut self) -> bool {
        let mut failed = false;
        for t in self.threads.drain(..) {
            failed |= t.join().is_err();
        }
        if let Some(m) = self.monitor.take() {
            m.stop();
        }
        failed
    }
}

fn start_generation(
    process: &Process,
    config: Arc<Config>,
    generation: u64,
    inherited: Option<crate::routing::merger::Inheritance>,
) -> Result<Generation, String> {
    let listeners = process
        .listeners
        .iter()
        .map(|l| {
            l.try_clone()
                .map_err(|e| format!("cannot share the listening socket: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let workers = process.workers;
    let uring = process.uring;
    let tls = crate::upstream::conn::tls_connector(config.upstream.extra_ca_file.as_deref())?;
    // Chain-id checks run before serving, so no request reaches a provider of the wrong chain.
    let check_timeout = config
        .upstream
        .connect_timeout
        .max(std::time::Duration::from_millis(500))
        .min(std::time::Duration::from_secs(3));
    let (monitor, initial_table) =
        crate::app::monitor::start(config.clone(), tls.clone(), uring, check_timeout, inherited)?;
    // Traces: the exporter thread starts with the first generation that sets an endpoint.
    crate::telemetry::otlp::configure(&config.telemetry.traces);
    let (controls, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded::<Control>()).unzip();
    let shared = Arc::new(Shared {
        config: config.clone(),
        started: process.started,
        node_id: process.node_id.clone(),
        region: process.region.clone(),
        workers,
        controls,
        connections: process.connections.clone(),
        peers: process.peers.clone(),
        supervisor: process.supervisor.clone(),
        generation,
        tls,
        initial_table,
        log_sample_rate: process.log_sample_rate,
        started_epoch_ms: process.started_epoch_ms ^ generation.wrapping_mul(0x1_0000_0001),
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::with_capacity(workers);
    for (index, (listener, control)) in listeners.into_iter().zip(receivers).enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lasso-worker-{index}"))
            .stack_size(crate::app::thread::WORKER_STACK_BYTES)
            .spawn(move || {
                if let Err(e) = monoio::utils::bind_to_cpu_set([index % cores]) {
                    tracing::debug!(worker = index, error = ?e, "could not pin worker thread");
                }
                let run = async move {
                    let listener = match monoio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(format!("worker {index}: {e}")));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let worker = Rc::new(Worker::new(index, shared));
                    crate::app::run::run(worker, listener, control).await;
                };
                block_on(uring, run)
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker thread died during start-up".into()),
        }
    }
    monitor.attach(shared.clone());
    crate::access::live::publish(&config.access);
    if !config.access.keys.is_empty() {
        crate::access::usage::start(crate::access::usage::usage_path(&config.source));
    }
    Ok(Generation {
        shared,
        threads,
        monitor: Some(monitor),
    })
}

/// Validates a change and returns the new configuration, its text, and whether that text must be written (not for
/// a reload of the file as it is). Nothing is written here: the file changes only once the new generation runs.
fn prepare(process: &Process, change: ConfigChange) -> Result<(Config, String, bool), ChangeError> {
    let path = &process.path;
    let text = match change {
        ConfigChange::ReloadFile => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ChangeError::Io(format!("{}: cannot read: {e}", path.display())))?;
            return config::load_str(&text, path, &config::env::process)
                .map(|c| (c, text, false))
                .map_err(|e| ChangeError::Invalid(e.to_string()));
        }
        ConfigChange::Replace(text) => text,
        ConfigChange::Edit(edit) => {
            let current = std::fs::read_to_string(path)
                .map_err(|e| ChangeError::Io(format!("{}: cannot read: {e}", path.display())))?;
            let mut doc: serde_norway::Value = serde_norway::from_str(&current)
                .map_err(|e| ChangeError::Invalid(format!("{}: {e}", path.display())))?;
            edit(&mut doc).map_err(ChangeError::Edit)?;
            serde_norway::to_string(&doc).map_err(|e| ChangeError::Invalid(e.to_string()))?
        }
    };
    let config = config::load_str(&text, path, &config::env::process)
        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
    Ok((config, text, true))
}

/// Loads the configuration a start runs. When the file does not validate (a hand edit that failed its SIGHUP, say),
/// the start falls back, loudly, to the last configuration that validated and ran, then to the backups (newest
/// first); only when none validates does the start fail, with the file's own error. Relative profile paths resolve
/// from the file's directory either way.
fn load_at_start(path: &std::path::Path) -> Result<Config, String> {
    let loaded = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: (file): cannot read: {e}", path.display()))
        .and_then(|text| {
            config::load_str(&text, path, &config::env::process)
                .map(|c| (c, text))
                .map_err(|e| e.to_string())
        });
    let error = match loaded {
        Ok((config, text)) => {
            remember(path, &text);
            return Ok(config);
        }
        Err(error) => error,
    };
    for fallback in config::store::fallbacks(path) {
        let Ok(text) = std::fs::read_to_string(&fallback) else {
            continue;
        };
        if let Ok(config) = config::load_str(&text, path, &config::env::process) {
            tracing::error!(
                file = %path.display(),
                fallback = %fallback.display(),
                %error,
                "the configuration file does not validate: running the last good configuration instead; fix the \
                 file (the admin API and SIGHUP still read and write it)"
            );
            return Ok(config);
        }
    }
    Err(error)
}

/// Keeps `text` as the last good configuration (a failure is logged: it only costs the fallback).
fn remember(path: &std::path::Path, text: &str) {
    if let Err(e) = config::store::remember_good(path, text) {
        tracing::warn!(error = %e, "cannot keep a copy of the last good configuration");
    }
}

/// Runs the proxy until a shutdown signal has been handled. Errors are start-up failures.
pub fn run(opts: RunOptions) -> Result<(), String> {
    let path = config_path(opts.config.clone());
    let config = load_at_start(&path)?;
    let workers = opts
        .workers
        .or((config.server.workers > 0).then_some(config.server.workers))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let port = opts.port.unwrap_or(config.server.port);
    let bind = opts
        .bind
        .clone()
        .unwrap_or_else(|| config.server.bind.clone());
    let addr = parse_bind(&bind, port)?;
    let (actual, listeners) = bind_listeners(addr, workers)?;
    let (commands_tx, commands) = std::sync::mpsc::channel::<SupervisorCommand>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    {
        let tx = commands_tx.clone();
        std::thread::Builder::new()
            .name("lasso-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(SupervisorCommand::Signal(signal)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }
    let uring = monoio::utils::detect_uring() && !config::env::legacy_driver(&config::env::process);
    if uring {
        tracing::info!("io driver: io_uring");
    } else {
        tracing::warn!("io driver: legacy epoll (io_uring unavailable or disabled)");
    }
    let mut process = Process {
        listeners,
        workers,
        uring,
        path: path.clone(),
        started: Instant::now(),
        started_epoch_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        node_id: node_id(),
        region: config::env::region(&config::env::process),
        log_sample_rate: config::env::log_sample_rate(&config::env::process),
        connections: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        peers: Arc::default(),
        supervisor: commands_tx,
    };
    let config = Arc::new(config);
    let mut current = start_generation(&process, config.clone(), 1, None)?;
    crate::ops::cluster::start(&current.shared, actual.port());
    if let Some(secret) = crate::ops::cluster::secret().filter(|_| crate::ops::cluster::enabled()) {
        crate::ops::cluster_events::start(current.shared.node_id.clone(), secret);
    }
    tracing::info!(
        address = %actual,
        workers,
        config = %path.display(),
        chains = config.chain_count(),
        providers = config.providers.len(),
        "listening"
    );
    let mut retired: Vec<Generation> = Vec::new();
    let mut generation = 1u64;
    let mut failed = false;
    loop {
        let Ok(command) = commands.recv() else { break };
        // Reap retired generations whose connections have all closed.
        let (done, still): (Vec<_>, Vec<_>) = retired.into_iter().partition(Generation::finished);
        retired = still;
        for g in done {
            failed |= g.join();
        }
        let (change, reply) = match command {
            SupervisorCommand::Signal(signal) if signal == signal_hook::consts::SIGHUP => {
                (ConfigChange::ReloadFile, None)
            }
            SupervisorCommand::Signal(signal) => {
                tracing::info!(
                    signal,
                    drain_timeout_ms =
                        current.shared.config.server.drain_timeout.as_millis() as u64,
                    "shutting down: draining connections"
                );
                break;
            }
            SupervisorCommand::Change(change, reply) => (change, Some(reply)),
        };
        let outcome = prepare(&process, change).and_then(|(config, text, write)| {
            let config = Arc::new(config);
            // The new generation starts warm: measurements, breakers and cool-downs of the providers that stay.
            let inherited = current.monitor.as_ref().and_then(|m| m.bequeath());
            let next = start_generation(&process, config.clone(), generation + 1, inherited)
                .map_err(ChangeError::Start)?;
            // Written only now that the new generation runs; if it cannot be written the change is undone.
            if write {
                if let Err(e) = crate::config::store::persist(&process.path, &text) {
                    let (ack_tx, _ack_rx) = std::sync::mpsc::channel();
                    next.tell(|| Control::Retire(ack_tx.clone()));
                    retired.push(next);
                    return Err(ChangeError::Io(e));
                }
            }
            remember(&process.path, &text);
            Ok((next, config))
        });
        let answer = match outcome {
            Ok((next, config)) => {
                generation += 1;
                // Reply only once every old worker stopped accepting, so whoever changed the configuration reads
                // the new one on their next connection.
                let (ack_tx, ack_rx) = std::sync::mpsc::channel();
                current.tell(|| Control::Retire(ack_tx.clone()));
                drop(ack_tx);
                for _ in 0..workers {
                    if ack_rx
                        .recv_timeout(std::time::Duration::from_secs(5))
                        .is_err()
                    {
                        tracing::warn!("a retired worker did not confirm it stopped accepting");
                        break;
                    }
                }
                // The retired generation's monitor stops now: no more probes of providers (or URLs, or keys) that
                // may have been removed; its workers finish their connections on the last table they got.
                if let Some(monitor) = current.monitor.take() {
                    monitor.stop();
                }
                retired.push(std::mem::replace(&mut current, next));
                let summary = format!(
                    "configuration generation {generation} applied: {} chains, {} providers",
                    config.chain_count(),
                    config.providers.len()
                );
                tracing::info!(
                    generation,
                    chains = config.chain_count(),
                    providers = config.providers.len(),
                    "configuration applied"
                );
                Ok(summary)
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration change rejected; the running configuration stays");
                Err(e.to_string())
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }
    // Stop taking connections at once: the workers close their copies of the sockets as they start draining.
    process.listeners.clear();
    current.tell(|| Control::Shutdown);
    for g in &retired {
        g.tell(|| Control::Shutdown);
    }
    failed |= current.join();
    for g in retired {
        failed |= g.join();
    }
    if failed {
        return Err("a worker thread panicked".into());
    }
    tracing::info!("shutdown complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_refuses_a_port_held_by_another_reuseport_socket() {
        let other = listener_socket("127.0.0.1:0".parse().unwrap(), true).unwrap();
        other.listen(1).unwrap();
        let taken = other.local_addr().unwrap().as_socket().unwrap();
        let err = bind_listeners(taken, 1).unwrap_err();
        assert!(err.contains("another process"), "{err}");
        let (free, listeners) = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_ne!(free.port(), 0);
        assert_eq!(listeners.len(), 2);
    }

    #[test]
    fn bind_addresses_parse() {
        assert_eq!(parse_bind("::", 1).unwrap(), "[::]:1".parse().unwrap());
        assert_eq!(parse_bind("[::]", 1).unwrap(), "[::]:1".parse().unwrap());
        assert_eq!(
            parse_bind("127.0.0.1", 2).unwrap(),
            "127.0.0.1:2".parse().unwrap()
        );
        assert!(parse_bind("localhost", 1).is_err());
    }
}
