//! A blocking WebSocket test client over std TcpStream, using the loadtest crate's independent RFC 6455 codec
//! (so Lasso's own codec is checked against another implementation).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use loadtest::ws::{OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, decode_frame, encode_frame};
use serde_json::Value;

/// What the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMessage {
    Text(Value),
    Close(u16, String),
}

pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    mask: u32,
}

impl WsClient {
    /// Connects and upgrades; `Err(raw HTTP response)` when the server refuses the upgrade.
    pub fn connect(addr: SocketAddr, path: &str) -> Result<WsClient, String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        stream
            .write_all(loadtest::ws::client_handshake(&addr.to_string(), path, key).as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            // Read the rest of the error body if any.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Err(String::from_utf8_lossy(&buf).into_owned());
        }
        assert!(
            head.contains(&loadtest::ws::accept_key(key)),
            "wrong accept key: {head}"
        );
        buf.drain(..head_end);
        Ok(WsClient {
            stream,
            buf,
            mask: 0x1234_5678,
        })
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.mask = self
            .mask
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        self.mask.to_ne_bytes()
    }

    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        let mask = self.next_mask();
        encode_frame(&mut out, opcode, payload, Some(mask));
        let _ = self.stream.write_all(&out);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_frame(OP_TEXT, v.to_string().as_bytes());
    }

    /// The next text or close message within `timeout` (pings answered, pongs skipped); `None` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<WsMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            match decode_frame(&self.buf, 64 << 20, false) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    match frame.opcode {
                        OP_TEXT | OP_BINARY => {
                            return Some(WsMessage::Text(
                                serde_json::from_slice(&frame.payload).unwrap_or(Value::Null),
                            ));
                        }
                        OP_CLOSE => {
                            let code = if frame.payload.len() >= 2 {
                                u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                            } else {
                                1005
                            };
                            return Some(WsMessage::Close(
                                code,
                                String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default())
                                    .into_owned(),
                            ));
                        }
                        OP_PING => self.send_frame(OP_PONG, &frame.payload),
                        _ => {}
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("server sent an invalid frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(WsMessage::Close(1006, "connection closed".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => return Some(WsMessage::Close(1006, "connection reset".into())),
            }
        }
    }

    /// Sends a request and returns the reply with the same id, collecting notifications that arrive first.
    pub fn call(&mut self, id: u64, method: &str, params: Value, notes: &mut Vec<Value>) -> Value {
        self.send_json(
            &serde_json::json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.recv(Duration::from_secs(10)) {
                Some(WsMessage::Text(v)) if v["id"] == id => return v,
                Some(WsMessage::Text(v)) => notes.push(v),
                other => panic!("no reply to {method}: {other:?}"),
            }
        }
        panic!("no reply to {method} within 10 s");
    }
}
