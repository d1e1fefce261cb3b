//! The client-facing HTTP/1.1 connection loop: reads request heads and bodies within limits and timeouts
//! (slowloris-safe), answers `Expect: 100-continue`, handles keep-alive and pipelining (responses in request order),
//! dispatches each request, streams large answers as they arrive (`send_streamed`), and closes idle connections when
//! the worker drains. Every answer is written under `server.send_timeout_ms`: a client that takes no byte of it for
//! that long is closed (nginx's `send_timeout`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::edge::dispatch::Endpoint;
use crate::error::RpcError;
use crate::shard::state::Worker;
use crate::subscriptions::hub::Hub;
use crate::upstream::stream::{BodyTail, STREAM_PIECE};
use crate::wire::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::wire::http::io::{read_more, write_all, write_all_progress};
use crate::wire::http::request::{BodyFraming, HeadError, Method, RequestHead, parse_head};
use crate::wire::http::response::{Response, write_head, write_head_with_length};

/// Initial read buffer of a connection; it grows for large requests and shrinks back when idle.
const READ_CHUNK: usize = 4 * 1024;
/// Bodies up to this size are sent in the same write as the head.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Why a connection loop stops reading.
enum Stop {
    /// Closed by the client, timed out, or drained: close quietly.
    Quiet,
    /// Answer with this error, then close.
    Reply(Response),
}

/// Answers a connection over a connection cap (the process's, or its address's) with 503 and closes it.
pub async fn refuse_overloaded(worker: &Worker, mut stream: TcpStream, why: &'static str) {
    let resp = Response::from(RpcError::Overloaded(why));
    let _ = send(worker, &mut stream, resp, false, false).await;
}

/// Serves one client connection until it closes, times out, or the worker drains.
pub async fn serve_connection(
    worker: Rc<Worker>,
    hub: Rc<Hub>,
    mut stream: TcpStream,
    keep_alive_allowed: bool,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let mut head = match read_head(&worker, &mut stream, &mut buf).await {
            Ok(head) => head,
            Err(Stop::Quiet) => return,
            Err(Stop::Reply(resp)) => {
                let _ = send(&worker, &mut stream, resp, false, false).await;
                return;
            }
        };
        let endpoint = Endpoint::of(&head);
        if endpoint.authenticates()
            || endpoint == Endpoint::Rpc && crate::access::gate::limits_addresses(&worker.config)
        {
            head.peer = stream.peer_addr().ok().map(|a| a.ip());
        }
        if endpoint.takes_connection() {
            crate::edge::dispatch::take_over(endpoint, worker, hub, stream, buf, &head).await;
            return;
        }
        if head.expect_continue
            && matches!(endpoint, Endpoint::NotFound | Endpoint::MethodNotAllowed(_))
        {
            // Refused at the head: answer without `100 Continue` and close (the unread body is never parsed).
            let resp = crate::edge::dispatch::answer(endpoint, &worker, &head, &[]).await;
            let _ = send(
                &worker,
                &mut stream,
                resp.response,
                false,
                head.method == Method::Head,
            )
            .await;
            return;
        }
        let (body, consumed) = match read_body(&worker, &mut stream, &mut buf, &head).await {
            Ok(b) => b,
            Err(Stop::Quiet) => return,
            Err(Stop::Reply(resp)) => {
                let _ = send(&worker, &mut stream, resp, false, false).await;
                return;
            }
        };
        let body_bytes: &[u8] = match &body {
            Some(decoded) => decoded,
            None => &buf[head.head_len..consumed],
        };
        let answer = crate::edge::dispatch::answer(endpoint, &worker, &head, body_bytes).await;
        buf.drain(..consumed);
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            // A large request grew the buffer: do not keep it while the connection idles.
            buf = Vec::with_capacity(READ_CHUNK);
        }
        let keep_alive = head.keep_alive && keep_alive_allowed && !worker.winding_down();
        let sent = match answer.tail {
            Some(tail) => {
                send_streamed(&worker, &mut stream, answer.response, tail, keep_alive).await
            }
            None => {
                send(
                    &worker,
                    &mut stream,
                    answer.response,
                    keep_alive,
                    head.method == Method::Head,
                )
                .await
            }
        };
        if sent.is_err() || !keep_alive {
            return;
        }
    }
}

