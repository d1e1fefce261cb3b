//! Connections per client address, for `server.max_connections_per_ip`: one address (an IPv6 client by its /64, an
//! IPv4-mapped address as IPv4) may hold at most that many connections, so one client cannot take every slot of
//! the process cap.
//!
//! Why one table per process and not a share per worker: `SO_REUSEPORT` spreads one address's connections over the
//! workers by a hash of the source port, so a per-worker share (`cap / workers`) would refuse a client early and at
//! a different count each time. Why no lock: the table is a fixed array of `2^16` atomic counters (256 KiB, however
//! many addresses connect) indexed by two keyed hashes of the address, a count-min sketch. Admission adds one to
//! both counters and refuses when the smaller exceeds the cap; closing subtracts. An address's true count is never
//! above either counter, so a client is never admitted past its cap; another address is refused early only if both
//! its counters are shared with addresses holding as many connections, which the hard cap (the sum of all counts)
//! makes rare, and the per-process random key makes unpredictable. The table is touched at accept and close only,
//! never on the request path.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counters in the table (a power of two).
const SLOTS: usize = 1 << 16;

/// Process-wide connection counts by client address.
pub struct PeerCounts {
    slots: Box<[AtomicU32]>,
    key: std::collections::hash_map::RandomState,
}

impl Default for PeerCounts {
    fn default() -> Self {
        PeerCounts {
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            key: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// What identifies one client: an IPv4 address as itself, an IPv6 address by its /64 (one host holds a whole /64),
/// an IPv4-mapped IPv6 address as IPv4. The connection cap here and the operator plane's failed-authentication limit
/// (`ops::auth`) both count clients by this key.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

impl PeerCounts {
    fn slots_of(&self, ip: IpAddr) -> [usize; 2] {
        let key = client_address(ip);
        [0u8, 1].map(|i| (self.key.hash_one((i, key)) as usize) & (SLOTS - 1))
    }

    /// Counts a connection from `ip`; `None` when the address already holds `cap` connections (`cap` 0 = no cap).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PeerSlot> {
        if cap == 0 {
            return Some(PeerSlot { held: None });
        }
        let [a, b] = self.slots_of(ip);
        let first = self.slots[a].fetch_add(1, Ordering::Relaxed) + 1;
        let second = if b == a {
            first
        } else {
            self.slots[b].fetch_add(1, Ordering::Relaxed) + 1
        };
        let slot = PeerSlot {
            held: Some((self.clone(), a, b)),
        };
        (first.min(second) as usize <= cap).then_some(slot)
    }

    /// The smaller of `ip`'s counters: never below its number of open connections.
    pub fn count(&self, ip: IpAddr) -> usize {
        let [a, b] = self.slots_of(ip);
        self.slots[a]
            .load(Ordering::Relaxed)
            .min(self.slots[b].load(Ordering::Relaxed)) as usize
    }
}

/// One admitted connection's place in the table; given back when dropped.
pub struct PeerSlot {
    held: Option<(Arc<PeerCounts>, usize, usize)>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some((counts, a, b)) = self.held.take() {
            counts.slots[a].fetch_sub(1, Ordering::Relaxed);
            if b != a {
                counts.slots[b].fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_at_its_cap_does_not_lock_out_others() {
        let counts = Arc::new(PeerCounts::default());
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| counts.admit(one, 3).expect("under the cap"))
            .collect();
        assert!(
            counts.admit(one, 3).is_none(),
            "the 4th from one address is refused"
        );
        assert_eq!(counts.count(one), 3, "a refusal gives its count back");
        for i in 2..200u32 {
            let other = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(
                counts.admit(other, 3).is_some(),
                "{other} is not locked out"
            );
        }
        drop(held);
        assert_eq!(counts.count(one), 0);
        assert!(counts.admit(one, 3).is_some());
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_mapped_addresses_are_ipv4() {
        let counts = Arc::new(PeerCounts::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _first = counts.admit(a, 1).unwrap();
        assert!(counts.admit(b, 1).is_none(), "same /64, same client");
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let _v4 = counts.admit(v4, 1).unwrap();
        assert!(counts.admit(mapped, 1).is_none());
        assert!(counts.admit(v4, 0).is_some(), "cap 0 = no cap");
    }
}
