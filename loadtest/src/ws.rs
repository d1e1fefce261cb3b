//! A small RFC 6455 WebSocket codec for both sides: the opening handshake (Sec-WebSocket-Accept = base64(SHA-1(key +
//! GUID))), frame encoding (clients mask, servers do not), incremental frame decoding, and message assembly across
//! continuation frames with control frames (ping/pong/close) interleaved. No extensions (no permessage-deflate).

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::rng::Rng;

/// The GUID of RFC 6455 section 1.3.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh random Sec-WebSocket-Key (16 random bytes, base64).
pub fn random_key(rng: &mut Rng) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The client's opening handshake request.
pub fn client_handshake(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The server's 101 answer to a handshake with `key`.
pub fn server_handshake(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
}

/// Appends one frame (FIN set) to `out`; `mask` is required from clients and forbidden from servers.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(mask_bit | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.extend_from_slice(payload),
    }
}

/// A frame for a close with a status code.
pub fn encode_close(out: &mut Vec<u8>, code: u16, mask: Option<[u8; 4]>) {
    encode_frame(out, OP_CLOSE, &code.to_be_bytes(), mask);
}

/// XORs `data` with the 4-byte `mask` (its own inverse).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// One decoded frame (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError(pub String);

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "websocket: {}", self.0)
    }
}

impl std::error::Error for WsError {}

/// Decodes one frame from the start of `buf`: `Ok(Some((frame, consumed)))`, `Ok(None)` if more bytes are needed.
/// `expect_masked`: servers require masked client frames (true), clients require unmasked server frames (false).
pub fn decode_frame(
    buf: &[u8],
    max_payload: usize,
    expect_masked: bool,
) -> Result<Option<(Frame, usize)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(WsError(
            "reserved bits set (no extension negotiated)".into(),
        ));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    if masked != expect_masked {
        return Err(WsError(if expect_masked {
            "client frame not masked".into()
        } else {
            "server frame masked".into()
        }));
    }
    let mut pos = 2;
    let len = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            pos = 4;
            u16::from_be_bytes([buf[2], buf[3]]) as u64
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            pos = 10;
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"))
        }
        n => n as u64,
    };
    if opcode >= 0x8 && (len > 125 || !fin) {
        return Err(WsError("bad control frame".into()));
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WsError(format!("unknown opcode {opcode:#x}")));
    }
    if len > max_payload as u64 {
        return Err(WsError(format!("frame of {len} bytes over the limit")));
    }
    let len = len as usize;
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < pos + len {
        return Ok(None);
    }
    let mut payload = buf[pos..pos + len].to_vec();
    if let Some(m) = mask {
        apply_mask(&mut payload, m);
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        pos + len,
    )))
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
}

/// Joins continuation frames into messages; control frames pass through immediately.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: Option<(u8, Vec<u8>)>,
    max_message: usize,
}

impl Assembler {
    pub fn new(max_message: usize) -> Self {
        Assembler {
            partial: None,
            max_message,
        }
    }

    pub fn push(&mut self, f: Frame) -> Result<Option<Message>, WsError> {
        match f.opcode {
            OP_PING => Ok(Some(Message::Ping(f.payload))),
            OP_PONG => Ok(Some(Message::Pong(f.payload))),
            OP_CLOSE => {
                let code = (f.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                Ok(Some(Message::Close(code)))
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(WsError("new data frame inside a fragmented message".into()));
                }
                if f.fin {
                    Ok(Some(if f.opcode == OP_TEXT {
                        Message::Text(f.payload)
                    } else {
                        Message::Binary(f.payload)
                    }))
                } else {
                    self.partial = Some((f.opcode, f.payload));
                    Ok(None)
                }
            }
            _ => {
                let Some((op, mut data)) = self.partial.take() else {
                    return Err(WsError("continuation without a message".into()));
                };
                if data.len() + f.payload.len() > self.max_message {
                    return Err(WsError("message over the limit".into()));
                }
                data.extend_from_slice(&f.payload);
                if f.fin {
                    Ok(Some(if op == OP_TEXT {
                        Message::Text(data)
                    } else {
                        Message::Binary(data)
                    }))
                } else {
                    self.partial = Some((op, data));
                    Ok(None)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn roundtrip_masked_and_unmasked_all_lengths() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = Vec::new();
                encode_frame(&mut out, OP_TEXT, &payload, mask);
                out.extend_from_slice(b"rest");
                let (f, used) = decode_frame(&out, 1 << 20, mask.is_some())
                    .unwrap()
                    .unwrap();
                assert_eq!(f.payload, payload);
                assert!(f.fin);
                assert_eq!(&out[used..], b"rest");
                // Every prefix is incomplete, never an error.
                assert!(
                    decode_frame(&out[..used - 1], 1 << 20, mask.is_some())
                        .unwrap()
                        .is_none()
                );
            }
        }
    }

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 section 5.7: a masked "Hello".
        let raw = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (f, _) = decode_frame(&raw, 1024, true).unwrap().unwrap();
        assert_eq!(f.payload, b"Hello");
        assert!(decode_frame(&raw, 1024, false).is_err());
    }

    #[test]
    fn assembles_fragments_around_ping() {
        let mut a = Assembler::new(1 << 20);
        assert_eq!(
            a.push(Frame {
                fin: false,
                opcode: OP_TEXT,
                payload: b"Hel".to_vec()
            })
            .unwrap(),
            None
        );
        assert_eq!(
            a.push(Frame {
                fin: true,
                opcode: OP_PING,
                payload: b"p".to_vec()
            })
            .unwrap(),
            Some(Message::Ping(b"p".to_vec()))
        );
        assert_eq!(
            a.push(Frame {
                fin: true,
                opcode: OP_CONTINUATION,
                payload: b"lo".to_vec()
            })
            .unwrap(),
            Some(Message::Text(b"Hello".to_vec()))
        );
        assert_eq!(
            a.push(Frame {
                fin: true,
                opcode: OP_CLOSE,
                payload: 1000u16.to_be_bytes().to_vec()
            })
            .unwrap(),
            Some(Message::Close(Some(1000)))
        );
    }
}
