//! Minimal HTTP/1.1 plumbing shared by the mock providers and the raw test client.
//!
//! Deliberately hand-rolled over `std::net::TcpStream` so the tests control every byte that goes
//! on the wire (pipelining, chunked bodies, slow headers, HTTP/1.0, ...).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default read/write timeout of every test socket: a broken proxy fails a test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout of every test socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP stream with a read buffer that keeps bytes past the current message (pipelined responses).
pub struct BufStream {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl BufStream {
    pub fn new(stream: TcpStream) -> BufStream {
        BufStream {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
        }
    }

    /// Bytes read from the socket but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes from the socket into the buffer. Returns 0 at EOF.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads a message head (up to and including the blank line).
    /// `Ok(None)` means a clean EOF before the first byte of a new message.
    pub fn read_head(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched: usize = 0;
        loop {
            let avail = self.buffered();
            let from = searched.saturating_sub(3);
            if let Some(i) = find(&avail[from..], b"\r\n\r\n") {
                let end = from + i + 4;
                let head = avail[..end].to_vec();
                self.consume(end);
                return Ok(Some(head));
            }
            searched = avail.len();
            if searched > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message head larger than {max} bytes"),
                ));
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "EOF inside a message head: {:?}",
                            String::from_utf8_lossy(self.buffered())
                        ),
                    ))
                };
            }
        }
    }

    pub fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {} body bytes", self.buffered().len(), n),
                ));
            }
        }
        let out = self.buffered()[..n].to_vec();
        self.consume(n);
        Ok(out)
    }

    /// One CRLF-terminated line, without the CRLF.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..i].to_vec();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.buffered().len() > 64 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a line",
                ));
            }
        }
    }

    /// Decodes a chunked body (after the head). Trailers are read and dropped.
    pub fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line).to_string();
            let size_txt = line.split(';').next().unwrap_or("").trim().to_string();
            let size = usize::from_str_radix(&size_txt, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {line:?}"),
                )
            })?;
            if size == 0 {
                // trailers until an empty line
                loop {
                    if self.read_line()?.is_empty() {
                        return Ok(body);
                    }
                }
            }
            body.extend_from_slice(&self.read_exact_vec(size)?);
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk not followed by CRLF",
                ));
            }
        }
    }

    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        let out = self.buffered().to_vec();
        let n = out.len();
        self.consume(n);
        Ok(out)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parsed head of an HTTP message.
#[derive(Clone, Debug)]
pub struct Head {
    /// Request method (requests only).
    pub method: String,
    /// Request target (requests only).
    pub path: String,
    /// Status code (responses only).
    pub status: u16,
    pub reason: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn content_length(&self) -> io::Result<Option<usize>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad content-length {v:?}"),
                )
            }),
        }
    }

    pub fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }
}

pub fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn collect_headers(hs: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    hs.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect()
}

pub fn parse_request_head(raw: &[u8]) -> io::Result<Head> {
    let mut hs = vec![httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => Ok(Head {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
            status: 0,
            reason: String::new(),
            version: req.version.unwrap_or(1),
            headers: collect_headers(req.headers),
        }),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "bad request head ({other:?}): {:?}",
                String::from_utf8_lossy(raw)
            ),
        )),
    }
}

pub fn parse_response_head(raw: &[u8]) -> io::Result<Head> {
    let mut hs = vec![httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut hs);
    match resp.parse(raw) {
        Ok(httparse::Status::Complete(_)) => Ok(Head {
            method: String::new(),
            path: String::new(),
            status: resp.code.unwrap_or(0),
            reason: resp.reason.unwrap_or("").to_string(),
            version: resp.version.unwrap_or(1),
            headers: collect_headers(resp.headers),
        }),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "bad response head ({other:?}): {:?}",
                String::from_utf8_lossy(raw)
            ),
        )),
    }
}

