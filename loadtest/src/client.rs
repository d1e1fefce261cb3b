//! Client connections: URL parsing, an HTTP/1.1 keep-alive JSON-RPC connection and a WebSocket connection for the
//! load engine (monoio, one task each), and small blocking helpers (std::net) for control calls and set-up.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::http::{self, BodyKind};
use crate::rng::Rng;
use crate::ws::{self, Assembler, Message};

/// Largest response the load generator accepts.
pub const MAX_RESPONSE: usize = 256 << 20;

/// A parsed `http://` or `ws://` URL (no TLS: the harness only talks to loopback).
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
    pub websocket: bool,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (websocket, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (true, r)
        } else {
            return Err(format!("{url}: only http:// and ws:// URLs are supported"));
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !host.ends_with(']')
        {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Target {
            url: url.to_string(),
            host: host.to_string(),
            addr,
            path: path.to_string(),
            websocket,
        })
    }
}

/// What one HTTP exchange returned.
#[derive(Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub body_len: usize,
    /// JSON-RPC error objects seen in the body (small bodies are scanned whole, large ones at both ends).
    pub rpc_errors: u32,
    /// The server will close the connection (or already did).
    pub close: bool,
    pub retry_after: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// Counts `"error":` members in a JSON-RPC answer (whole body up to 64 KiB, else the first and last 4 KiB).
pub fn count_rpc_errors(body: &[u8]) -> u32 {
    fn count(hay: &[u8]) -> u32 {
        let needle = b"\"error\":";
        let mut n = 0;
        let mut i = 0;
        while i + needle.len() <= hay.len() {
            if hay[i] == b'"' && &hay[i..i + needle.len()] == needle {
                n += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        n
    }
    if body.len() <= 64 << 10 {
        count(body)
    } else {
        count(&body[..4096]) + count(&body[body.len() - 4096..])
    }
}

/// An HTTP/1.1 keep-alive connection posting JSON-RPC bodies.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
    prefix: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(t: &Target) -> io::Result<HttpConn> {
        let stream = TcpStream::connect_addr(t.addr).await?;
        let _ = stream.set_nodelay(true);
        let prefix = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: ",
            t.path, t.host
        )
        .into_bytes();
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
            req: Vec::with_capacity(512),
            prefix,
        })
    }

    /// Posts `body` and reads the whole answer (kept in `Reply::body` when `keep_body`).
    pub async fn post(&mut self, body: &[u8], keep_body: bool) -> io::Result<Reply> {
        let mut req = std::mem::take(&mut self.req);
        req.clear();
        req.extend_from_slice(&self.prefix);
        let mut itoa = itoa_buf(body.len());
        req.append(&mut itoa);
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body);
        let (res, req) = self.stream.write_all(req).await;
        self.req = req;
        res?;
        if self.buf.capacity() == 0 {
            self.buf.reserve(4096);
        }
        let buf = std::mem::take(&mut self.buf);
        let (head, buf) = http::read_response_head(&mut self.stream, buf).await;
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                self.buf = buf;
                return Err(e);
            }
        };
        let kind = head.body_kind();
        let (body, mut buf) =
            http::read_body(&mut self.stream, buf, head.head_len, kind, MAX_RESPONSE).await;
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                self.buf = buf;
                return Err(e);
            }
        };
        let bytes = body.bytes(&buf);
        let reply = Reply {
            status: head.status,
            body_len: bytes.len(),
            rpc_errors: count_rpc_errors(bytes),
            close: head.close || kind == BodyKind::UntilClose,
            retry_after: head.retry_after.clone(),
            body: keep_body.then(|| bytes.to_vec()),
        };
        http::consume(&mut buf, body.consumed);
        // Do not keep multi-MB buffers around per idle connection.
        if buf.capacity() > (1 << 20) && buf.is_empty() {
            buf = Vec::with_capacity(4096);
        }
        self.buf = buf;
        Ok(reply)
    }
}

fn itoa_buf(n: usize) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// A WebSocket client connection (one task: sends and receives in turn).
pub struct WsConn {
    stream: TcpStream,
    buf: Vec<u8>,
    asm: Assembler,
    rng: Rng,
}

