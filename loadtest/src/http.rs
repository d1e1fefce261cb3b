//! HTTP/1.1 wire helpers shared by the mock provider (server side) and the load generator (client side): append-reads
//! into a `Vec`'s spare capacity, request/response head parsing (httparse), bodies by Content-Length, chunked or
//! read-to-close, and writing whole buffers.

use std::io;
use std::ops::Range;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

/// Largest accepted request/response head.
pub const MAX_HEAD: usize = 64 * 1024;

/// Reads once into the spare capacity of `buf` (ensuring at least `min_spare` free bytes), appending.
/// Returns the number of bytes read (0 = end of stream) and the buffer.
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    min_spare: usize,
) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
    (res, slice.into_inner())
}

/// Writes all of `buf`.
pub async fn write_all<S: AsyncWriteRentExt>(
    stream: &mut S,
    buf: Vec<u8>,
) -> (io::Result<()>, Vec<u8>) {
    let (res, buf) = stream.write_all(buf).await;
    (res.map(|_| ()), buf)
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A parsed request head.
#[derive(Clone, Debug, Default)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub keep_alive: bool,
    pub upgrade_websocket: bool,
    pub ws_key: Option<String>,
}

impl RequestHead {
    pub fn body_kind(&self) -> BodyKind {
        if self.chunked {
            BodyKind::Chunked
        } else {
            BodyKind::Length(self.content_length.unwrap_or(0))
        }
    }
}

/// A parsed response head.
#[derive(Clone, Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub retry_after: Option<String>,
    pub ws_accept: Option<String>,
}

impl ResponseHead {
    /// 1xx, 204 and 304 have no body; the rest are delimited by length, chunks or the end of the connection.
    pub fn body_kind(&self) -> BodyKind {
        if (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            BodyKind::Length(0)
        } else if self.chunked {
            BodyKind::Chunked
        } else if let Some(n) = self.content_length {
            BodyKind::Length(n)
        } else {
            BodyKind::UntilClose
        }
    }
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

fn parse_len(value: &[u8]) -> Result<usize, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "bad content-length".to_string())
}

/// Parses a request head; `Ok(None)` while incomplete.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err("request head too large".into())
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(format!("bad request head: {e}")),
    };
    let version = req.version.unwrap_or(1);
    let mut out = RequestHead {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("/").to_string(),
        head_len,
        keep_alive: version == 1,
        ..Default::default()
    };
    let mut upgrade = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            out.content_length = Some(parse_len(h.value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.chunked = header_has_token(h.value, "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            if header_has_token(h.value, "close") {
                out.keep_alive = false;
            } else if header_has_token(h.value, "keep-alive") {
                out.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = header_has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.ws_key = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim().to_string());
        }
    }
    out.upgrade_websocket = upgrade && out.ws_key.is_some() && out.method == "GET";
    Ok(Some(out))
}

/// Parses a response head; `Ok(None)` while incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err("response head too large".into())
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let mut out = ResponseHead {
        status: resp.code.unwrap_or(0),
        head_len,
        close: resp.version == Some(0),
        ..Default::default()
    };
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            out.content_length = Some(parse_len(h.value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.chunked = header_has_token(h.value, "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            if header_has_token(h.value, "close") {
                out.close = true;
            } else if header_has_token(h.value, "keep-alive") {
                out.close = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            out.retry_after = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim().to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            out.ws_accept = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim().to_string());
        }
    }
    Ok(Some(out))
}

