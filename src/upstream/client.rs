//! One request/response exchange with a provider over a pooled connection: request head prebuilt per provider,
//! response read (Content-Length, chunked or until close) into buffers that grow from what arrived and are charged to
//! the worker's [`Budget`], gzip decoded the same way, connection returned to the pool when reusable; a large answer the caller may stream
//! ([`UpstreamClient::post_stream`]) is handed over after its first bytes, with the rest as a [`BodyTail`]. A pooled connection that turns out dead before any response byte is replaced transparently.

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::rc::Rc;
use std::time::Duration;

use super::budget::{Budget, Charge, OverBudget, reserve};
use super::conn::Conn;
use super::dns::{DnsCache, resolve};
use super::error::{FailureKind, UpstreamError, UpstreamResponse};
use super::pool::Pool;
use super::stream::{BodyTail, STREAM_PIECE};
use crate::config::{Config, Provider, UpstreamSettings};
use crate::wire::http::chunked::ChunkedDecoder;
use crate::wire::http::client::{ResponseFraming, parse_response_head};

const READ_CHUNK: usize = 16 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Body bytes read before a streamed answer is handed over: enough for the envelope head.
const STREAM_HEAD_PEEK: usize = 512;

/// A worker's upstream client.
pub struct UpstreamClient {
    config: std::sync::Arc<Config>,
    pub(super) coalescer: super::coalesce_queue::Coalescer,
    settings: UpstreamSettings,
    /// Per provider: `POST ... Host ... extra headers ... Content-Length: ` ready to be completed.
    heads: Vec<Vec<u8>>,
    tls_names: Vec<Option<String>>,
    tls: monoio_rustls::TlsConnector,
    pool: Rc<RefCell<Pool>>,
    dns: RefCell<DnsCache>,
    /// This worker's share of `upstream.max_buffered_response_bytes`.
    budget: Rc<Budget>,
}

impl UpstreamClient {
    /// A worker's client; `budget` is its share of the buffered-answer budget (`upstream.max_buffered_response_bytes`
    /// divided by the number of workers).
    pub fn new(
        config: &std::sync::Arc<Config>,
        tls: monoio_rustls::TlsConnector,
        budget: usize,
    ) -> Self {
        Self::build(config, tls, None, budget)
    }

    /// A client for the monitor's health probes: its requests carry `X-Lasso-Probe: health`, so providers (and tests)
    /// can tell them from client traffic.
    pub fn for_probes(config: &std::sync::Arc<Config>, tls: monoio_rustls::TlsConnector) -> Self {
        let budget = config.upstream.max_response_bytes;
        Self::build(config, tls, Some(("X-Lasso-Probe", "health")), budget)
    }

