//! Zero cold start: the merged benchmark state (latency summaries per provider x method/class) is written to
//! `LASSO_SNAPSHOTS_DIR` periodically and at shutdown (temp file, fsync, rename; newest N kept), and the newest
//! snapshot is loaded at start so routing is warm from the first request. Providers are named by profile, chain
//! and id, so a snapshot survives reordering of the configuration.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::evm::methods::{MethodClass, MethodKey};
use crate::routing::table::{Scope, StatKey, Summary};

const PREFIX: &str = "benchmark-";
const SUFFIX: &str = ".json";

#[derive(Serialize, Deserialize)]
struct Entry {
    profile: String,
    chain: String,
    provider: String,
    /// `*` for provider-wide, `class:<name>` for a class, or a method name.
    scope: String,
    samples: u64,
    attempts: u64,
    failures: u64,
    p50_us: u64,
    p90_us: u64,
    p95_us: u64,
    p99_us: u64,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    written_unix_ms: u64,
    entries: Vec<Entry>,
}

fn scope_name(scope: Scope) -> String {
    match scope {
        Scope::Provider => "*".to_string(),
        Scope::Class(c) => format!("class:{}", c.as_str()),
        Scope::Method(m) => m.name(),
    }
}

fn parse_scope(name: &str) -> Option<Scope> {
    if name == "*" {
        return Some(Scope::Provider);
    }
    if let Some(class) = name.strip_prefix("class:") {
        if let Some(c) = MethodClass::ALL.iter().find(|c| c.as_str() == class) {
            return Some(Scope::Class(*c));
        }
    }
    MethodKey::from_name(name).map(Scope::Method)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a snapshot of `summaries` into `dir` atomically and keeps the newest `retention` files.
pub fn write(
    dir: &Path,
    config: &Config,
    summaries: &rustc_hash::FxHashMap<StatKey, Summary>,
    retention: usize,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let entries = summaries
        .iter()
        .filter(|(_, s)| s.samples > 0 && !s.from_snapshot)
        .filter_map(|(key, s)| {
            let p = config.providers.get(key.pid as usize)?;
            Some(Entry {
                profile: p.profile.clone(),
                chain: p.chain.clone(),
                provider: p.id.clone(),
                scope: scope_name(key.scope),
                samples: s.samples,
                attempts: s.attempts,
                failures: s.failures,
                p50_us: s.p50_us,
                p90_us: s.p90_us,
                p95_us: s.p95_us,
                p99_us: s.p99_us,
            })
        })
        .collect();
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = unix_ms();
    let file = File {
        version: 1,
        written_unix_ms: now,
        entries,
    };
    let bytes = sonic_rs::to_vec(&file).map_err(std::io::Error::other)?;
    let path = dir.join(format!("{PREFIX}{now:016}-{seq:08}{SUFFIX}"));
    let tmp = dir.join(format!(".{PREFIX}{now:016}-{seq:08}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let mut files = list(dir);
    while files.len() > retention.max(1) {
        let oldest = files.remove(0);
        let _ = std::fs::remove_file(oldest);
    }
    Ok(path)
}

/// Snapshot files in `dir`, oldest first.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Loads the newest readable snapshot in `dir`, mapped onto the current configuration's providers.
pub fn load_newest(dir: &Path, config: &Config) -> Option<(PathBuf, HashMap<StatKey, Summary>)> {
    let index: HashMap<(&str, &str, &str), usize> = config
        .providers
        .iter()
        .map(|p| ((p.profile.as_str(), p.chain.as_str(), p.id.as_str()), p.pid))
        .collect();
    for path in list(dir).into_iter().rev() {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(file) = sonic_rs::from_slice::<File>(&bytes) else {
            tracing::warn!(path = %path.display(), "ignoring unreadable benchmark snapshot");
            continue;
        };
        let mut out = HashMap::new();
        for e in file.entries {
            let (Some(&pid), Some(scope)) = (
                index.get(&(e.profile.as_str(), e.chain.as_str(), e.provider.as_str())),
                parse_scope(&e.scope),
            ) else {
                continue;
            };
            out.insert(
                StatKey {
                    pid: pid as u32,
                    scope,
                },
                Summary {
                    samples: e.samples,
                    attempts: e.attempts,
                    failures: e.failures,
                    rate_limited: 0,
                    p50_us: e.p50_us,
                    p90_us: e.p90_us,
                    p95_us: e.p95_us,
                    p99_us: e.p99_us,
                    from_snapshot: true,
                },
            );
        }
        return Some((path, out));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_newest_files() {
        let text = "chains: { c: { chain_id: 1, providers: [ { id: a, url: \"http://a\" }, { id: b, url: \"http://b\" } ] } }";
        let config = crate::config::load_str(text, Path::new("t.yml"), &|_| None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = StatKey {
            pid: 1,
            scope: Scope::Method(MethodKey::of("eth_call")),
        };
        let summary = Summary {
            samples: 9,
            attempts: 10,
            failures: 1,
            p50_us: 1200,
            p90_us: 1300,
            p95_us: 1400,
            p99_us: 1500,
            ..Default::default()
        };
        let summaries: rustc_hash::FxHashMap<_, _> = [(key, summary.clone())].into_iter().collect();
        for _ in 0..4 {
            write(dir.path(), &config, &summaries, 2).unwrap();
        }
        assert_eq!(list(dir.path()).len(), 2, "retention");
        let (_, loaded) = load_newest(dir.path(), &config).unwrap();
        assert_eq!(
            loaded[&key],
            Summary {
                from_snapshot: true,
                ..summary
            }
        );
        std::fs::write(
            dir.path().join("benchmark-9999999999999999-00000000.json"),
            b"{broken",
        )
        .unwrap();
        assert!(
            load_newest(dir.path(), &config).is_some(),
            "a broken newest file falls back to an older one"
        );
    }
}
