//! The one way tests wait: poll a condition until it holds or a deadline passes, then fail with the last
//! observation. Never a sleep standing in for synchronisation: the pause between polls only spaces the checks.

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Ok`; panics with `what` and the last error at the deadline.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not reached within {timeout:?}; last: {last}")
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}
