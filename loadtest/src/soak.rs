//! The `soak` step (`loadtest/scenarios/soak.yml`): the target's resident memory (VmRSS of its process, from
//! `/proc/PID/status`) across many connections. Phases, each followed by an RSS reading once it has settled:
//!
//! 1. warm-up: `warmup_connections` sequential connections (allocator arenas, pools and caches reach their working
//!    size; not counted), then **before**;
//! 2. sequential: `sequential_connections` connections one after another, each connect, one JSON-RPC request, read
//!    the answer, close (by the client), then **after sequential**; RSS is also sampled ten times along the way, so
//!    linear growth (a per-connection leak) shows apart from a one-off step;
//! 3. idle: `idle_connections` keep-alive connections opened at once (one request each), held for `duration_s`, then
//!    **idle held**; then all closed, then **idle closed**;
//! 4. with `idle_rounds: 2`, the idle phase once more (**idle held again**, **idle closed again**, both against
//!    "idle closed"): memory the allocator kept after the first round and reuses shows as no further growth, a leak
//!    as the same growth again.
//!
//! Bytes per connection: (RSS after − RSS before the phase) × 1024 / connections of the phase. The sequential phase
//! is bounded by `time_limit_s` (it stops early and reports the connections it made); the idle connections are held
//! for at most `duration_s` + 2 minutes whatever happens.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::{HttpConn, Target};
use crate::loadgen;
use crate::sys;

/// The JSON-RPC request each soak connection sends.
pub const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;

/// What a soak step does.
#[derive(Clone, Debug)]
pub struct SoakSpec {
    pub url: String,
    /// The target process whose RSS is read.
    pub pid: u32,
    pub warmup_connections: u64,
    pub sequential_connections: u64,
    pub idle_connections: u64,
    /// 1, or 2 to repeat the idle phase (reuse or leak of what the first round left).
    pub idle_rounds: u32,
    /// How long the idle connections are held once all are open.
    pub hold: Duration,
    /// Bound on the sequential phase.
    pub time_limit: Duration,
    /// CPUs of the load side.
    pub cpus: Vec<usize>,
    /// Print a line per RSS sample on stderr.
    pub progress: bool,
}

/// Outcome of a connection phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseCount {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// The time limit ended the phase before every connection was made.
    pub stopped_early: bool,
    pub first_error: Option<String>,
}

impl PhaseCount {
    /// Connections made (answered or not).
    pub fn total(&self) -> u64 {
        self.ok + self.errors
    }
}

/// Everything a soak step measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoakResult {
    /// Open-files limit of the target process (`/proc/PID/limits`) and of the load generator.
    pub target_nofile: Option<u64>,
    pub load_nofile: u64,
    pub rss_start_kib: u64,
    pub warmup: PhaseCount,
    pub rss_before_kib: u64,
    pub sequential_planned: u64,
    pub sequential: PhaseCount,
    /// (connections made so far, RSS KiB) along the sequential phase.
    pub samples: Vec<(u64, u64)>,
    pub rss_after_sequential_kib: u64,
    pub idle_planned: u64,
    pub idle_established: u64,
    pub idle_failed: u64,
    pub idle_open_s: f64,
    pub rss_idle_held_kib: u64,
    pub rss_after_idle_kib: u64,
    /// The second idle round (`idle_rounds: 2`).
    #[serde(default)]
    pub idle_again: Option<IdleRound>,
}

/// One repetition of the idle phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdleRound {
    pub established: u64,
    pub failed: u64,
    pub open_s: f64,
    pub rss_held_kib: u64,
    pub rss_closed_kib: u64,
}

/// One line of the soak table.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub rss_kib: u64,
    /// Connections the growth is divided by (0: a reference point).
    pub connections: u64,
    /// RSS growth from the phase's reference point, KiB.
    pub delta_kib: i64,
    pub bytes_per_connection: Option<f64>,
}

/// RSS growth per connection in bytes from `from_kib` to `to_kib` over `n` connections (negative when RSS shrank).
pub fn bytes_per_connection(from_kib: u64, to_kib: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (to_kib as f64 - from_kib as f64) * 1024.0 / n as f64)
}

