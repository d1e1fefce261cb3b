//! Circuit breakers per provider (per transport), owned by each worker: closed -> open after consecutive failures of
//! one class (thresholds per class) -> half-open after a jittered recovery timeout that doubles on each re-open ->
//! closed after enough successful probes, with one probe in flight at a time. Workers report open breakers to the
//! merger, which excludes the provider on every worker within one merge interval.

use std::time::Instant;

use crate::config::BreakerSettings;
use crate::routing::classify::FailureClass;

/// The state a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may use the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as the half-open probe: report its outcome.
    Probe,
    Rejected,
}

#[derive(Debug, Clone)]
enum State {
    Closed {
        server: u32,
        connect: u32,
        timeout: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probe_in_flight: bool,
        successes: u32,
    },
}

/// One breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    /// How many times it opened without fully closing in between (drives the back-off).
    reopens: u32,
    rng: u64,
}

impl Breaker {
    pub fn new(seed: u64) -> Self {
        Breaker {
            state: State::Closed {
                server: 0,
                connect: 0,
                timeout: 0,
            },
            reopens: 0,
            rng: seed | 1,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// When open, until when.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match &mut self.state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } => {
                if now >= *until {
                    self.state = State::HalfOpen {
                        probe_in_flight: true,
                        successes: 0,
                    };
                    Admission::Probe
                } else {
                    Admission::Rejected
                }
            }
            State::HalfOpen {
                probe_in_flight, ..
            } => {
                if *probe_in_flight {
                    Admission::Rejected
                } else {
                    *probe_in_flight = true;
                    Admission::Probe
                }
            }
        }
    }

    pub fn on_success(&mut self, settings: &BreakerSettings) {
        match &mut self.state {
            State::Closed {
                server,
                connect,
                timeout,
            } => {
                *server = 0;
                *connect = 0;
                *timeout = 0;
            }
            State::HalfOpen {
                probe_in_flight,
                successes,
            } => {
                *successes += 1;
                *probe_in_flight = false;
                if *successes >= settings.half_open_successes {
                    self.state = State::Closed {
                        server: 0,
                        connect: 0,
                        timeout: 0,
                    };
                    self.reopens = 0;
                }
            }
            State::Open { .. } => {}
        }
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn on_failure(
        &mut self,
        class: FailureClass,
        settings: &BreakerSettings,
        now: Instant,
    ) -> bool {
        match &mut self.state {
            State::Closed {
                server,
                connect,
                timeout,
            } => {
                let (count, threshold) = match class {
                    FailureClass::Server => (server, settings.server_threshold),
                    FailureClass::Connect => (connect, settings.connect_threshold),
                    FailureClass::Timeout => (timeout, settings.timeout_threshold),
                };
                *count += 1;
                if *count >= threshold.max(1) {
                    self.open(settings, now);
                    return true;
                }
                false
            }
            State::HalfOpen { .. } => {
                self.open(settings, now);
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Releases a half-open probe whose outcome said nothing about health (rate limit, capability).
    pub fn release_probe(&mut self) {
        if let State::HalfOpen {
            probe_in_flight, ..
        } = &mut self.state
        {
            *probe_in_flight = false;
        }
    }

    fn open(&mut self, settings: &BreakerSettings, now: Instant) {
        let backoff = settings
            .recovery
            .saturating_mul(1 << self.reopens.min(16))
            .min(settings.max_recovery);
        // +-20% jitter so breakers of many workers and providers do not probe in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.8 + (self.rng % 401) as f64 / 1000.0;
        self.state = State::Open {
            until: now + backoff.mul_f64(jitter),
        };
        self.reopens = self.reopens.saturating_add(1);
    }

    /// Opens the breaker until `until` on another worker's word (no back-off change).
    pub fn force_open_until(&mut self, until: Instant) {
        match self.state {
            State::Open { until: mine } if mine >= until => {}
            _ => self.state = State::Open { until },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            server_threshold: 3,
            connect_threshold: 2,
            timeout_threshold: 2,
            recovery: Duration::from_millis(100),
            max_recovery: Duration::from_millis(1000),
            half_open_successes: 2,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_of_a_class() {
        let s = settings();
        let now = Instant::now();
        let mut b = Breaker::new(1);
        assert!(!b.on_failure(FailureClass::Server, &s, now));
        assert!(!b.on_failure(FailureClass::Server, &s, now));
        b.on_success(&s);
        assert!(!b.on_failure(FailureClass::Server, &s, now));
        assert!(!b.on_failure(FailureClass::Server, &s, now));
        assert!(
            b.on_failure(FailureClass::Server, &s, now),
            "third consecutive server failure opens"
        );
        assert_eq!(b.state(now), BreakerState::Open);
        assert_eq!(b.admit(now), Admission::Rejected);

        let mut c = Breaker::new(2);
        assert!(!c.on_failure(FailureClass::Connect, &s, now));
        assert!(
            c.on_failure(FailureClass::Connect, &s, now),
            "connect threshold is 2"
        );
    }

    #[test]
    fn half_open_allows_one_probe_and_closes_after_successes() {
        let s = settings();
        let now = Instant::now();
        let mut b = Breaker::new(3);
        b.on_failure(FailureClass::Timeout, &s, now);
        b.on_failure(FailureClass::Timeout, &s, now);
        let until = b.open_until().unwrap();
        let d = until - now;
        assert!(
            d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
            "jittered recovery {d:?}"
        );
        let later = until + Duration::from_millis(1);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.admit(later), Admission::Rejected, "one probe in flight");
        b.on_success(&s);
        assert_eq!(b.admit(later), Admission::Probe);
        b.on_success(&s);
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.admit(later), Admission::Allowed);
    }

    #[test]
    fn reopening_backs_off_exponentially_up_to_the_cap() {
        let s = settings();
        let mut now = Instant::now();
        let mut b = Breaker::new(4);
        b.on_failure(FailureClass::Connect, &s, now);
        b.on_failure(FailureClass::Connect, &s, now);
        let mut last = Duration::ZERO;
        for round in 0..6 {
            let until = b.open_until().unwrap();
            let d = until - now;
            if round > 0 && round < 4 {
                assert!(d > last, "round {round}: {d:?} should exceed {last:?}");
            }
            assert!(d <= Duration::from_millis(1200));
            last = d;
            now = until + Duration::from_millis(1);
            assert_eq!(b.admit(now), Admission::Probe);
            assert!(
                b.on_failure(FailureClass::Server, &s, now),
                "a failed probe re-opens"
            );
        }
    }
}
