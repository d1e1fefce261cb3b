//! Rate limits for warnings a client can cause once per request ("request failed", "upstream attempt failed"): each
//! worker logs at most [`PER_SECOND`] of each kind per second; the next line of a kind that was cut says how many
//! were suppressed (`suppressed=N`). Counters and metrics still see every one.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Lines of one kind a worker logs per second.
pub const PER_SECOND: u32 = 10;

/// The kinds of per-request warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    RequestFailed = 0,
    AttemptFailed = 1,
}

const KINDS: usize = 2;

#[derive(Default)]
struct Kind {
    /// Start of the current one-second window.
    window: Cell<Option<Instant>>,
    logged: Cell<u32>,
    suppressed: Cell<u64>,
}

/// One worker's rate limits (single-threaded: it lives in the worker).
#[derive(Default)]
pub struct LogLimit {
    kinds: [Kind; KINDS],
}

impl LogLimit {
    /// `Some(suppressed since the last line of this kind)` when a line of `kind` may be logged now; `None` when it
    /// is suppressed (and counted).
    pub fn allow(&self, kind: Warning) -> Option<u64> {
        self.allow_at(kind, Instant::now())
    }

    fn allow_at(&self, kind: Warning, now: Instant) -> Option<u64> {
        let k = &self.kinds[kind as usize];
        if k.window
            .get()
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            k.window.set(Some(now));
            k.logged.set(0);
        }
        if k.logged.get() >= PER_SECOND {
            k.suppressed.set(k.suppressed.get() + 1);
            return None;
        }
        k.logged.set(k.logged.get() + 1);
        Some(k.suppressed.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_second_per_kind_then_the_suppressed_count() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        for _ in 0..PER_SECOND {
            assert_eq!(limit.allow_at(Warning::RequestFailed, t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(limit.allow_at(Warning::RequestFailed, t0), None);
        }
        assert_eq!(
            limit.allow_at(Warning::AttemptFailed, t0),
            Some(0),
            "kinds are limited apart"
        );
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(limit.allow_at(Warning::RequestFailed, t1), Some(5));
        assert_eq!(limit.allow_at(Warning::RequestFailed, t1), Some(0));
    }
}