fn phase(name: &'static str, from_kib: u64, to_kib: u64, n: u64) -> Phase {
    Phase {
        name,
        rss_kib: to_kib,
        connections: n,
        delta_kib: to_kib as i64 - from_kib as i64,
        bytes_per_connection: bytes_per_connection(from_kib, to_kib, n),
    }
}

fn fmt_bpc(b: Option<f64>) -> String {
    b.map(|b| format!("{b:.0} B")).unwrap_or_else(|| "-".into())
}

impl SoakResult {
    /// The phases with their reference points: sequential against `before`, idle held and idle closed against
    /// `after sequential` (idle closed = what stays per connection once they are gone).
    pub fn phases(&self) -> Vec<Phase> {
        let mut v = vec![
            phase("start", self.rss_start_kib, self.rss_start_kib, 0),
            phase(
                "before (after warm-up)",
                self.rss_start_kib,
                self.rss_before_kib,
                self.warmup.total(),
            ),
            phase(
                "after sequential",
                self.rss_before_kib,
                self.rss_after_sequential_kib,
                self.sequential.total(),
            ),
            phase(
                "idle held",
                self.rss_after_sequential_kib,
                self.rss_idle_held_kib,
                self.idle_established,
            ),
            phase(
                "idle closed",
                self.rss_after_sequential_kib,
                self.rss_after_idle_kib,
                self.idle_established,
            ),
        ];
        if let Some(r) = &self.idle_again {
            v.push(phase(
                "idle held again",
                self.rss_after_idle_kib,
                r.rss_held_kib,
                r.established,
            ));
            v.push(phase(
                "idle closed again",
                self.rss_after_idle_kib,
                r.rss_closed_kib,
                r.established,
            ));
        }
        v
    }

    /// Sequential growth per connection (the leak figure).
    pub fn sequential_bytes_per_connection(&self) -> Option<f64> {
        bytes_per_connection(
            self.rss_before_kib,
            self.rss_after_sequential_kib,
            self.sequential.total(),
        )
    }

    /// Growth per connection between the first and the last RSS sample of the sequential phase (excludes the
    /// one-off growth of the first tenth).
    pub fn sequential_slope_bytes_per_connection(&self) -> Option<f64> {
        let (a, b) = (self.samples.first()?, self.samples.last()?);
        bytes_per_connection(a.1, b.1, b.0.checked_sub(a.0)?)
    }

    /// One line for the table's notes.
    pub fn summary(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        let again = self
            .idle_again
            .as_ref()
            .map(|r| {
                format!(
                    "; again: {:.1} MiB held, {:.1} MiB after close ({}/conn over the first round)",
                    mib(r.rss_held_kib),
                    mib(r.rss_closed_kib),
                    fmt_bpc(bytes_per_connection(
                        self.rss_after_idle_kib,
                        r.rss_closed_kib,
                        r.established
                    ))
                )
            })
            .unwrap_or_default();
        format!(
            "{} sequential conns in {:.0} s ({} errors{}): RSS {:.1} -> {:.1} MiB, {}/conn; {} idle conns: {:.1} MiB held \
             ({}/conn), {:.1} MiB after close ({}/conn){again}",
            self.sequential.total(),
            self.sequential.seconds,
            self.sequential.errors,
            if self.sequential.stopped_early {
                ", time limit reached"
            } else {
                ""
            },
            mib(self.rss_before_kib),
            mib(self.rss_after_sequential_kib),
            fmt_bpc(self.sequential_bytes_per_connection()),
            self.idle_established,
            mib(self.rss_idle_held_kib),
            fmt_bpc(bytes_per_connection(
                self.rss_after_sequential_kib,
                self.rss_idle_held_kib,
                self.idle_established
            )),
            mib(self.rss_after_idle_kib),
            fmt_bpc(bytes_per_connection(
                self.rss_after_sequential_kib,
                self.rss_after_idle_kib,
                self.idle_established
            )),
        )
    }

