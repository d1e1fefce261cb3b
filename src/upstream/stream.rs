//! The rest of a large answer still on its way from the provider ([`BodyTail`]): what an exchange hands over instead
//! of a whole body when the caller asked for streaming and the provider announced a `Content-Length` of at least the
//! threshold (not gzip, a 2xx status). The caller judges the first bytes (the envelope head); then either the rest is
//! read piece by piece ([`BodyTail::next`]), each piece verified by a [`TailScanner`] before it is handed out (the
//! reply object must end exactly at the end of the body: a second object or any other trailing data is an error
//! before its bytes leave), or it is read whole ([`BodyTail::collect`]) and judged as any buffered answer. Memory per
//! streamed answer: the head's buffer and two pieces, charged to the worker's budget; every read must bring bytes
//! within `upstream.request_timeout_ms` (a stalled provider fails the answer; a slow client only slows it, its writes
//! being bounded by the edge's send timeout). A connection read to its end is returned to the pool.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::budget::{Charge, reserve};
use super::conn::Conn;
use super::error::{FailureKind, UpstreamError};
use super::pool::Pool;
use crate::wire::stream_reply::{TailError, TailScanner};

/// Size of one piece of a streamed answer (the edge keeps two: one being read, one being written).
pub const STREAM_PIECE: usize = 128 * 1024;

/// The unread rest of an answer being streamed (boxed: it travels through the pipeline's results by value).
pub struct BodyTail(Box<TailState>);

impl std::ops::Deref for BodyTail {
    type Target = TailState;
    fn deref(&self) -> &TailState {
        &self.0
    }
}

impl std::ops::DerefMut for BodyTail {
    fn deref_mut(&mut self) -> &mut TailState {
        &mut self.0
    }
}

/// A [`BodyTail`]'s state: the connection, what is left to read, and the scanner verifying it.
pub struct TailState {
    conn: Option<Conn>,
    pool: Rc<RefCell<Pool>>,
    pid: usize,
    /// Body bytes announced and not read yet.
    remaining: usize,
    reusable: bool,
    charge: Charge,
    started: Instant,
    /// Each read must bring bytes within this (nginx's `proxy_read_timeout`): a slow client slows the answer down
    /// without failing it, a stalled provider fails it.
    stall: Duration,
    scanner: TailScanner,
}

impl std::fmt::Debug for BodyTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyTail")
            .field("pid", &self.pid)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl BodyTail {
    pub(super) fn new(
        conn: Conn,
        pool: Rc<RefCell<Pool>>,
        pid: usize,
        remaining: usize,
        reusable: bool,
        charge: Charge,
        timeout: Duration,
    ) -> Self {
        BodyTail(Box::new(TailState {
            conn: Some(conn),
            pool,
            pid,
            remaining,
            reusable,
            charge,
            started: Instant::now(),
            stall: timeout,
            scanner: TailScanner::new(),
        }))
    }

    /// Reads the rest into `body` (the bytes that came with the head), charged to the budget like any buffered
    /// answer: for answers that turned out not to stream (an error, another shape).
    pub async fn collect(self, body: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
        (*self.0).collect(body).await
    }
}

impl TailState {
    /// The provider sending this answer.
    pub fn pid(&self) -> usize {
        self.pid
    }

    /// Time since the answer started streaming.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Body bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Scans the part of the `result` value that arrived with the head (from the value's first byte on).
    pub fn start(&mut self, value: &[u8]) -> Result<(), TailError> {
        self.scanner.feed(value)?;
        if self.remaining == 0 {
            self.scanner.finish()?;
        }
        Ok(())
    }

    /// Reads the next piece into `buf` (its previous content is dropped), verified; `Ok(false)` once the body ended
    /// (and was verified to be exactly one reply object).
    pub async fn next(&mut self, mut buf: Vec<u8>) -> (Result<bool, UpstreamError>, Vec<u8>) {
        buf.clear();
        if self.remaining == 0 {
            return (Ok(false), buf);
        }
        let Some(conn) = self.conn.as_mut() else {
            return (
                Err(failed(FailureKind::Reset, "answer already failed")),
                buf,
            );
        };
        if buf.capacity() < STREAM_PIECE {
            buf.reserve_exact(STREAM_PIECE);
        }
        let read = monoio::time::timeout(self.stall, conn.stream.read_more(buf, 0)).await;
        let (res, mut b) = match read {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                return (
                    Err(failed(FailureKind::Timeout, "answer stalled mid-body")),
                    Vec::new(),
                );
            }
        };
        match res {
            Ok(0) => {
                self.conn = None;
                return (
                    Err(failed(FailureKind::Reset, "connection closed mid-body")),
                    b,
                );
            }
            Err(e) => {
                self.conn = None;
                return (
                    Err(failed(FailureKind::Reset, &format!("receive failed: {e}"))),
                    b,
                );
            }
            Ok(_) => {}
        }
        if b.len() > self.remaining {
            b.truncate(self.remaining);
            self.reusable = false;
        }
        self.remaining -= b.len();
        let checked = self.scanner.feed(&b).and_then(|()| {
            if self.remaining == 0 {
                self.scanner.finish()
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            self.conn = None;
            return (Err(failed(FailureKind::Protocol, &e.to_string())), b);
        }
        if self.remaining == 0 {
            self.give_back();
        }
        (Ok(true), b)
    }

    async fn collect(mut self, mut body: Vec<u8>) -> Result<Vec<u8>, UpstreamError> {
        let Some(mut conn) = self.conn.take() else {
            return Err(failed(FailureKind::Reset, "answer already failed"));
        };
        let total = body.len() + self.remaining;
        while self.remaining > 0 {
            let want = self.remaining.min(STREAM_PIECE);
            reserve(&mut body, want, total, &mut self.charge, 0).map_err(|o| {
                failed(
                    FailureKind::Budget,
                    &format!(
                        "answers being received from providers exceed this worker's buffer budget ({} bytes)",
                        o.limit
                    ),
                )
            })?;
            let before = body.len();
            let (res, b) = monoio::time::timeout(self.stall, conn.stream.read_more(body, 0))
                .await
                .map_err(|_| failed(FailureKind::Timeout, "answer stalled mid-body"))?;
            body = b;
            match res {
                Ok(0) => return Err(failed(FailureKind::Reset, "connection closed mid-body")),
                Err(e) => {
                    return Err(failed(FailureKind::Reset, &format!("receive failed: {e}")));
                }
                Ok(_) => {}
            }
            let got = body.len() - before;
            if got > self.remaining {
                body.truncate(before + self.remaining);
                self.reusable = false;
                self.remaining = 0;
            } else {
                self.remaining -= got;
            }
        }
        self.conn = Some(conn);
        self.give_back();
        Ok(body)
    }

    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable {
                self.pool.borrow_mut().put(self.pid, conn);
            }
        }
    }
}

fn failed(kind: FailureKind, message: &str) -> UpstreamError {
    UpstreamError::new(kind, message.to_string(), true)
}
