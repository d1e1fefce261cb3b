//! The floor forwarder: the least a JSON-RPC proxy on Lasso's stack can do per request, run by `lasso-bench` as the
//! `floor` target beside Lasso, nginx and the mock, so every report shows what Lasso's features cost against the
//! runtime's own limit. One pinned monoio (io_uring) event loop per worker with its own SO_REUSEPORT listener and its
//! own keep-alive pool to the upstream; HTTP/1.1 heads parsed with httparse; each request body is forwarded as it is
//! to the first upstream and the answer's body returned as it is. No JSON handling, no routing, no retries, no
//! limits beyond the body bound: it is a yardstick, not a proxy to deploy.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::http::{self, BodyKind};

/// Largest request or answer body the floor carries (the large-answer steps use ~1 MB).
const MAX_BODY: usize = 64 << 20;
/// Idle client connections are closed after this long.
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// Pooled upstream connections kept per worker.
const POOL_MAX: usize = 1024;

/// What the floor forwards to.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Path of every forwarded request (the upstream URL's path).
    pub path: String,
}

impl Upstream {
    /// Parses `http://host:port/path` (host must be an IP address).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("floor upstream {url:?}: only http:// URLs"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = host
            .parse()
            .map_err(|e| format!("floor upstream {url:?}: {e} (an IP:port is needed)"))?;
        Ok(Upstream {
            addr,
            path: path.to_string(),
        })
    }
}

/// Starts `workers` event loops, each on its own thread with its own listener on `listen`'s port, and returns the
/// address once every one listens. The threads run for the rest of the process.
pub fn start(listen: SocketAddr, upstream: Upstream, workers: usize) -> Result<SocketAddr, String> {
    let first = crate::sys::reuseport_listener(listen, 4096)
        .map_err(|e| format!("floor: bind {listen}: {e}"))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(
            crate::sys::reuseport_listener(addr, 4096)
                .map_err(|e| format!("floor: bind {addr}: {e}"))?,
        );
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let n = listeners.len();
    for (i, listener) in listeners.into_iter().enumerate() {
        let upstream = upstream.clone();
        let ready = ready_tx.clone();
        std::thread::Builder::new()
            .name(format!("floor-{i}"))
            .spawn(move || run_worker(listener, upstream, ready))
            .map_err(|e| e.to_string())?;
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx
            .recv()
            .map_err(|_| "floor: a worker died before listening".to_string())?
            .map_err(|e| format!("floor: {e}"))?;
    }
    Ok(addr)
}

