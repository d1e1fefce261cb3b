//! The shared cache layer: Redis behind the embedded store, so that another Lasso node reads what this one fetched.
//! Each worker has its own small pool of connections (no locks; at most `redis_max_connections`, a command finding
//! none free skips Redis) and its own circuit: `redis_circuit_failures` consecutive failures (refused connection,
//! error reply, timeout) skip Redis for `redis_circuit_backoff_ms`, then the next command tries again. Every command
//! is bounded in time (`redis_timeout_ms` for reads on the request path, connect included; `redis_write_timeout_ms`
//! for writes, which run in the background) and in bytes (a value larger than `cache.max_entry_bytes` is refused
//! unread). A failure never reaches a client: the read goes on to the providers (fail-open), and is counted.
//!
//! Only answers about finalized blocks are written, with `SET key value PX finalized_ttl`: they never change, so a
//! reorg never has to reach Redis (purges stay node-local, in the embedded store). Keys are
//! `lasso:v1:<chain id>:<method>\0<canonical params>`; values are `LC1 | height u64 LE | id start u32 LE | id end u32
//! LE | answer`.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::layer::Answer;
use super::resp::{self, Reply};
use crate::config::cache::RedisSettings;

/// What this worker's Redis layer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisCounters {
    pub hits: u64,
    pub misses: u64,
    /// Answers written.
    pub stored: u64,
    /// Failed commands (connect, error reply, timeout, malformed or oversized reply).
    pub errors: u64,
    /// Commands not sent: the circuit was open or every connection busy.
    pub skipped: u64,
    /// Times the circuit opened.
    pub circuit_opened: u64,
    /// 1 while the circuit is open.
    pub circuit_open: u64,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One worker's Redis layer.
pub struct Redis {
    settings: RedisSettings,
    max_value: usize,
    idle: RefCell<Vec<Conn>>,
    /// Connections open (idle or in use).
    open: Cell<usize>,
    failures: Cell<u32>,
    open_until: Cell<Option<Instant>>,
    counters: Cell<RedisCounters>,
    /// `addr` resolved (a host name is resolved on the first connection and again after the circuit opened: that
    /// lookup blocks the worker, an IP address does not).
    resolved: Cell<Option<SocketAddr>>,
}

/// A connection taken from the pool. It goes back only when [`Taken::reuse`] says a command completed on it: a
/// command cut short (a timeout, or the request's task dropped mid-command when its client went away) leaves the
/// connection in an unknown state (a reply may still be on its way), so it is closed.
struct Taken<'a> {
    redis: &'a Redis,
    conn: Option<Conn>,
    reusable: bool,
}

impl Taken<'_> {
    fn reuse(mut self) {
        self.reusable = true;
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(conn) if self.reusable => self.redis.idle.borrow_mut().push(conn),
            _ => self.redis.open.set(self.redis.open.get() - 1),
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    Io,
    Reply,
}

impl Redis {
    /// A layer for `settings`; values above `max_value` bytes are neither written nor read.
    pub fn new(settings: RedisSettings, max_value: usize) -> Rc<Self> {
        Rc::new(Redis {
            settings,
            max_value: max_value + 32,
            idle: RefCell::new(Vec::new()),
            open: Cell::new(0),
            failures: Cell::new(0),
            open_until: Cell::new(None),
            counters: Cell::new(RedisCounters::default()),
            resolved: Cell::new(None),
        })
    }

    pub fn counters(&self) -> RedisCounters {
        let mut c = self.counters.get();
        c.circuit_open = u64::from(self.open_until.get().is_some_and(|t| Instant::now() < t));
        c
    }