impl WsConn {
    /// TCP connect + opening handshake (checks the 101 and Sec-WebSocket-Accept).
    pub async fn connect(t: &Target, rng_seed: u64) -> io::Result<WsConn> {
        let mut stream = TcpStream::connect_addr(t.addr).await?;
        let _ = stream.set_nodelay(true);
        let mut rng = Rng::new(rng_seed);
        let key = ws::random_key(&mut rng);
        let (res, _) = stream
            .write_all(ws::client_handshake(&t.host, &t.path, &key).into_bytes())
            .await;
        res?;
        let (head, mut buf) = http::read_response_head(&mut stream, Vec::with_capacity(4096)).await;
        let head = head?;
        if head.status != 101 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("websocket handshake: HTTP {}", head.status),
            ));
        }
        if head.ws_accept.as_deref() != Some(ws::accept_key(&key).as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "websocket handshake: bad Sec-WebSocket-Accept",
            ));
        }
        http::consume(&mut buf, head.head_len);
        Ok(WsConn {
            stream,
            buf,
            asm: Assembler::new(MAX_RESPONSE),
            rng,
        })
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = (self.rng.next_u64() as u32).to_ne_bytes();
        let mut f = Vec::with_capacity(payload.len() + 14);
        ws::encode_frame(&mut f, opcode, payload, Some(mask));
        let (res, _) = self.stream.write_all(f).await;
        res.map(|_| ())
    }

    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frame(ws::OP_TEXT, payload).await
    }

    /// The next text/binary message; answers pings; `Ok(None)` on close.
    pub async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match ws::decode_frame(&self.buf, MAX_RESPONSE, false) {
                Ok(Some((frame, used))) => {
                    http::consume(&mut self.buf, used);
                    match self
                        .asm
                        .push(frame)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                    {
                        Some(Message::Text(t)) | Some(Message::Binary(t)) => return Ok(Some(t)),
                        Some(Message::Ping(p)) => self.send_frame(ws::OP_PONG, &p).await?,
                        Some(Message::Close(_)) => {
                            let _ = self.send_frame(ws::OP_CLOSE, &1000u16.to_be_bytes()).await;
                            return Ok(None);
                        }
                        Some(Message::Pong(_)) | None => {}
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let buf = std::mem::take(&mut self.buf);
            let (res, buf) = http::read_more(&mut self.stream, buf, 8192).await;
            self.buf = buf;
            if res? == 0 {
                return Ok(None);
            }
        }
    }

    /// Sends a close frame.
    pub async fn close(&mut self) {
        let _ = self.send_frame(ws::OP_CLOSE, &1000u16.to_be_bytes()).await;
    }
}

/// Status, headers (lower-case names) and body of a blocking exchange.
pub type BlockingReply = (u16, Vec<(String, String)>, Vec<u8>);

/// A blocking HTTP exchange (std::net, `Connection: close`): returns status, headers (lower-case names) and body.
pub fn blocking_request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<BlockingReply> {
    let t = Target::parse(url).map_err(io::Error::other)?;
    let mut s = std::net::TcpStream::connect_timeout(&t.addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.host,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                // Stop early once a length-delimited answer is complete.
                if let Ok(Some(h)) = http::parse_response_head(&raw) {
                    if let BodyKind::Length(len) = h.body_kind() {
                        if raw.len() >= h.head_len + len {
                            break;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let h = http::parse_response_head(&raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete response head"))?;
    let mut headers = Vec::new();
    {
        let mut hs = [httparse::EMPTY_HEADER; 48];
        let mut r = httparse::Response::new(&mut hs);
        let _ = r.parse(&raw);
        for x in r.headers.iter() {
            headers.push((
                x.name.to_ascii_lowercase(),
                String::from_utf8_lossy(x.value).into_owned(),
            ));
        }
    }
    let rest = &raw[h.head_len..];
    let body = match h.body_kind() {
        BodyKind::Length(n) => {
            if rest.len() < n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            rest[..n].to_vec()
        }
        BodyKind::Chunked => {
            http::decode_chunked(rest, MAX_RESPONSE)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete chunked body")
                })?
                .0
        }
        BodyKind::UntilClose => rest.to_vec(),
    };
    Ok((h.status, headers, body))
}

/// POSTs a JSON value and parses the JSON answer.
pub fn post_json(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> io::Result<(u16, serde_json::Value)> {
    let (status, _, b) = blocking_request("POST", url, Some(body.to_string().as_bytes()), timeout)?;
    let v = serde_json::from_slice(&b).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e}: {}", String::from_utf8_lossy(&b[..b.len().min(200)])),
        )
    })?;
    Ok((status, v))
}

/// One JSON-RPC call over a fresh connection: the `result` member, or an error naming the failure.
pub fn rpc_call(
    url: &str,
    method: &str,
    params: serde_json::Value,
    timeout: Duration,
) -> io::Result<serde_json::Value> {
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, v) = post_json(url, &req, timeout)?;
    if let Some(r) = v.get("result") {
        return Ok(r.clone());
    }
    Err(io::Error::other(format!("{method}: HTTP {status}: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8545/rpc/eth").unwrap();
        assert_eq!(t.addr.port(), 8545);
        assert_eq!(t.path, "/rpc/eth");
        assert!(!t.websocket);
        let t = Target::parse("ws://127.0.0.1:9").unwrap();
        assert!(t.websocket);
        assert_eq!(t.path, "/");
        assert!(Target::parse("https://x").is_err());
    }

    #[test]
    fn counts_errors() {
        assert_eq!(
            count_rpc_errors(br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#),
            0
        );
        assert_eq!(
            count_rpc_errors(br#"[{"id":1,"error":{"code":1}},{"id":2,"error":{}}]"#),
            2
        );
    }
}