/// An HTTP response as seen by the test client. `body` is already de-chunked and, when the response
/// carried `Content-Encoding: gzip`, decompressed (`gzip` then says so).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON; panics (with the body) when it is not JSON.
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                truncate(&self.text(), 2000)
            ),
        }
    }

    pub fn try_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `error.code` of a single JSON-RPC answer, if any.
    pub fn rpc_code(&self) -> Option<i64> {
        self.try_json()
            .and_then(|v| v.get("error")?.get("code")?.as_i64())
    }

    /// Short human description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "HTTP {} {} headers={:?} body={}",
            self.status,
            self.reason,
            self.headers,
            truncate(&self.text(), 1500)
        )
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...({} bytes total)", &s[..end], s.len())
    }
}

/// Reads one response from `io`. `head_request` is true when the request was HEAD (no body).
pub fn read_response(io: &mut BufStream, head_request: bool) -> io::Result<Response> {
    let raw = io.read_head(1024 * 1024)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        )
    })?;
    let head = parse_response_head(&raw)?;
    let no_body = head_request
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304;
    let chunked = head.is_chunked();
    let body = if no_body {
        Vec::new()
    } else if chunked {
        io.read_chunked()?
    } else if let Some(n) = head.content_length()? {
        io.read_exact_vec(n)?
    } else {
        io.read_to_eof()?
    };
    let gzip = head
        .header("content-encoding")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let body = if gzip && !body.is_empty() {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad gzip: {e}")))?;
        out
    } else {
        body
    };
    Ok(Response {
        status: head.status,
        reason: head.reason,
        version: head.version,
        headers: head.headers,
        body,
        gzip,
        chunked,
    })
}

/// Serialises an HTTP/1.1 request. Adds `Host`, and `Content-Length` unless the caller supplied
/// `Content-Length` or `Transfer-Encoding` (then `body` is sent as given).
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        out.push_str("Host: 127.0.0.1\r\n");
    }
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `POST path` with a JSON body, as bytes.
pub fn post_bytes(path: &str, body: &str) -> Vec<u8> {
    request_bytes(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Encodes `body` as chunked transfer coding, `chunk` bytes per chunk.
pub fn chunk_body(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A raw client connection. Every socket operation is bounded by a timeout.
pub struct Conn {
    pub io: BufStream,
    pub addr: SocketAddr,
}

impl Conn {
    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            io: BufStream::new(stream),
            addr,
        })
    }

    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.io.stream.set_read_timeout(Some(d)).unwrap();
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.stream.write_all(bytes)?;
        self.io.stream.flush()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.addr));
    }

    pub fn try_read_response(&mut self) -> io::Result<Response> {
        read_response(&mut self.io, false)
    }

    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading a response from {}: {e}", self.addr))
    }

    /// Reads `n` responses in order (pipelining). Interim 1xx responses are returned too.
    pub fn read_responses(&mut self, n: usize) -> Vec<Response> {
        (0..n).map(|_| self.read_response()).collect()
    }

    /// Sends a keep-alive `POST path` with a JSON body and reads the answer.
    pub fn post(&mut self, path: &str, body: &str) -> Response {
        self.send(&post_bytes(path, body));
        self.read_response()
    }

    pub fn try_post(&mut self, path: &str, body: &str) -> io::Result<Response> {
        self.try_send(&post_bytes(path, body))?;
        self.try_read_response()
    }

    /// Waits (bounded by `timeout`) for the peer to close the connection. Data that arrives first is
    /// collected and returned. `Ok(data)` = EOF or reset seen; `Err(data)` = still open at the deadline.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut data = self.io.buffered().to_vec();
        let n = data.len();
        self.io.consume(n);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(data);
            }
            self.io
                .stream
                .set_read_timeout(Some(deadline - now))
                .unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.io.stream.read(&mut chunk) {
                Ok(0) => return Ok(data),
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(data);
                }
                // reset / other errors: the connection is gone
                Err(_) => return Ok(data),
            }
        }
    }
}

/// One-shot request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut c = Conn::connect(addr);
    c.send(&request_bytes(method, path, headers, body));
    c.try_read_response()
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// One-shot `POST path` with a JSON body; transport errors as `Err` instead of a panic.
pub fn try_post(addr: SocketAddr, path: &str, body: &str) -> io::Result<Response> {
    let mut c = Conn::try_connect(addr)?;
    c.try_post(path, body)
}

/// One-shot `POST path` with a JSON body.
pub fn post(addr: SocketAddr, path: &str, body: &str) -> Response {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// One-shot `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}
