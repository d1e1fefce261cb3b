//! Single-thread synchronisation for a worker: a broadcast notification ([`LocalNotify`]) used to wake idle
//! connections at shutdown and the drain waiter when the last connection closes. No atomics: it never crosses threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter each time [`notify_all`](LocalNotify::notify_all) is called. A waiter that is dropped before
/// the notification takes its waker out again: nothing is kept for a connection that closed (the waker holds the
/// whole task of the connection that waited).
#[derive(Default)]
pub struct LocalNotify {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    waiters: RefCell<rustc_hash::FxHashMap<u64, Waker>>,
}

impl LocalNotify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// A future that completes at the next `notify_all` after its creation.
    pub fn notified(self: &Rc<Self>) -> Notified {
        Notified {
            notify: self.clone(),
            generation: self.generation.get(),
            key: None,
        }
    }

    /// Wakers currently registered (for tests and leak checks).
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

pub struct Notified {
    notify: Rc<LocalNotify>,
    generation: u64,
    /// This waiter's slot in `waiters` once it was polled.
    key: Option<u64>,
}

impl Future for Notified {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            if let Some(key) = self.key.take() {
                self.notify.waiters.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let key = self.notify.next_key.get();
                self.notify.next_key.set(key + 1);
                self.key = Some(key);
                key
            }
        };
        let mut waiters = self.notify.waiters.borrow_mut();
        match waiters.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => *w = cx.waker().clone(),
            None => {
                waiters.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.notify.waiters.borrow_mut().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let notify = Rc::new(LocalNotify::default());
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut n = Box::pin(notify.notified());
            assert!(n.as_mut().poll(&mut cx).is_pending());
            assert!(
                n.as_mut().poll(&mut cx).is_pending(),
                "a second poll registers once"
            );
            assert_eq!(notify.waiting(), 1);
        }
        assert_eq!(
            notify.waiting(),
            0,
            "every dropped waiter took its waker out"
        );
    }

    #[test]
    fn a_notification_wakes_every_waiter_once() {
        let notify = Rc::new(LocalNotify::default());
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(notify.notified());
        let mut b = Box::pin(notify.notified());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        notify.notify_all();
        assert_eq!(notify.waiting(), 0);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        let mut later = Box::pin(notify.notified());
        assert!(
            later.as_mut().poll(&mut cx).is_pending(),
            "a waiter made after the notification waits"
        );
    }
}
