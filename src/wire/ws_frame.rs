//! RFC 6455 framing: decoding frames from a byte buffer (enforcing masking direction, size limits and control-frame
//! rules), reassembling fragmented messages, and encoding frames (masked for the client side). Close codes the proxy
//! uses live here too.

/// Close codes (RFC 6455 section 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One decoded frame (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A protocol violation, with the close code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (close {code})")]
pub struct FrameError {
    pub code: u16,
    pub reason: String,
}

fn violation(code: u16, reason: impl Into<String>) -> FrameError {
    FrameError {
        code,
        reason: reason.into(),
    }
}

/// Decodes one frame from the start of `buf`. `Ok(None)` = need more bytes; otherwise the frame and bytes used.
/// `expect_masked`: frames from clients must be masked, frames from servers must not.
pub fn decode(
    buf: &[u8],
    max_payload: usize,
    expect_masked: bool,
) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(violation(
            close::PROTOCOL_ERROR,
            "reserved bits set (no extension negotiated)",
        ));
    }
    let opcode = buf[0] & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(violation(
            close::PROTOCOL_ERROR,
            format!("unknown opcode {opcode:#x}"),
        ));
    }
    let masked = buf[1] & 0x80 != 0;
    if masked != expect_masked {
        return Err(violation(
            close::PROTOCOL_ERROR,
            if expect_masked {
                "client frames must be masked"
            } else {
                "server frames must not be masked"
            },
        ));
    }
    let (len, mut pos) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(violation(close::PROTOCOL_ERROR, "fragmented control frame"));
        }
        if len > 125 {
            return Err(violation(
                close::PROTOCOL_ERROR,
                "control frame payload over 125 bytes",
            ));
        }
    }
    if len > max_payload as u64 {
        return Err(violation(
            close::TOO_BIG,
            format!("frame of {len} bytes exceeds the limit of {max_payload}"),
        ));
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

/// XORs `data` with the 4-byte mask.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends a frame to `out`; masked with `mask` when given (client side).
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
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

/// A close frame's payload: code and reason (truncated to fit a control frame).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    let mut r = reason.as_bytes();
    if r.len() > 120 {
        r = &r[..120];
    }
    p.extend_from_slice(r);
    p
}

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// Reassembles fragmented data messages; control frames pass straight through.
#[derive(Debug)]
pub struct Assembler {
    max_message: usize,
    partial: Option<(u8, Vec<u8>)>,
}

impl Assembler {
    pub fn new(max_message: usize) -> Self {
        Assembler {
            max_message,
            partial: None,
        }
    }

    pub fn push(&mut self, frame: Frame) -> Result<Option<Message>, FrameError> {
        match frame.opcode {
            OP_PING => Ok(Some(Message::Ping(frame.payload))),
            OP_PONG => Ok(Some(Message::Pong(frame.payload))),
            OP_CLOSE => {
                let p = frame.payload;
                if p.len() == 1 {
                    return Err(violation(
                        close::PROTOCOL_ERROR,
                        "close payload of one byte",
                    ));
                }
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into_owned();
                Ok(Some(Message::Close(code, reason)))
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(violation(
                        close::PROTOCOL_ERROR,
                        "new message before the previous one finished",
                    ));
                }
                if frame.fin {
                    return Ok(Some(Self::finish(frame.opcode, frame.payload)?));
                }
                self.partial = Some((frame.opcode, frame.payload));
                Ok(None)
            }
            _ => {
                let Some((opcode, mut data)) = self.partial.take() else {
                    return Err(violation(
                        close::PROTOCOL_ERROR,
                        "continuation without a message",
                    ));
                };
                if data.len() + frame.payload.len() > self.max_message {
                    return Err(violation(
                        close::TOO_BIG,
                        format!("message exceeds the limit of {}", self.max_message),
                    ));
                }
                data.extend_from_slice(&frame.payload);
                if frame.fin {
                    Ok(Some(Self::finish(opcode, data)?))
                } else {
                    self.partial = Some((opcode, data));
                    Ok(None)
                }
            }
        }
    }

    fn finish(opcode: u8, data: Vec<u8>) -> Result<Message, FrameError> {
        if opcode == OP_TEXT {
            if std::str::from_utf8(&data).is_err() {
                return Err(violation(
                    close::INVALID_PAYLOAD,
                    "text message is not UTF-8",
                ));
            }
            Ok(Message::Text(data))
        } else {
            Ok(Message::Binary(data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_frames_of_every_length_class() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = Vec::new();
                encode(&mut out, OP_TEXT, &payload, mask);
                let (frame, used) = decode(&out, 1 << 20, mask.is_some()).unwrap().unwrap();
                assert_eq!(used, out.len());
                assert_eq!(frame.payload, payload, "len {len} mask {mask:?}");
                assert!(
                    decode(&out[..out.len() - 1], 1 << 20, mask.is_some())
                        .unwrap()
                        .is_none()
                        || len == 0
                );
            }
        }
    }

    #[test]
    fn rejects_violations_table() {
        let rows: &[(&[u8], bool, u16)] = &[
            (
                &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
                true,
                close::PROTOCOL_ERROR,
            ),
            (
                &[0x81, 0x85, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'],
                false,
                close::PROTOCOL_ERROR,
            ),
            (&[0xC1, 0x80, 0, 0, 0, 0], true, close::PROTOCOL_ERROR),
            (&[0x83, 0x80, 0, 0, 0, 0], true, close::PROTOCOL_ERROR),
            (&[0x09, 0x80, 0, 0, 0, 0], true, close::PROTOCOL_ERROR),
            (
                &[0x81, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0],
                true,
                close::TOO_BIG,
            ),
        ];
        for (bytes, masked, code) in rows {
            let err = decode(bytes, 1024, *masked).unwrap_err();
            assert_eq!(err.code, *code, "{bytes:?}: {err}");
        }
    }

    #[test]
    fn assembles_fragments_and_checks_utf8() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(Frame {
                fin: false,
                opcode: OP_TEXT,
                payload: b"he".to_vec()
            })
            .unwrap(),
            None
        );
        assert_eq!(
            a.push(Frame {
                fin: false,
                opcode: OP_PING,
                payload: vec![]
            })
            .unwrap(),
            Some(Message::Ping(vec![]))
        );
        assert_eq!(
            a.push(Frame {
                fin: true,
                opcode: OP_CONTINUATION,
                payload: b"llo".to_vec()
            })
            .unwrap(),
            Some(Message::Text(b"hello".to_vec()))
        );
        assert!(
            a.push(Frame {
                fin: true,
                opcode: OP_TEXT,
                payload: vec![0xff, 0xfe]
            })
            .is_err()
        );
        let mut b = Assembler::new(4);
        b.push(Frame {
            fin: false,
            opcode: OP_TEXT,
            payload: b"abc".to_vec(),
        })
        .unwrap();
        assert_eq!(
            b.push(Frame {
                fin: true,
                opcode: OP_CONTINUATION,
                payload: b"de".to_vec()
            })
            .unwrap_err()
            .code,
            close::TOO_BIG
        );
    }
}
