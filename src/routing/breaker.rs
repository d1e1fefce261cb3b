//! Circuit breakers per provider (per transport), owned by each worker: closed -> open after consecutive failures of
//! one class (thresholds per class) -> half-open after a jittered recovery timeout that doubles on each re-open ->
//! closed after enough successful probes, with up to [`HALF_OPEN_PROBES`] in flight at a time (so one slow client
//! cannot hold the only probe). Failures of class `Reply` (caused by the request) never count. Workers report open
//! breakers to the merger, which excludes the provider on every worker within one merge interval.

use std::time::Instant;

use crate::config::BreakerSettings;
use crate::routing::classify::FailureClass;

/// Probes a half-open breaker lets through at once.
pub const HALF_OPEN_PROBES: u32 = 4;

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
        /// Probes sent and not yet judged (at most [`HALF_OPEN_PROBES`]).
        probes_in_flight: u32,
        successes: u32,
    },
}

/// One breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    /// How many times it opened without fully closing in between (drives the back-off).
    reopens: u32,
    /// What opened it last: a breaker opened by refused connections marks a provider known to be down.
    opened_by: Option<FailureClass>,
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
            opened_by: None,
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
                        probes_in_flight: 1,
                        successes: 0,
                    };
                    Admission::Probe
                } else {
                    Admission::Rejected
                }
            }
            State::HalfOpen {
                probes_in_flight, ..
            } => {
                if *probes_in_flight >= HALF_OPEN_PROBES {
                    Admission::Rejected
                } else {
                    *probes_in_flight += 1;
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
                probes_in_flight,
                successes,
            } => {
                *successes += 1;
                *probes_in_flight = probes_in_flight.saturating_sub(1);
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
                    FailureClass::Reply => return false,
                };
                *count += 1;
                if *count >= threshold.max(1) {
                    self.open(settings, now);
                    self.opened_by = Some(class);
                    return true;
                }
                false
            }
            State::HalfOpen { .. } if class == FailureClass::Reply => {
                self.release_probe();
                false
            }
            State::HalfOpen { .. } => {
                self.open(settings, now);
                self.opened_by = Some(class);
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Releases a half-open probe whose outcome said nothing about health (rate limit, capability).
    pub fn release_probe(&mut self) {
        if let State::HalfOpen {
            probes_in_flight, ..
        } = &mut self.state
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
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

    /// Whether it was opened by refused connections (the provider is known to be down), not by slow or bad answers.
    pub fn known_dead(&self, now: Instant) -> bool {
        self.state(now) == BreakerState::Open && self.opened_by == Some(FailureClass::Connect)
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
    fn half_open_allows_a_few_probes_and_closes_after_successes() {
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
        for _ in 0..HALF_OPEN_PROBES {
            assert_eq!(b.admit(later), Admission::Probe);
        }
        assert_eq!(
            b.admit(later),
            Admission::Rejected,
            "{HALF_OPEN_PROBES} probes in flight"
        );
        b.on_success(&s);
        assert_eq!(b.admit(later), Admission::Probe);
        b.on_success(&s);
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.admit(later), Admission::Allowed);
    }

    #[test]
    fn failures_the_request_caused_never_open_it_and_only_refused_connections_mark_it_dead() {
        let s = settings();
        let now = Instant::now();
        let mut b = Breaker::new(5);
        for _ in 0..100 {
            assert!(!b.on_failure(FailureClass::Reply, &s, now));
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        b.on_failure(FailureClass::Timeout, &s, now);
        b.on_failure(FailureClass::Timeout, &s, now);
        assert_eq!(b.state(now), BreakerState::Open);
        assert!(!b.known_dead(now), "slow is not dead");
        let mut dead = Breaker::new(6);
        dead.on_failure(FailureClass::Connect, &s, now);
        dead.on_failure(FailureClass::Connect, &s, now);
        assert!(dead.known_dead(now));
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