    fn count(&self, f: impl FnOnce(&mut RedisCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// The answer kept under `key` with its height, or `None` (missing, failed, skipped).
    pub async fn get(&self, key: &[u8]) -> Option<(Answer, u64)> {
        let reply = self.command(&[b"GET", key], self.settings.timeout).await?;
        match reply {
            Reply::Bulk(Some(value)) => match decode(&value) {
                Some(found) => {
                    self.count(|c| c.hits += 1);
                    Some(found)
                }
                None => {
                    self.count(|c| c.misses += 1);
                    None
                }
            },
            _ => {
                self.count(|c| c.misses += 1);
                None
            }
        }
    }

    /// Keeps `answer` (about a block at `height`) under `key` for `ttl`.
    pub async fn set(&self, key: &[u8], answer: &Answer, height: u64, ttl: Duration) {
        let value = encode(answer, height);
        if value.len() > self.max_value || ttl.is_zero() {
            return;
        }
        let px = ttl.as_millis().max(1).to_string();
        let reply = self
            .command(
                &[b"SET", key, &value, b"PX", px.as_bytes()],
                self.settings.write_timeout,
            )
            .await;
        if reply.is_some() {
            self.count(|c| c.stored += 1);
        }
    }

    /// Adds `by` to the counter `key` and returns its new value (`None`: failed or skipped, counted); a counter
    /// created by this call expires after `ttl`. Used by `access::shared` for rate limits shared across nodes.
    pub async fn incr_window(&self, key: &[u8], by: i64, ttl: Duration) -> Option<i64> {
        let by_text = by.to_string();
        let reply = self
            .command(&[b"INCRBY", key, by_text.as_bytes()], self.settings.timeout)
            .await?;
        let Reply::Int(total) = reply else {
            self.fail();
            return None;
        };
        if total == by {
            let px = ttl.as_millis().max(1).to_string();
            let _ = self
                .command(&[b"PEXPIRE", key, px.as_bytes()], self.settings.timeout)
                .await;
        }
        Some(total)
    }

    /// Sends one command within `timeout` (connect included), unless the circuit is open or no connection is free.
    /// An error reply counts as a failure.
    async fn command(&self, args: &[&[u8]], timeout: Duration) -> Option<Reply> {
        let now = Instant::now();
        if let Some(until) = self.open_until.get() {
            if now < until {
                self.count(|c| c.skipped += 1);
                return None;
            }
            self.open_until.set(None);
        }
        let pooled = self.idle.borrow_mut().pop();
        let mut taken = match pooled {
            Some(conn) => Taken {
                redis: self,
                conn: Some(conn),
                reusable: false,
            },
            None if self.open.get() < self.settings.max_connections => {
                self.open.set(self.open.get() + 1);
                Taken {
                    redis: self,
                    conn: None,
                    reusable: false,
                }
            }
            None => {
                self.count(|c| c.skipped += 1);
                return None;
            }
        };
        let result = monoio::time::timeout(timeout, async {
            if taken.conn.is_none() {
                taken.conn = Some(self.connect().await?);
            }
            let conn = taken.conn.as_mut().expect("connected");
            conn.call(args, self.max_value).await
        })
        .await;
        match result {
            Ok(Ok(Reply::Error(_))) | Ok(Err(_)) | Err(_) => {
                // The connection's state is unknown: closed as `taken` drops.
                drop(taken);
                self.fail();
                None
            }
            Ok(Ok(reply)) => {
                self.failures.set(0);
                taken.reuse();
                Some(reply)
            }
        }
    }

    fn fail(&self) {
        self.count(|c| c.errors += 1);
        let failures = self.failures.get() + 1;
        if failures >= self.settings.circuit_failures {
            self.failures.set(0);
            self.open_until
                .set(Some(Instant::now() + self.settings.circuit_backoff));
            self.count(|c| c.circuit_opened += 1);
            self.resolved.set(None);
            tracing::warn!(
                addr = %self.settings.addr,
                backoff_ms = self.settings.circuit_backoff.as_millis() as u64,
                "Redis failing: skipped for a while"
            );
        } else {
            self.failures.set(failures);
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let addr = match self.resolved.get() {
            Some(a) => a,
            None => {
                let a = self
                    .settings
                    .addr
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut all| all.next())
                    .ok_or(Failure::Io)?;
                self.resolved.set(Some(a));
                a
            }
        };
        let stream = TcpStream::connect(addr).await.map_err(|_| Failure::Io)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        if let Some(password) = &self.settings.password {
            ok(conn.call(&[b"AUTH", password.as_bytes()], 64).await?)?;
        }
        if self.settings.db != 0 {
            let db = self.settings.db.to_string();
            ok(conn.call(&[b"SELECT", db.as_bytes()], 64).await?)?;
        }
        Ok(conn)
    }
}

fn ok(reply: Reply) -> Result<(), Failure> {
    match reply {
        Reply::Simple(_) => Ok(()),
        _ => Err(Failure::Reply),
    }
}

impl Conn {
    async fn call(&mut self, args: &[&[u8]], max_bulk: usize) -> Result<Reply, Failure> {
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        resp::encode(args, &mut out);
        let (res, _) = self.stream.write_all(out).await;
        res.map_err(|_| Failure::Io)?;
        loop {
            match resp::parse(&self.buf, max_bulk) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(_) => return Err(Failure::Reply),
            }
            let chunk = Vec::with_capacity(16 * 1024);
            let (res, chunk) = self.stream.read(chunk).await;
            match res {
                Ok(0) | Err(_) => return Err(Failure::Io),
                Ok(_) => self.buf.extend_from_slice(&chunk),
            }
        }
    }
}

const MAGIC: &[u8; 3] = b"LC1";

/// The Redis key of an embedded-cache `key` (`chain index LE | method | 0 | params`) on the chain `chain_id`.
pub fn key(chain_id: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 32);
    out.extend_from_slice(b"lasso:v1:");
    out.extend_from_slice(chain_id.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&key[4.min(key.len())..]);
    out
}

fn encode(answer: &Answer, height: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(answer.len() + 19);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&(answer.id.start as u32).to_le_bytes());
    out.extend_from_slice(&(answer.id.end as u32).to_le_bytes());
    out.extend_from_slice(&answer.body);
    out
}

/// A value written by [`encode`], checked: its id range within a JSON object.
fn decode(value: &[u8]) -> Option<(Answer, u64)> {
    let rest = value.strip_prefix(MAGIC)?;
    if rest.len() < 16 {
        return None;
    }
    let height = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let start = u32::from_le_bytes(rest[8..12].try_into().ok()?) as usize;
    let end = u32::from_le_bytes(rest[12..16].try_into().ok()?) as usize;
    let body = &rest[16..];
    if start > end || end > body.len() || body.first() != Some(&b'{') || body.last() != Some(&b'}')
    {
        return None;
    }
    Some((
        Answer {
            body: Rc::from(body),
            id: start..end,
        },
        height,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_are_refused() {
        let answer = Answer {
            body: Rc::from(&br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#[..]),
            id: 22..23,
        };
        let value = encode(&answer, 7);
        assert_eq!(decode(&value), Some((answer, 7)));
        assert_eq!(decode(b"LC1short"), None);
        let mut bad = value.clone();
        bad[11] = 200; // id start past the body
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn keys_name_the_chain_not_the_index() {
        let k = crate::cache::key::key(3, "eth_getBlockByNumber", None);
        assert_eq!(key(1, &k), b"lasso:v1:1:eth_getBlockByNumber\0".to_vec());
    }
}
