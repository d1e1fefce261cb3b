//! Per-worker keep-alive pools, one idle list per provider. Connections are reused most-recently-idle first, and
//! dropped when idle too long or found closed by the provider, so a provider restart never surfaces as an error.

use std::time::{Duration, Instant};

use super::conn::Conn;

/// A connection idle for less than this is reused without a liveness probe (reads only).
const RECENT: Duration = Duration::from_millis(500);

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections of one worker, by provider id (`pid`).
pub struct Pool {
    idle: Vec<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(providers: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: (0..providers).map(|_| Vec::new()).collect(),
            max_idle,
            idle_timeout,
        }
    }

    /// Takes a live idle connection to `pid`, discarding stale ones. The liveness probe (one non-blocking peek) runs
    /// when `strict` (a write, which must not be re-sent) or when the connection idled long enough for a provider to
    /// have closed it; a recently used connection that turns out dead is replaced transparently for reads anyway.
    pub fn take(&mut self, pid: usize, strict: bool) -> Option<Conn> {
        let list = self.idle.get_mut(pid)?;
        while let Some(idle) = list.pop() {
            let age = idle.since.elapsed();
            if age >= self.idle_timeout {
                continue;
            }
            if (strict || age >= RECENT) && idle.conn.is_stale() {
                continue;
            }
            return Some(idle.conn);
        }
        None
    }

    /// Returns a connection for reuse.
    pub fn put(&mut self, pid: usize, conn: Conn) {
        if let Some(list) = self.idle.get_mut(pid) {
            if list.len() < self.max_idle {
                list.push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Number of idle connections to `pid`.
    pub fn idle_count(&self, pid: usize) -> usize {
        self.idle.get(pid).map_or(0, Vec::len)
    }

    /// Drops idle connections past the idle timeout (called periodically).
    pub fn evict_expired(&mut self) {
        let timeout = self.idle_timeout;
        for list in &mut self.idle {
            list.retain(|i| i.since.elapsed() < timeout);
        }
    }
}