    fn build(
        config: &std::sync::Arc<Config>,
        tls: monoio_rustls::TlsConnector,
        extra: Option<(&str, &str)>,
        budget: usize,
    ) -> Self {
        let heads = config
            .providers
            .iter()
            .map(|p| request_head_prefix(p, extra))
            .collect();
        let tls_names = config
            .providers
            .iter()
            .map(|p| p.url.tls.then(|| p.url.host.clone()))
            .collect();
        UpstreamClient {
            config: config.clone(),
            coalescer: Default::default(),
            settings: config.upstream.clone(),
            heads,
            tls_names,
            tls,
            pool: Rc::new(RefCell::new(Pool::new(
                config.providers.len(),
                config.upstream.pool_max_idle_per_provider,
                config.upstream.pool_idle_timeout,
            ))),
            dns: RefCell::new(DnsCache::default()),
            budget: Budget::new(budget),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// Drops expired idle connections.
    pub fn maintain(&self) {
        self.pool.borrow_mut().evict_expired();
    }

    /// This worker's budget of buffered answer bytes.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn idle_connections(&self, pid: usize) -> usize {
        self.pool.borrow().idle_count(pid)
    }

    /// POSTs `body` to provider `p`, within `timeout`. `may_retry_unsent` allows one transparent retry on a fresh
    /// connection when a pooled one died before answering (it is false for writes, which are never sent twice).
    pub async fn post(
        &self,
        p: &Provider,
        body: &[u8],
        timeout: Duration,
        may_retry_unsent: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.post_with(p, body, timeout, may_retry_unsent, &[])
            .await
    }

    /// [`UpstreamClient::post`] with extra header lines (each `Name: value\r\n`), e.g. a trace's `traceparent`.
    pub async fn post_with(
        &self,
        p: &Provider,
        body: &[u8],
        timeout: Duration,
        may_retry_unsent: bool,
        extra_headers: &[u8],
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.post_stream(p, body, timeout, may_retry_unsent, extra_headers, None)
            .await
            .map(|(resp, _)| resp)
    }

    /// [`UpstreamClient::post_with`]; with `stream_above`, a 2xx answer announcing a `Content-Length` of at least that
    /// many bytes (not gzip) comes back once its first bytes arrived: `body` holds them and the [`BodyTail`] the rest,
    /// each of its reads bounded by `upstream.request_timeout`.
    pub async fn post_stream(
        &self,
        p: &Provider,
        body: &[u8],
        timeout: Duration,
        may_retry_unsent: bool,
        extra_headers: &[u8],
        stream_above: Option<usize>,
    ) -> Result<(UpstreamResponse, Option<BodyTail>), UpstreamError> {
        let reached = Rc::new(Cell::new(false));
        let exchange = self.post_inner(
            p,
            body,
            may_retry_unsent,
            extra_headers,
            reached.clone(),
            stream_above,
        );
        match monoio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::new(
                FailureKind::Timeout,
                format!("no answer within {} ms", timeout.as_millis()),
                reached.get(),
            )),
        }
    }

    async fn post_inner(
        &self,
        p: &Provider,
        body: &[u8],
        may_retry_unsent: bool,
        extra_headers: &[u8],
        reached: Rc<Cell<bool>>,
        stream_above: Option<usize>,
    ) -> Result<(UpstreamResponse, Option<BodyTail>), UpstreamError> {
        let pooled = self.pool.borrow_mut().take(p.pid, !may_retry_unsent);
        if let Some(conn) = pooled {
            match self
                .exchange(p, conn, body, extra_headers, &reached, stream_above)
                .await
            {
                Err(e) if e.response_started => {
                    return Err(e.error);
                }
                Err(e) if !may_retry_unsent && e.error.may_have_reached => return Err(e.error),
                Err(_) => {
                    // The pooled connection was dead (provider restarted or timed it out): use a fresh one.
                    reached.set(false);
                }
                Ok(resp) => return Ok(resp),
            }
        }
        let conn = self.connect(p).await?;
        self.exchange(p, conn, body, extra_headers, &reached, stream_above)
            .await
            .map_err(|e| e.error)
    }

    async fn connect(&self, p: &Provider) -> Result<Conn, UpstreamError> {
        let connect_err =
            |e: std::io::Error| UpstreamError::new(FailureKind::Connect, e.to_string(), false);
        let addrs = resolve(&self.dns, &p.url.host, p.url.port)
            .await
            .map_err(connect_err)?;
        let tls = self.tls_names[p.pid]
            .as_deref()
            .map(|name| (&self.tls, name));
        match monoio::time::timeout(self.settings.connect_timeout, Conn::connect(&addrs, tls)).await
        {
            Ok(conn) => conn.map_err(connect_err),
            Err(_) => Err(UpstreamError::new(
                FailureKind::Connect,
                format!(
                    "connect timed out after {} ms",
                    self.settings.connect_timeout.as_millis()
                ),
                false,
            )),
        }
    }

    async fn exchange(
        &self,
        p: &Provider,
        mut conn: Conn,
        body: &[u8],
        extra_headers: &[u8],
        reached: &Cell<bool>,
        stream_above: Option<usize>,
    ) -> Result<(UpstreamResponse, Option<BodyTail>), ExchangeError> {
        let head = &self.heads[p.pid];
        let mut digits = itoa::Buffer::new();
        let len = digits.format(body.len());
        let mut request =
            Vec::with_capacity(head.len() + extra_headers.len() + len.len() + 4 + body.len());
        if extra_headers.is_empty() {
            request.extend_from_slice(head);
        } else {
            // The head ends with `Content-Length: `: the extra lines go before it.
            let split = head.len() - CONTENT_LENGTH_PREFIX.len();
            request.extend_from_slice(&head[..split]);
            request.extend_from_slice(extra_headers);
            request.extend_from_slice(&head[split..]);
        }
        request.extend_from_slice(len.as_bytes());
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body);
        let (res, request) = conn.stream.write_all(request).await;
        drop(request);
        if let Err(e) = res {
            return Err(ExchangeError::before_response(
                FailureKind::Reset,
                format!("send failed: {e}"),
                false,
            ));
        }
        // Once written, the provider may act on it even if the connection then fails.
        reached.set(true);
        self.read_response(p, conn, stream_above).await
    }

    async fn read_response(
        &self,
        p: &Provider,
        mut conn: Conn,
        stream_above: Option<usize>,
    ) -> Result<(UpstreamResponse, Option<BodyTail>), ExchangeError> {
        let max = self.settings.max_response_bytes;
        let mut charge = self.budget.charge();
        let mut buf = Vec::new();
        let head = loop {
            reserve(
                &mut buf,
                READ_CHUNK,
                MAX_RESPONSE_HEAD + READ_CHUNK,
                &mut charge,
                0,
            )
            .map_err(over_budget)?;
            let (res, b) = conn.stream.read_more(buf, 0).await;
            buf = b;
            match res {
                Ok(0) if buf.is_empty() => {
                    return Err(ExchangeError::before_response(
                        FailureKind::Reset,
                        "connection closed before any response".into(),
                        true,
                    ));
                }
                Ok(0) => {
                    return Err(ExchangeError::during(
                        FailureKind::Reset,
                        "connection closed mid-head",
                    ));
                }
                Ok(_) => {}
                Err(e) if buf.is_empty() => {
                    return Err(ExchangeError::before_response(
                        FailureKind::Reset,
                        format!("receive failed: {e}"),
                        true,
                    ));
                }
                Err(e) => {
                    return Err(ExchangeError::during(
                        FailureKind::Reset,
                        &format!("receive failed: {e}"),
                    ));
                }
            }
            match parse_response_head(&buf) {
                Ok(Some(head)) if head.status == 100 => {
                    buf.drain(..head.head_len);
                }
                Ok(Some(head)) => break head,
                Ok(None) if buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(ExchangeError::during(
                        FailureKind::Protocol,
                        "response head too large",
                    ));
                }
                Ok(None) => {}
                Err(e) => return Err(ExchangeError::during(FailureKind::Protocol, &e)),
            }
        };
        let mut reusable = head.keep_alive;
        let body = match head.framing {
            ResponseFraming::Length(n) => {
                if n > max {
                    return Err(ExchangeError::during(
                        FailureKind::TooLarge,
                        &format!("response of {n} bytes exceeds the limit"),
                    ));
                }
                // The body grows in the head's buffer as bytes arrive: the announced length is a ceiling, never an
                // allocation.
                let mut body = buf;
                body.drain(..head.head_len);
                if body.len() > n {
                    body.truncate(n);
                    reusable = false;
                }
                let streams = stream_above.is_some_and(|t| n >= t)
                    && !head.gzip
                    && (200..300).contains(&head.status);
                if streams {
                    while body.len() < n.min(STREAM_HEAD_PEEK) {
                        reserve(&mut body, READ_CHUNK, n, &mut charge, 0).map_err(over_budget)?;
                        let (res, b) = conn.stream.read_more(body, 0).await;
                        body = b;
                        body_progress(res)?;
                    }
                    if body.len() > n {
                        body.truncate(n);
                        reusable = false;
                    }
                    // The head's buffer and the two pieces in flight.
                    charge
                        .hold(body.capacity() + 2 * STREAM_PIECE)
                        .map_err(over_budget)?;
                    let tail = BodyTail::new(
                        conn,
                        self.pool.clone(),
                        p.pid,
                        n - body.len(),
                        reusable,
                        charge,
                        self.settings.request_timeout,
                    );
                    let resp = UpstreamResponse {
                        status: head.status,
                        body,
                        retry_after: head.retry_after,
                    };
                    return Ok((resp, Some(tail)));
                }
                while body.len() < n {
                    let want = (n - body.len()).min(READ_CHUNK);
                    reserve(&mut body, want, n, &mut charge, 0).map_err(over_budget)?;
                    let (res, b) = conn.stream.read_more(body, 0).await;
                    body = b;
                    body_progress(res)?;
                }
                if body.len() > n {
                    body.truncate(n);
                    reusable = false;
                }
                body
            }
            ResponseFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new(max);
                let mut body = Vec::new();
                let mut consumed = head.head_len;
                loop {
                    // Decoding never yields more bytes than it consumes: room for the raw bytes is enough.
                    let raw = buf.len() - consumed;
                    reserve(&mut body, raw.max(1), max, &mut charge, buf.capacity())
                        .map_err(over_budget)?;
                    consumed += decoder.decode(&buf[consumed..], &mut body).map_err(|e| {
                        ExchangeError::during(
                            if body.len() >= max {
                                FailureKind::TooLarge
                            } else {
                                FailureKind::Protocol
                            },
                            &e.to_string(),
                        )
                    })?;
                    if decoder.is_done() {
                        if consumed != buf.len() {
                            reusable = false;
                        }
                        break;
                    }
                    buf.drain(..consumed);
                    consumed = 0;
                    reserve(
                        &mut buf,
                        READ_CHUNK,
                        usize::MAX,
                        &mut charge,
                        body.capacity(),
                    )
                    .map_err(over_budget)?;
                    let (res, b) = conn.stream.read_more(buf, 0).await;
                    buf = b;
                    body_progress(res)?;
                }
                drop(buf);
                body
            }
            ResponseFraming::UntilClose => {
                reusable = false;
                buf.drain(..head.head_len);
                loop {
                    if buf.len() > max {
                        return Err(ExchangeError::during(
                            FailureKind::TooLarge,
                            "response exceeds the limit",
                        ));
                    }
                    reserve(&mut buf, READ_CHUNK, max + 1, &mut charge, 0).map_err(over_budget)?;
                    let (res, b) = conn.stream.read_more(buf, 0).await;
                    buf = b;
                    match res {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            return Err(ExchangeError::during(
                                FailureKind::Reset,
                                &format!("receive failed: {e}"),
                            ));
                        }
                    }
                }
                buf
            }
        };
        if reusable {
            self.pool.borrow_mut().put(p.pid, conn);
        }
        let body = if head.gzip {
            gunzip(&body, max, &mut charge).map_err(|e| match e {
                Gunzip::Invalid(e) => ExchangeError::during(FailureKind::Protocol, &e),
                Gunzip::TooLarge => ExchangeError::during(
                    FailureKind::TooLarge,
                    "decompressed response exceeds the limit",
                ),
                Gunzip::OverBudget(o) => over_budget(o),
            })?
        } else {
            body
        };
        Ok((
            UpstreamResponse {
                status: head.status,
                body,
                retry_after: head.retry_after,
            },
            None,
        ))
    }
}