async fn read_head(
    worker: &Worker,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<RequestHead, Stop> {
    let settings = &worker.config.server;
    let mut started = (!buf.is_empty()).then(Instant::now);
    loop {
        match parse_head(buf) {
            // A head that arrived whole in one read is held to the same limit as one still arriving.
            Ok(Some(head)) if head.head_len > settings.max_header_bytes => {
                return Err(Stop::Reply(Response::from(RpcError::HeadersTooLarge {
                    limit: settings.max_header_bytes,
                })));
            }
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(HeadError::TooManyHeaders) => {
                return Err(Stop::Reply(Response::from(RpcError::HeadersTooLarge {
                    limit: settings.max_header_bytes,
                })));
            }
            Err(HeadError::Malformed(why)) => {
                return Err(Stop::Reply(Response::from(RpcError::InvalidRequest(
                    format!("malformed HTTP request: {why}"),
                ))));
            }
        }
        if buf.len() >= settings.max_header_bytes {
            return Err(Stop::Reply(Response::from(RpcError::HeadersTooLarge {
                limit: settings.max_header_bytes,
            })));
        }
        let read = read_more(stream, std::mem::take(buf), 4096);
        let (res, b) = match started {
            None => {
                // Idle between requests: bounded by the idle timeout, and cut short by draining. A retired worker
                // (after a reload) keeps waiting: the client's next request is answered with `Connection: close`,
                // so closing never races a request in flight.
                if worker.draining.get() {
                    return Err(Stop::Quiet);
                }
                let drained = worker.drain_started.notified();
                monoio::select! {
                    r = monoio::time::timeout(settings.idle_timeout, read) => r.map_err(|_| Stop::Quiet)?,
                    _ = drained => return Err(Stop::Quiet),
                }
            }
            Some(t) => {
                let remaining = settings.header_timeout.saturating_sub(t.elapsed());
                monoio::time::timeout(remaining.max(Duration::from_millis(1)), read)
                    .await
                    .map_err(|_| Stop::Quiet)?
            }
        };
        *buf = b;
        match res {
            Ok(0) | Err(_) => return Err(Stop::Quiet),
            Ok(_) => {
                started.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Reads the body. Returns a decoded copy for chunked bodies (`None` = the body is `buf[head_len..consumed]`) and the
/// number of buffer bytes the whole request used.
async fn read_body(
    worker: &Worker,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> Result<(Option<Vec<u8>>, usize), Stop> {
    let settings = &worker.config.server;
    let limit = settings.max_body_bytes;
    let deadline = Instant::now() + settings.body_timeout;
    let too_large = || Stop::Reply(Response::from(RpcError::BodyTooLarge { limit }));
    match head.framing {
        BodyFraming::None => Ok((None, head.head_len)),
        BodyFraming::Length(n) => {
            if n > limit {
                return Err(too_large());
            }
            if wants_continue(head) && buf.len() < head.head_len + n {
                continue_100(stream).await?;
            }
            while buf.len() < head.head_len + n {
                let want = (head.head_len + n - buf.len()).clamp(4096, 1 << 20);
                fill(stream, buf, want, deadline).await?;
            }
            Ok((None, head.head_len + n))
        }
        BodyFraming::Chunked => {
            if wants_continue(head) && buf.len() == head.head_len {
                continue_100(stream).await?;
            }
            let mut decoder = ChunkedDecoder::new(limit);
            let mut body = Vec::new();
            let mut consumed = head.head_len;
            loop {
                consumed += decoder
                    .decode(&buf[consumed..], &mut body)
                    .map_err(|e| match e {
                        ChunkedError::TooLarge => too_large(),
                        ChunkedError::Malformed => Stop::Reply(Response::from(
                            RpcError::InvalidRequest("malformed chunked body".into()),
                        )),
                    })?;
                if decoder.is_done() {
                    return Ok((Some(body), consumed));
                }
                fill(stream, buf, READ_CHUNK, deadline).await?;
            }
        }
    }
}

/// `100 Continue` goes only to HTTP/1.1 clients that asked for it (HTTP/1.0 has no interim responses).
fn wants_continue(head: &RequestHead) -> bool {
    head.expect_continue && head.version == 1
}

async fn continue_100(stream: &mut TcpStream) -> Result<(), Stop> {
    let (res, _) = write_all(stream, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()).await;
    res.map_err(|_| Stop::Quiet)
}

async fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Instant,
) -> Result<(), Stop> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Stop::Quiet);
    }
    let (res, b) = monoio::time::timeout(remaining, read_more(stream, std::mem::take(buf), want))
        .await
        .map_err(|_| Stop::Quiet)?;
    *buf = b;
    match res {
        Ok(0) | Err(_) => Err(Stop::Quiet),
        Ok(_) => Ok(()),
    }
}

async fn send(
    worker: &Worker,
    stream: &mut TcpStream,
    resp: Response,
    keep_alive: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let stall = worker.config.server.send_timeout;
    let mut out = Vec::with_capacity(256 + resp.body.len().min(COALESCE_LIMIT));
    write_head(&mut out, &resp, keep_alive);
    if head_only {
        return write_all_progress(stream, out, stall).await.0;
    }
    if resp.body.len() <= COALESCE_LIMIT {
        out.extend_from_slice(&resp.body);
        write_all_progress(stream, out, stall).await.0
    } else {
        write_all_progress(stream, out, stall).await.0?;
        write_all_progress(stream, resp.body, stall).await.0
    }
}

/// Sends a streamed answer: the head announces the whole length (the provider's `Content-Length` adjusted for the
/// id's length: `resp.body` holds the first bytes with the client's id spliced in), then each verified piece is
/// written while the next one is read. A provider failing mid-body (or a body failing verification) ends the
/// connection before the rest: the client sees a body shorter than announced, never a complete-looking wrong one.
async fn send_streamed(
    worker: &Worker,
    stream: &mut TcpStream,
    resp: Response,
    mut tail: BodyTail,
    keep_alive: bool,
) -> std::io::Result<()> {
    let total = resp.body.len() + tail.remaining();
    let mut first = Vec::with_capacity(256 + resp.body.len());
    write_head_with_length(&mut first, &resp, keep_alive, total);
    first.extend_from_slice(&resp.body);
    drop(resp);
    let mut writing = first;
    let mut spare = Vec::with_capacity(STREAM_PIECE);
    let stall = worker.config.server.send_timeout;
    loop {
        let write = write_all_progress(stream, writing, stall);
        let ((written, done), (next, piece)) =
            futures_util::future::join(write, tail.next(spare)).await;
        written?;
        match next {
            Ok(true) => {
                writing = piece;
                spare = done;
            }
            Ok(false) => return Ok(()),
            Err(e) => {
                crate::rpc::attempt::stream_failed(worker, tail.pid(), &e, tail.elapsed());
                return Err(std::io::Error::other(e.message));
            }
        }
    }
}
