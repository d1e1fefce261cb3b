//! Metering: compute units per key, chain and method, where one call's units are (bytes in + bytes out) times its
//! method weight (a batch's bytes are shared evenly among its members). Each worker adds to its own thread-local
//! table, which its run loop folds into the process-wide totals every `ACCESS_USAGE_FLUSH_MS` (the only lock, taken
//! then); a persister thread appends the totals' growth to the usage file (`LASSO_BACKUP_DIR/usage.tsv`, or
//! `.<config file>.usage` beside the config) every `ACCESS_USAGE_PERSIST_MS`, one line per (key, chain, method):
//! `unix_ms key chain method requests units`. At start the file is read back, so `/metrics` totals and
//! `/api/admin/usage` survive a restart losing at most the last flush and persist intervals. Labels are key ids,
//! chain names and method names of calls that were admitted (a bounded set per configuration).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;

use crate::config::defaults::{ACCESS_USAGE_MAX_METHODS, ACCESS_USAGE_PERSIST_MS};

/// (key id, chain, method).
pub type UsageKey = (String, String, String);

/// Requests and compute units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub units: f64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.units += other.units;
    }
}

#[derive(Default)]
struct Global {
    totals: HashMap<UsageKey, Counts>,
    unpersisted: HashMap<UsageKey, Counts>,
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

/// This worker's counts by key id, then chain, then method: looked up by `&str` level by level (Fx hashing: key ids
/// and chains come from the configuration, methods are at most [`ACCESS_USAGE_MAX_METHODS`] per key and chain), so
/// a request allocates nothing once its (key, chain, method) was seen.
type LocalCounts = FxHashMap<String, FxHashMap<String, FxHashMap<String, Counts>>>;

/// The method label of calls past [`ACCESS_USAGE_MAX_METHODS`] distinct methods of one key and chain.
pub const OTHER_METHODS: &str = "(other)";

struct Local {
    counts: LocalCounts,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local { counts: FxHashMap::default() });
}

fn with_global<T>(f: impl FnOnce(&mut Global) -> T) -> T {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Global::default))
}

/// Records one admitted request of key `key`: `methods` (each member of a batch), each weighted by `weights`
/// (`access::weights`).
pub fn record(
    key: &str,
    chain: &str,
    methods: &[std::borrow::Cow<'_, str>],
    weights: &HashMap<String, f64>,
    bytes_in: usize,
    bytes_out: usize,
) {
    if methods.is_empty() {
        return;
    }
    let bytes = (bytes_in + bytes_out) as f64 / methods.len() as f64;
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let chains = match l.counts.get_mut(key) {
            Some(chains) => chains,
            None => l.counts.entry(key.to_string()).or_default(),
        };
        let by_method = match chains.get_mut(chain) {
            Some(m) => m,
            None => chains.entry(chain.to_string()).or_default(),
        };
        for method in methods {
            let label = if by_method.len() < ACCESS_USAGE_MAX_METHODS
                || by_method.contains_key(method.as_ref())
            {
                method.as_ref()
            } else {
                OTHER_METHODS
            };
            let counts = match by_method.get_mut(label) {
                Some(c) => c,
                None => by_method.entry(label.to_string()).or_default(),
            };
            counts.add(Counts {
                requests: 1,
                units: bytes * crate::access::weights::weight(method, weights),
            });
        }
    });
}

fn flush_local(l: &mut Local) {
    if l.counts.is_empty() {
        return;
    }
    let counts = std::mem::take(&mut l.counts);
    with_global(|g| {
        for (key, chains) in counts {
            for (chain, methods) in chains {
                for (method, c) in methods {
                    let k = (key.clone(), chain.clone(), method);
                    g.totals.entry(k.clone()).or_default().add(c);
                    g.unpersisted.entry(k).or_default().add(c);
                }
            }
        }
    });
}

/// Folds this worker's counts into the process totals (each worker's run loop calls it every
/// `ACCESS_USAGE_FLUSH_MS`, so an idle worker's last requests are counted too).
pub fn flush() {
    LOCAL.with(|l| flush_local(&mut l.borrow_mut()));
}

/// Totals since the usage file began (for `/metrics`), sorted.
pub fn totals() -> Vec<(UsageKey, Counts)> {
    let mut out: Vec<_> = with_global(|g| g.totals.iter().map(|(k, c)| (k.clone(), *c)).collect());
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The usage file next to the configuration `config` (see the module doc).
pub fn usage_path(config: &Path) -> PathBuf {
    use crate::config::env::{BACKUP_DIR, process};
    match process(BACKUP_DIR).filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(&dir).join("usage.tsv"),
        None => config.parent().unwrap_or(Path::new(".")).join(format!(
            ".{}.usage",
            config
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("chains.yml")
        )),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_line(line: &str) -> Option<(u64, UsageKey, Counts)> {
    let mut f = line.split('\t');
    let ts = f.next()?.parse().ok()?;
    let key = (
        f.next()?.to_string(),
        f.next()?.to_string(),
        f.next()?.to_string(),
    );
    let requests = f.next()?.parse().ok()?;
    let units = f.next()?.parse().ok()?;
    Some((ts, key, Counts { requests, units }))
}

/// Usage of `key` (every key when `None`) between `from` and `to` (unix ms, inclusive): persisted lines plus what
/// has not been written yet.
pub fn query(path: &Path, key: Option<&str>, from: u64, to: u64) -> Vec<(UsageKey, Counts)> {
    let mut sums: HashMap<UsageKey, Counts> = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for (ts, k, c) in text.lines().filter_map(parse_line) {
            if (from..=to).contains(&ts) && key.is_none_or(|want| k.0 == want) {
                sums.entry(k).or_default().add(c);
            }
        }
    }
    let now = now_ms();
    if (from..=to).contains(&now) {
        with_global(|g| {
            for (k, c) in &g.unpersisted {
                if key.is_none_or(|want| k.0 == want) {
                    sums.entry(k.clone()).or_default().add(*c);
                }
            }
        });
    }
    let mut out: Vec<_> = sums.into_iter().collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Appends what grew since the last call to `path`.
pub fn persist(path: &Path) -> std::io::Result<()> {
    let pending = with_global(|g| std::mem::take(&mut g.unpersisted));
    if pending.is_empty() {
        return Ok(());
    }
    let ts = now_ms();
    let mut text = String::new();
    for ((k, chain, method), c) in &pending {
        text.push_str(&format!(
            "{ts}\t{k}\t{chain}\t{method}\t{}\t{}\n",
            c.requests, c.units
        ));
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if written.is_err() {
        // Keep the counts for the next attempt.
        with_global(|g| {
            for (k, c) in pending {
                g.unpersisted.entry(k).or_default().add(c);
            }
        });
    }
    written
}

/// Once per process: reads the usage file back into the totals and starts the persister thread.
pub fn start(path: PathBuf) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        if let Ok(text) = std::fs::read_to_string(&path) {
            with_global(|g| {
                for (_, k, c) in text.lines().filter_map(parse_line) {
                    g.totals.entry(k).or_default().add(c);
                }
            });
        }
        let spawned = std::thread::Builder::new().name("lasso-usage".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(ACCESS_USAGE_PERSIST_MS));
                if let Err(e) = persist(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot append to the usage file");
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the usage persister");
        }
    });
}