/// The exchange error for a growth the worker's budget refused.
fn over_budget(o: OverBudget) -> ExchangeError {
    ExchangeError::during(
        FailureKind::Budget,
        &format!(
            "answers being received from providers exceed this worker's buffer budget ({} bytes)",
            o.limit
        ),
    )
}

/// Turns a read inside a response body into an error when the connection ended or failed.
fn body_progress(res: std::io::Result<usize>) -> Result<(), ExchangeError> {
    match res {
        Ok(0) => Err(ExchangeError::during(
            FailureKind::Reset,
            "connection closed mid-body",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(ExchangeError::during(
            FailureKind::Reset,
            &format!("receive failed: {e}"),
        )),
    }
}

/// An exchange failure, with whether any response byte had arrived (then a retry would not be transparent).
struct ExchangeError {
    error: UpstreamError,
    response_started: bool,
}

impl ExchangeError {
    fn before_response(kind: FailureKind, message: String, reached: bool) -> Self {
        ExchangeError {
            error: UpstreamError::new(kind, message, reached),
            response_started: false,
        }
    }

    fn during(kind: FailureKind, message: &str) -> Self {
        ExchangeError {
            error: UpstreamError::new(kind, message.to_string(), true),
            response_started: true,
        }
    }
}

/// Why a gzip body could not be decoded.
enum Gunzip {
    Invalid(String),
    TooLarge,
    OverBudget(OverBudget),
}

/// Decodes a gzip body into a buffer grown from what decodes (never a multiple of the compressed size reserved up
/// front), charged to the exchange beside the compressed bytes.
fn gunzip(data: &[u8], max: usize, charge: &mut Charge) -> Result<Vec<u8>, Gunzip> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(data);
    let mut chunk = [0u8; 8192];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| Gunzip::Invalid(format!("invalid gzip body: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            return Err(Gunzip::TooLarge);
        }
        reserve(&mut out, n, max, charge, data.len()).map_err(Gunzip::OverBudget)?;
        out.extend_from_slice(&chunk[..n]);
    }
}

/// How every precomputed request head ends.
const CONTENT_LENGTH_PREFIX: &str = "Content-Length: ";

fn request_head_prefix(p: &Provider, extra: Option<(&str, &str)>) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lasso/{}\r\nContent-Type: application/json\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n",
        p.url.target,
        p.url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in p
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra)
    {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(CONTENT_LENGTH_PREFIX);
    head.into_bytes()
}