/// [`start`], then prints `floor listening address=IP:PORT workers=N` and serves until the process is stopped.
pub fn run(listen: SocketAddr, upstream: Upstream, workers: usize) -> Result<(), String> {
    let addr = start(listen, upstream, workers)?;
    println!("floor listening address={addr} workers={}", workers.max(1));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn run_worker(
    listener: std::net::TcpListener,
    upstream: Upstream,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    // The same ring set-up as Lasso's workers (src/app/thread.rs): one thread issues (`SINGLE_ISSUER`) and completion
    // work runs when it waits (`DEFER_TASKRUN`, `COOP_TASKRUN`), so the floor is the runtime's limit as Lasso uses
    // it. `LASSO_FLOOR_RING=plain` (or a kernel without these flags) gives the default ring.
    let plain = std::env::var("LASSO_FLOOR_RING").is_ok_and(|v| v == "plain");
    if !plain {
        let mut flags = io_uring::IoUring::builder();
        flags
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun();
        let tuned = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(flags)
            .enable_timer()
            .with_entries(4096)
            .build();
        if let Ok(mut rt) = tuned {
            rt.block_on(serve_listener(listener, upstream, ready));
            return;
        }
    }
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .build();
    match rt {
        Ok(mut rt) => rt.block_on(serve_listener(listener, upstream, ready)),
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

async fn serve_listener(
    listener: std::net::TcpListener,
    upstream: Upstream,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let pool = Rc::new(Pool {
        upstream,
        idle: RefCell::new(Vec::new()),
    });
    let _ = ready.send(Ok(()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(serve(pool.clone(), stream));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// One worker's keep-alive connections to the upstream.
struct Pool {
    upstream: Upstream,
    idle: RefCell<Vec<TcpStream>>,
}

impl Pool {
    async fn connect(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect(self.upstream.addr).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    fn put(&self, s: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < POOL_MAX {
            idle.push(s);
        }
    }
}

/// One client connection: requests in order, each forwarded and answered before the next is read.
async fn serve(pool: Rc<Pool>, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    let mut up_buf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    loop {
        let head =
            match monoio::time::timeout(CLIENT_IDLE, http::read_request_head(&mut client, buf))
                .await
            {
                Ok((Ok(Some(h)), b)) => {
                    buf = b;
                    h
                }
                _ => return,
            };
        let (body, b) =
            http::read_body(&mut client, buf, head.head_len, head.body_kind(), MAX_BODY).await;
        buf = b;
        let Ok(body) = body else { return };
        let (answer, ub) = forward(&pool, body.bytes(&buf), up_buf).await;
        up_buf = ub;
        out.clear();
        match answer {
            Ok((status, range)) => {
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        http::reason(status),
                        range.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&up_buf[range]);
            }
            Err(_) => out.extend_from_slice(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
            ),
        }
        http::consume(&mut buf, body.consumed);
        let (res, o) = client.write_all(out).await;
        out = o;
        if res.is_err() || !head.keep_alive {
            return;
        }
    }
}

/// Sends `body` upstream on a pooled connection (a fresh one when the pooled one turns out closed) and reads the
/// answer into `buf`: the status and the body's range in `buf`.
async fn forward(
    pool: &Pool,
    body: &[u8],
    buf: Vec<u8>,
) -> (io::Result<(u16, std::ops::Range<usize>)>, Vec<u8>) {
    let mut request = Vec::with_capacity(body.len() + 128);
    request.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            pool.upstream.path,
            pool.upstream.addr,
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    let mut buf = buf;
    // A pooled connection the upstream closed fails at once: retry once on a new one.
    for pooled in [true, false] {
        let conn = if pooled {
            pool.idle.borrow_mut().pop()
        } else {
            None
        };
        let fresh = conn.is_none();
        let mut conn = match conn {
            Some(c) => c,
            None => match pool.connect().await {
                Ok(c) => c,
                Err(e) => return (Err(e), buf),
            },
        };
        buf.clear();
        let (res, r) = conn.write_all(request).await;
        request = r;
        if let Err(e) = res {
            if fresh {
                return (Err(e), buf);
            }
            continue;
        }
        let (head, b) = http::read_response_head(&mut conn, buf).await;
        buf = b;
        let head = match head {
            Ok(h) => h,
            Err(e) if fresh => return (Err(e), buf),
            Err(_) => continue,
        };
        let kind = head.body_kind();
        let (body, b) = http::read_body(&mut conn, buf, head.head_len, kind, MAX_BODY).await;
        buf = b;
        let body = match body {
            Ok(body) => body,
            Err(e) => return (Err(e), buf),
        };
        let range = match body.decoded {
            Some(decoded) => {
                buf = decoded;
                0..buf.len()
            }
            None => body.range,
        };
        if !head.close && kind != BodyKind::UntilClose {
            pool.put(conn);
        }
        return (Ok((head.status, range)), buf);
    }
    (Err(io::ErrorKind::ConnectionReset.into()), buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_urls() {
        let u = Upstream::parse("http://127.0.0.1:8545/rpc").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8545".parse().unwrap());
        assert_eq!(u.path, "/rpc");
        assert_eq!(Upstream::parse("http://127.0.0.1:1").unwrap().path, "/");
        assert!(Upstream::parse("https://127.0.0.1:1/").is_err());
        assert!(Upstream::parse("http://localhost:1/").is_err());
    }
}
