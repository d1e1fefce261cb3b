//! The worker's budget for provider answers being received: `upstream.max_buffered_response_bytes` split evenly
//! across workers, so no lock or shared counter sits on the request path. Every exchange holds a [`Charge`] for the
//! buffers it has allocated (raw bytes, decoded body, gunzip output); buffers grow from what arrived, geometrically
//! ([`reserve`]), never from what a provider announced. A growth the budget cannot cover fails that exchange only.
//! Answers under [`SMALL_ANSWER`] may use the whole budget; larger ones leave its last eighth to them, so many large
//! answers at once never starve the small calls of other clients.

use std::cell::Cell;
use std::rc::Rc;

/// An answer buffered up to this size may use the whole budget.
pub(crate) const SMALL_ANSWER: usize = 64 * 1024;

/// One worker's budget of buffered upstream answer bytes.
#[derive(Debug)]
pub struct Budget {
    used: Cell<usize>,
    limit: usize,
}

/// A growth the worker's budget cannot cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget {
    pub(crate) limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new(Budget {
            used: Cell::new(0),
            limit,
        })
    }

    /// Bytes held by exchanges in progress.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A new, empty charge against this budget (released when dropped).
    pub(crate) fn charge(self: &Rc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// What one exchange holds of its worker's budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Rc<Budget>,
    held: usize,
}

impl Charge {
    /// Sets what this exchange holds to `bytes`; refused (nothing changes) when the budget cannot cover it.
    pub(crate) fn hold(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let budget = &self.budget;
        let others = budget.used.get() - self.held;
        let ceiling = if bytes <= SMALL_ANSWER {
            budget.limit
        } else {
            budget.limit - budget.limit / 8
        };
        if bytes > self.held && others.saturating_add(bytes) > ceiling {
            return Err(OverBudget {
                limit: budget.limit,
            });
        }
        budget.used.set(others + bytes);
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.set(self.budget.used.get() - self.held);
    }
}

/// Makes room for at least `want` more bytes in `buf`: capacity doubles (from what is already there) up to
/// `ceiling`, and the new capacity plus `beside` (other buffers of the same exchange) is charged first.
pub(crate) fn reserve(
    buf: &mut Vec<u8>,
    want: usize,
    ceiling: usize,
    charge: &mut Charge,
    beside: usize,
) -> Result<(), OverBudget> {
    let spare = buf.capacity() - buf.len();
    if spare >= want {
        return Ok(());
    }
    let needed = buf.len().saturating_add(want);
    let target = needed
        .max(buf.capacity().saturating_mul(2))
        .min(ceiling.max(needed));
    charge.hold(beside.saturating_add(target))?;
    buf.reserve_exact(target - buf.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_are_given_back() {
        let budget = Budget::new(1 << 20);
        let mut a = budget.charge();
        let mut b = budget.charge();
        a.hold(600 << 10).unwrap();
        assert_eq!(
            b.hold(400 << 10),
            Err(OverBudget { limit: 1 << 20 }),
            "large answers leave the last eighth free"
        );
        b.hold(SMALL_ANSWER).unwrap();
        assert_eq!(budget.used(), (600 << 10) + SMALL_ANSWER);
        a.hold(10).unwrap();
        assert_eq!(budget.used(), 10 + SMALL_ANSWER);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn buffers_grow_from_what_arrived_up_to_the_ceiling() {
        let budget = Budget::new(1 << 30);
        let mut charge = budget.charge();
        let mut buf = Vec::new();
        reserve(&mut buf, 16 << 10, 200_000_000, &mut charge, 0).unwrap();
        assert!(buf.capacity() < 64 << 10, "{}", buf.capacity());
        while buf.len() < 40_000 {
            reserve(&mut buf, 1, 40_000, &mut charge, 0).unwrap();
            buf.resize(buf.capacity().min(40_000), 0);
        }
        assert!(buf.capacity() >= 40_000 && buf.capacity() < 48_000);
        assert_eq!(budget.used(), 40_000);
        let tiny = Budget::new(100_000);
        let mut charge = tiny.charge();
        let mut buf = Vec::new();
        assert!(reserve(&mut buf, 200_000, usize::MAX, &mut charge, 0).is_err());
        assert_eq!(buf.capacity(), 0, "nothing is allocated past the budget");
    }
}