    /// The multi-line report of one soak step (text; also used in report.md inside a code block).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<24} {:>10} {:>12} {:>13} {:>12}",
            "phase", "RSS MiB", "delta KiB", "connections", "bytes/conn"
        );
        for p in self.phases() {
            let _ = writeln!(
                s,
                "{:<24} {:>10.1} {:>12} {:>13} {:>12}",
                p.name,
                p.rss_kib as f64 / 1024.0,
                p.delta_kib,
                p.connections,
                fmt_bpc(p.bytes_per_connection)
            );
        }
        let _ = writeln!(
            s,
            "sequential: {} of {} planned in {:.1} s ({:.0} conn/s), {} ok, {} errors{}{}",
            self.sequential.total(),
            self.sequential_planned,
            self.sequential.seconds,
            self.sequential.total() as f64 / self.sequential.seconds.max(1e-9),
            self.sequential.ok,
            self.sequential.errors,
            if self.sequential.stopped_early {
                " (time limit reached)"
            } else {
                ""
            },
            self.sequential
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
        if let Some(b) = self.sequential_slope_bytes_per_connection() {
            let _ = writeln!(
                s,
                "sequential slope (first to last sample): {b:.0} B/conn; samples (conns: RSS MiB): {}",
                self.samples
                    .iter()
                    .map(|(n, k)| format!("{n}: {:.1}", *k as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            s,
            "idle: {} of {} established in {:.1} s, {} failed; open-files limit: target {}, load generator {}",
            self.idle_established,
            self.idle_planned,
            self.idle_open_s,
            self.idle_failed,
            self.target_nofile
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            self.load_nofile
        );
        if let Some(r) = &self.idle_again {
            let _ = writeln!(
                s,
                "idle again: {} of {} established in {:.1} s, {} failed",
                r.established, self.idle_planned, r.open_s, r.failed
            );
        }
        s
    }
}

/// RSS once it stopped moving: two equal readings 250 ms apart after `first_wait` (at most 5 s more).
fn settled_rss_kib(pid: u32, first_wait: Duration) -> u64 {
    std::thread::sleep(first_wait);
    let mut last = sys::rss_kib(pid).unwrap_or(0);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = sys::rss_kib(pid).unwrap_or(0);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// `n` connections one after another (connect, one request, read the answer, close), until `deadline`. Calls
/// `on_sample(connections made)` every `sample_every` connections (0 = never).
fn sequential(
    target: &Target,
    n: u64,
    deadline: Instant,
    sample_every: u64,
    on_sample: &mut dyn FnMut(u64),
) -> Result<PhaseCount, String> {
    let mut rt = loadgen::runtime()?;
    let t0 = Instant::now();
    let mut out = PhaseCount::default();
    rt.block_on(async {
        for i in 0..n {
            if Instant::now() >= deadline {
                out.stopped_early = true;
                break;
            }
            let r = monoio::time::timeout(Duration::from_secs(10), async {
                let mut c = HttpConn::connect(target).await?;
                let reply = c.post(BODY, false).await?;
                Ok::<_, io::Error>(reply)
                // `c` is dropped here: the client closes the connection.
            })
            .await;
            let err = match r {
                Ok(Ok(rep)) if rep.status == 200 && rep.rpc_errors == 0 => None,
                Ok(Ok(rep)) => Some(format!(
                    "HTTP {} with {} JSON-RPC error(s)",
                    rep.status, rep.rpc_errors
                )),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer within 10 s".into()),
            };
            match err {
                None => out.ok += 1,
                Some(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
            }
            if sample_every > 0 && (i + 1) % sample_every == 0 {
                on_sample(i + 1);
            }
        }
    });
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// Open-files limit of a process (soft "Max open files" in `/proc/PID/limits`).
fn nofile_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the phases against `spec.url` (blocking; the calling thread is pinned to the load CPUs meanwhile).
pub fn run(spec: &SoakSpec) -> Result<SoakResult, String> {
    let target = Arc::new(Target::parse(&spec.url)?);
    let pid = spec.pid;
    let mut res = SoakResult {
        load_nofile: sys::raise_nofile(spec.idle_connections + 65_536),
        target_nofile: nofile_of(pid),
        sequential_planned: spec.sequential_connections,
        idle_planned: spec.idle_connections,
        ..Default::default()
    };
    if res.load_nofile < spec.idle_connections + 100 {
        return Err(format!(
            "open-files limit {} is below the {} idle connections (raise it: ulimit -n)",
            res.load_nofile, spec.idle_connections
        ));
    }
    if let Some(n) = res
        .target_nofile
        .filter(|&n| n < spec.idle_connections + 100)
    {
        return Err(format!(
            "the target's open-files limit {n} is below the {} idle connections",
            spec.idle_connections
        ));
    }
    let _ = sys::pin_current_thread(&spec.cpus);
    let say = |msg: String| {
        if spec.progress {
            eprintln!("  soak: {msg}");
        }
    };
    res.rss_start_kib = settled_rss_kib(pid, Duration::ZERO);
    let deadline = Instant::now() + spec.time_limit;
    res.warmup = sequential(&target, spec.warmup_connections, deadline, 0, &mut |_| {})?;
    res.rss_before_kib = settled_rss_kib(pid, Duration::from_millis(500));
    say(format!(
        "start {:.1} MiB; after {} warm-up connections {:.1} MiB",
        res.rss_start_kib as f64 / 1024.0,
        res.warmup.total(),
        res.rss_before_kib as f64 / 1024.0
    ));
    let every = (spec.sequential_connections / 10).max(1);
    let mut samples = Vec::new();
    let t0 = Instant::now();
    res.sequential = sequential(
        &target,
        spec.sequential_connections,
        deadline,
        every,
        &mut |done| {
            let rss = sys::rss_kib(pid).unwrap_or(0);
            samples.push((done, rss));
            say(format!(
                "{done}/{} sequential connections, {:.0} s, RSS {:.1} MiB",
                spec.sequential_connections,
                t0.elapsed().as_secs_f64(),
                rss as f64 / 1024.0
            ));
        },
    )?;
    res.samples = samples;
    res.rss_after_sequential_kib = settled_rss_kib(pid, Duration::from_secs(1));
    say(format!(
        "after {} sequential connections ({} errors): {:.1} MiB",
        res.sequential.total(),
        res.sequential.errors,
        res.rss_after_sequential_kib as f64 / 1024.0
    ));
    if spec.idle_connections > 0 {
        let first = idle_round(spec, &say)?;
        res.idle_open_s = first.open_s;
        res.idle_established = first.established;
        res.idle_failed = first.failed;
        res.rss_idle_held_kib = first.rss_held_kib;
        res.rss_after_idle_kib = first.rss_closed_kib;
        if spec.idle_rounds >= 2 {
            res.idle_again = Some(idle_round(spec, &say)?);
        }
    } else {
        res.rss_idle_held_kib = res.rss_after_sequential_kib;
        res.rss_after_idle_kib = res.rss_after_sequential_kib;
    }
    Ok(res)
}

/// Opens the idle connections, holds them `spec.hold`, reads RSS, closes them, reads RSS.
fn idle_round(spec: &SoakSpec, say: &dyn Fn(String)) -> Result<IdleRound, String> {
    let t1 = Instant::now();
    let hold = loadgen::hold_idle(
        &spec.url,
        spec.idle_connections as usize,
        BODY,
        1,
        &spec.cpus,
        spec.hold + Duration::from_secs(120),
    )?;
    let mut r = IdleRound {
        established: hold.established,
        failed: hold.failed,
        open_s: t1.elapsed().as_secs_f64(),
        ..Default::default()
    };
    r.rss_held_kib = settled_rss_kib(spec.pid, spec.hold);
    say(format!(
        "{} idle connections held ({} failed): {:.1} MiB",
        r.established,
        r.failed,
        r.rss_held_kib as f64 / 1024.0
    ));
    hold.release();
    r.rss_closed_kib = settled_rss_kib(spec.pid, Duration::from_secs(1));
    say(format!(
        "idle connections closed: {:.1} MiB",
        r.rss_closed_kib as f64 / 1024.0
    ));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SoakResult {
        SoakResult {
            rss_start_kib: 10_000,
            warmup: PhaseCount {
                ok: 1000,
                ..Default::default()
            },
            rss_before_kib: 12_000,
            sequential_planned: 200_000,
            sequential: PhaseCount {
                ok: 199_990,
                errors: 10,
                seconds: 50.0,
                ..Default::default()
            },
            // 200,000 connections, +50,000 KiB: 256 B per connection.
            rss_after_sequential_kib: 62_000,
            samples: vec![(20_000, 20_000), (200_000, 56_000)],
            idle_planned: 10_000,
            idle_established: 10_000,
            // +100,000 KiB for 10,000 held: 10,240 B each; 2,000 KiB stay after close: 204.8 B each.
            rss_idle_held_kib: 162_000,
            rss_after_idle_kib: 64_000,
            ..Default::default()
        }
    }

    #[test]
    fn bytes_per_connection_is_kib_growth_times_1024_over_connections() {
        assert_eq!(bytes_per_connection(1000, 1001, 1024), Some(1.0));
        assert_eq!(bytes_per_connection(1000, 1000, 5), Some(0.0));
        assert_eq!(bytes_per_connection(2000, 1000, 1024), Some(-1000.0));
        assert_eq!(bytes_per_connection(1000, 2000, 0), None);
    }

    #[test]
    fn phases_divide_each_growth_by_its_own_connections_and_reference() {
        let r = sample();
        let p = r.phases();
        let names: Vec<&str> = p.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "start",
                "before (after warm-up)",
                "after sequential",
                "idle held",
                "idle closed"
            ]
        );
        assert_eq!(p[0].bytes_per_connection, None);
        assert_eq!((p[1].delta_kib, p[1].connections), (2000, 1000));
        assert_eq!(p[1].bytes_per_connection, Some(2048.0));
        // Errors count as connections made: 199,990 ok + 10 errors.
        assert_eq!((p[2].delta_kib, p[2].connections), (50_000, 200_000));
        assert_eq!(p[2].bytes_per_connection, Some(256.0));
        assert_eq!(r.sequential_bytes_per_connection(), Some(256.0));
        assert_eq!((p[3].delta_kib, p[3].rss_kib), (100_000, 162_000));
        assert_eq!(p[3].bytes_per_connection, Some(10_240.0));
        assert_eq!(p[4].delta_kib, 2000);
        assert_eq!(p[4].bytes_per_connection, Some(204.8));
        // (56,000 - 20,000) KiB over 180,000 connections.
        assert_eq!(r.sequential_slope_bytes_per_connection(), Some(204.8));
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn second_idle_round_is_measured_against_what_the_first_left() {
        let mut r = sample();
        r.idle_again = Some(IdleRound {
            established: 5_000,
            failed: 0,
            open_s: 1.0,
            // 64,000 KiB after the first round: +1,000 KiB held, +500 KiB after close, over 5,000 connections.
            rss_held_kib: 65_000,
            rss_closed_kib: 64_500,
        });
        let p = r.phases();
        assert_eq!(p.len(), 7);
        assert_eq!((p[5].name, p[5].delta_kib), ("idle held again", 1000));
        assert_eq!(p[5].bytes_per_connection, Some(204.8));
        assert_eq!((p[6].name, p[6].delta_kib), ("idle closed again", 500));
        assert_eq!(p[6].bytes_per_connection, Some(102.4));
        assert!(
            r.summary().contains("102 B/conn over the first round"),
            "{}",
            r.summary()
        );
        assert!(
            r.table().contains("idle again: 5000 of 10000"),
            "{}",
            r.table()
        );
    }

    #[test]
    fn report_shows_every_phase_and_the_shrinking_case() {
        let mut r = sample();
        r.rss_after_idle_kib = 61_000; // below "after sequential": memory returned
        let t = r.table();
        assert!(t.contains("idle closed"), "{t}");
        assert!(t.contains("-102 B"), "{t}");
        assert!(t.contains("256 B"), "{t}");
        assert!(t.contains("200000 of 200000 planned"), "{t}");
        let s = r.summary();
        assert!(s.contains("200000 sequential conns"), "{s}");
        assert!(s.contains("256 B/conn"), "{s}");
        assert!(!s.contains("time limit"), "{s}");
        r.sequential.stopped_early = true;
        assert!(r.summary().contains("time limit reached"));
    }
}
