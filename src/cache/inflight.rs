//! In-flight multiplexing on one core: the first read of a key leads (it makes the upstream call), identical reads
//! arriving while it is in flight follow (they wait for the leader's outcome and each answer with their own id).
//! A leader that goes away without an outcome (its client left, its task was dropped) releases its followers,
//! which then make the call themselves: nobody waits on a call that no longer exists. A leader may hand its answer
//! to only some followers (each follower's reply is a copy of it): the others are released the same way. Per core, no locks: one
//! `RefCell` map of keys to the followers' one-shot channels.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::oneshot;
use rustc_hash::FxHashMap;

use crate::cache::layer::Answer;
use crate::error::RpcError;

/// The outcome a leader shares.
pub type Outcome = Result<Answer, RpcError>;

/// The followers of one call in flight.
type Followers = Vec<oneshot::Sender<Outcome>>;

/// The reads in flight on one worker, by key.
#[derive(Default)]
pub struct InFlight {
    calls: RefCell<FxHashMap<Rc<[u8]>, Followers>>,
}

/// What joining a key made of this call.
pub enum Join {
    /// Make the call, then [`Lead::finish`].
    Lead(Lead),
    /// Wait for the leader; `Err(Canceled)` when it went away (make the call then).
    Follow(oneshot::Receiver<Outcome>),
}

/// The leader's duty: hand its outcome to the followers. Dropped unfinished, it releases them.
pub struct Lead {
    table: Rc<InFlight>,
    key: Rc<[u8]>,
}

impl InFlight {
    /// Joins the call for `key`: leads it when none is in flight, follows it otherwise.
    pub fn join(self: &Rc<Self>, key: &[u8]) -> Join {
        let mut calls = self.calls.borrow_mut();
        if let Some(waiters) = calls.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Join::Follow(rx);
        }
        let key: Rc<[u8]> = Rc::from(key);
        calls.insert(key.clone(), Vec::new());
        Join::Lead(Lead {
            table: self.clone(),
            key,
        })
    }

    /// Keys in flight (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.calls.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lead {
    /// Hands `outcome` to the first `copies` followers (the others are released to make the call themselves);
    /// returns how many got it.
    pub fn finish(self, outcome: &Outcome, copies: usize) -> usize {
        let waiters = self
            .table
            .calls
            .borrow_mut()
            .remove(&self.key)
            .unwrap_or_default();
        let n = waiters.len().min(copies);
        for w in waiters.into_iter().take(n) {
            let _ = w.send(outcome.clone());
        }
        n
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        // Unfinished: dropping the senders tells the followers the call is gone.
        self.table.calls.borrow_mut().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            body: Rc::from(&b"{\"id\":1,\"result\":\"0x1\"}"[..]),
            id: 6..7,
        }
    }

    #[test]
    fn followers_get_the_leaders_outcome_and_the_key_is_released() {
        let table = Rc::new(InFlight::default());
        let Join::Lead(lead) = table.join(b"k") else {
            panic!("first call leads")
        };
        let mut followers = Vec::new();
        for _ in 0..3 {
            match table.join(b"k") {
                Join::Follow(rx) => followers.push(rx),
                Join::Lead(_) => panic!("a call is in flight"),
            }
        }
        assert!(matches!(table.join(b"other"), Join::Lead(_)));
        assert_eq!(lead.finish(&Ok(answer()), 2), 2);
        assert!(table.is_empty());
        for mut rx in followers.drain(..2) {
            assert_eq!(rx.try_recv().unwrap().unwrap().unwrap(), answer());
        }
        assert!(
            followers[0].try_recv().is_err(),
            "past the copies: released"
        );
    }

    #[test]
    fn a_leader_dropped_unfinished_releases_its_followers() {
        let table = Rc::new(InFlight::default());
        let Join::Lead(lead) = table.join(b"k") else {
            panic!("first call leads")
        };
        let Join::Follow(mut rx) = table.join(b"k") else {
            panic!("follows")
        };
        drop(lead);
        assert!(rx.try_recv().is_err(), "canceled");
        assert!(table.is_empty());
        assert!(matches!(table.join(b"k"), Join::Lead(_)));
    }
}