/// Decodes a complete chunked body at the start of `buf`: `Ok(Some((body, consumed)))`, `Ok(None)` if incomplete.
pub fn decode_chunked(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_end) = memfind(&buf[pos..], b"\r\n") else {
            return if buf.len() - pos > 1024 {
                Err("chunk size line too long".into())
            } else {
                Ok(None)
            };
        };
        let line = std::str::from_utf8(&buf[pos..pos + line_end]).map_err(|_| "bad chunk size")?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        pos += line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let Some(end) = memfind(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if body.len() + size > max {
            return Err("body too large".into());
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// Position of `needle` in `hay`.
pub fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A complete message body located in (or decoded from) the read buffer.
#[derive(Debug)]
pub struct Body {
    /// Bytes of the buffer the head and body took (drain them before the next message).
    pub consumed: usize,
    /// The body's range in the buffer (Content-Length / read-to-close bodies).
    pub range: Range<usize>,
    /// The decoded body (chunked bodies).
    pub decoded: Option<Vec<u8>>,
}

impl Body {
    pub fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match &self.decoded {
            Some(v) => v,
            None => &buf[self.range.clone()],
        }
    }
    pub fn len(&self) -> usize {
        self.decoded
            .as_ref()
            .map(|v| v.len())
            .unwrap_or(self.range.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads until `buf` holds a whole head: returns the parsed head. `Ok(None)` = clean end of stream before any byte.
pub async fn read_request_head<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> (io::Result<Option<RequestHead>>, Vec<u8>) {
    loop {
        if !buf.is_empty() {
            match parse_request_head(&buf) {
                Ok(Some(h)) => return (Ok(Some(h)), buf),
                Ok(None) => {}
                Err(e) => return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf),
            }
        }
        let (res, b) = read_more(stream, buf, 4096).await;
        buf = b;
        match res {
            Ok(0) if buf.is_empty() => return (Ok(None), buf),
            Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
}

/// Reads until `buf` holds a whole response head.
pub async fn read_response_head<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> (io::Result<ResponseHead>, Vec<u8>) {
    loop {
        if !buf.is_empty() {
            match parse_response_head(&buf) {
                Ok(Some(h)) => return (Ok(h), buf),
                Ok(None) => {}
                Err(e) => return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf),
            }
        }
        let (res, b) = read_more(stream, buf, 4096).await;
        buf = b;
        match res {
            Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
}

/// Reads the body that follows a head of `head_len` bytes (already in `buf`), delimited as `kind`, at most `max` bytes.
pub async fn read_body<S: AsyncReadRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    head_len: usize,
    kind: BodyKind,
    max: usize,
) -> (io::Result<Body>, Vec<u8>) {
    match kind {
        BodyKind::Length(n) => {
            if n > max {
                return (
                    Err(io::Error::new(io::ErrorKind::InvalidData, "body too large")),
                    buf,
                );
            }
            while buf.len() < head_len + n {
                let need = head_len + n - buf.len();
                let (res, b) = read_more(stream, buf, need.clamp(4096, 1 << 20)).await;
                buf = b;
                match res {
                    Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
                    Ok(_) => {}
                    Err(e) => return (Err(e), buf),
                }
            }
            (
                Ok(Body {
                    consumed: head_len + n,
                    range: head_len..head_len + n,
                    decoded: None,
                }),
                buf,
            )
        }
        BodyKind::Chunked => loop {
            match decode_chunked(&buf[head_len..], max) {
                Ok(Some((body, used))) => {
                    return (
                        Ok(Body {
                            consumed: head_len + used,
                            range: 0..0,
                            decoded: Some(body),
                        }),
                        buf,
                    );
                }
                Ok(None) => {}
                Err(e) => return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf),
            }
            let spare = (buf.len() - head_len).clamp(4096, 1 << 20);
            let (res, b) = read_more(stream, buf, spare).await;
            buf = b;
            match res {
                Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        },
        BodyKind::UntilClose => loop {
            if buf.len() - head_len > max {
                return (
                    Err(io::Error::new(io::ErrorKind::InvalidData, "body too large")),
                    buf,
                );
            }
            let spare = (buf.len() - head_len).clamp(4096, 1 << 20);
            let (res, b) = read_more(stream, buf, spare).await;
            buf = b;
            match res {
                Ok(0) => {
                    let end = buf.len();
                    return (
                        Ok(Body {
                            consumed: end,
                            range: head_len..end,
                            decoded: None,
                        }),
                        buf,
                    );
                }
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        },
    }
}

/// Drops the first `n` bytes of `buf`, keeping any pipelined remainder.
pub fn consume(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.drain(..n);
    }
}

/// Standard reason phrase for the statuses the harness uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a response head with a Content-Length to `out`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    len: usize,
    extra: &[(&str, &str)],
    close: bool,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        status,
        reason(status),
        content_type,
        len
    );
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_head() {
        let raw =
            b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let h = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/rpc");
        assert_eq!(h.content_length, Some(5));
        assert!(!h.keep_alive);
        assert_eq!(h.head_len, raw.len() - 5);
        assert!(
            parse_request_head(b"POST / HTTP/1.1\r\nHost")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn parses_ws_upgrade() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\n\r\n";
        let h = parse_request_head(raw).unwrap().unwrap();
        assert!(h.upgrade_websocket);
        assert_eq!(h.ws_key.as_deref(), Some("abc"));
    }

    #[test]
    fn parses_response_head_and_chunks() {
        let raw = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let h = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 429);
        assert_eq!(h.retry_after.as_deref(), Some("3"));
        assert_eq!(h.body_kind(), BodyKind::Chunked);
        let body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT";
        let (decoded, used) = decode_chunked(body, 1 << 20).unwrap().unwrap();
        assert_eq!(decoded, b"hello world");
        assert_eq!(&body[used..], b"NEXT");
        assert!(decode_chunked(b"5\r\nhel", 1 << 20).unwrap().is_none());
    }
}
