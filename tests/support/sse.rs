//! A raw Server-Sent Events reader for the event streams (`/api/events/:profile`, `/dashboard/api/events/:profile`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Conn;
use super::http::BufStream;

/// An open SSE stream.
pub struct EventStream {
    io: BufStream,
}

impl EventStream {
    /// Opens `GET /api/events/:profile` and waits for its `: subscribed` comment.
    pub fn open(addr: SocketAddr, profile: &str) -> EventStream {
        Self::open_path(addr, &format!("/api/events/{profile}"), &[])
    }

    /// Opens `GET path` with extra headers (a 200 event stream expected) and waits for its `: subscribed` comment.
    pub fn open_path(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut conn = Conn::connect(addr);
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        conn.send(req.as_bytes());
        let mut io = conn.io;
        let head = io.read_head(16 * 1024).unwrap().expect("a response head");
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        let mut s = EventStream { io };
        // The first block is the `: subscribed` comment, sent once the subscription is registered.
        let first = s
            .next_block(Duration::from_secs(5))
            .expect("subscribed comment");
        assert!(first.starts_with(": subscribed"), "{first}");
        s
    }

    /// The next `\n\n`-terminated block, or None at the deadline.
    pub fn next_block(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = super::http::find(self.io.buffered(), b"\n\n") {
                let block = String::from_utf8_lossy(&self.io.buffered()[..i]).to_string();
                let _ = self.io.read_exact_vec(i + 2);
                return Some(block);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.io
                .stream
                .set_read_timeout(Some(deadline - now))
                .unwrap();
            match self.io.fill() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next data event (comments skipped).
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let block = self.next_block(deadline.saturating_duration_since(Instant::now()))?;
            if let Some(data) = block.strip_prefix("data: ") {
                return Some(serde_json::from_str(data).expect("event JSON"));
            }
        }
    }
}
