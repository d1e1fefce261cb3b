//! A client WebSocket connection as subscriptions see it ([`ClientConn`]: where its frames go, under its own
//! queued-bytes cap) and the worker's share of the process-wide queued-bytes budget ([`WsBudget`]).

use std::cell::Cell;
use std::rc::Rc;

use futures_channel::mpsc;

use crate::wire::ws_frame as frame;

/// The bytes queued to every WebSocket client of one worker, against this worker's share of the process-wide budget
/// (`websocket.max_total_queued_bytes` split across workers: no shared counter on the hot path). Past the budget, a
/// client whose queue is above the mean is cut as too slow; faster clients keep receiving.
#[derive(Debug, Default)]
pub struct WsBudget {
    limit: usize,
    queued: Cell<usize>,
    clients: Cell<usize>,
}

impl WsBudget {
    pub fn new(limit: usize) -> Self {
        WsBudget {
            limit,
            ..Default::default()
        }
    }

    /// Bytes queued to this worker's clients now.
    pub fn queued(&self) -> usize {
        self.queued.get()
    }

    pub fn client_opened(&self) {
        self.clients.set(self.clients.get() + 1);
    }

    /// A client closed with `unsent` bytes still queued (they will never be written).
    pub fn client_closed(&self, unsent: usize) {
        self.clients.set(self.clients.get().saturating_sub(1));
        self.written(unsent);
    }

    /// `n` queued bytes reached the socket (or were dropped).
    pub fn written(&self, n: usize) {
        self.queued.set(self.queued.get().saturating_sub(n));
    }
}

/// A client WebSocket connection as subscriptions see it: where to send its frames.
pub struct ClientConn {
    pub id: u64,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued but not yet written (shared with the connection's writer).
    pub queued: Rc<Cell<usize>>,
    max_queued: usize,
    budget: Rc<WsBudget>,
    /// Set when the client is too slow and must be disconnected.
    pub overflowed: Cell<bool>,
    /// Fired when the session ends: the connection's request tasks stop with it.
    pub closed: Rc<crate::shard::sync::LocalNotify>,
}

impl ClientConn {
    pub fn new(
        id: u64,
        out: mpsc::UnboundedSender<Vec<u8>>,
        queued: Rc<Cell<usize>>,
        max_queued: usize,
        budget: Rc<WsBudget>,
    ) -> Self {
        ClientConn {
            id,
            out,
            queued,
            max_queued,
            budget,
            overflowed: Cell::new(false),
            closed: Rc::new(crate::shard::sync::LocalNotify::default()),
        }
    }

    /// Whether `len` more bytes may be queued; cuts the connection as too slow when not. Every frame counts, control
    /// frames included.
    fn admit(&self, len: usize) -> bool {
        if self.overflowed.get() {
            return false;
        }
        let mine = self.queued.get() + len;
        let over_own_cap = mine > self.max_queued;
        let budget = &self.budget;
        let over_budget = budget.queued.get() + len > budget.limit
            && mine >= budget.queued.get() / budget.clients.get().max(1);
        if over_own_cap || over_budget {
            self.overflowed.set(true);
            self.out.close_channel();
            return false;
        }
        true
    }

    fn enqueue(&self, framed: Vec<u8>) -> bool {
        let len = framed.len();
        if !self.admit(len) {
            return false;
        }
        self.queued.set(self.queued.get() + len);
        self.budget.queued.set(self.budget.queued.get() + len);
        if self.out.unbounded_send(framed).is_ok() {
            true
        } else {
            self.queued.set(self.queued.get() - len);
            self.budget.written(len);
            false
        }
    }

    /// Queues one text frame; false when the connection is gone or too far behind.
    pub fn send_text(&self, payload: &[u8]) -> bool {
        let mut framed = Vec::with_capacity(payload.len() + 10);
        frame::encode(&mut framed, frame::OP_TEXT, payload, None);
        self.enqueue(framed)
    }

    /// Queues a raw frame (control frames), under the same bounds as data.
    pub fn send_frame(&self, framed: Vec<u8>) -> bool {
        self.enqueue(framed)
    }

    pub fn close_output(&self) {
        self.out.close_channel();
    }
}
