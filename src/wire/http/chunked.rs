//! Incremental decoder for `Transfer-Encoding: chunked` bodies (request and response side). Every byte it reads is
//! bounded: the decoded size (the caller's limit), the raw bytes including framing ([`raw_limit`]), the extension
//! bytes of one chunk ([`MAX_CHUNK_EXTENSION_BYTES`]) and the trailer section ([`MAX_TRAILERS`],
//! [`MAX_TRAILER_BYTES`]). Chunk sizes are strict hex digits; lines end with CRLF, and a bare CR or LF is refused.

/// Why a chunked body is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// Bad framing: a size that is not plain hex, a bare CR or LF, a too long extension (400).
    #[error("malformed chunked encoding")]
    Malformed,
    /// Over a size bound: decoded bytes, raw bytes, trailer count or trailer bytes (413).
    #[error("chunked body exceeds the limit")]
    TooLarge,
}

/// Extension bytes (everything after `;` on a size line) accepted per chunk.
pub const MAX_CHUNK_EXTENSION_BYTES: usize = 1024;
/// Hex digits accepted in a chunk size (15 digits keep the size below 2^60).
const MAX_CHUNK_SIZE_DIGITS: usize = 15;
/// Trailer fields accepted after the last chunk.
pub const MAX_TRAILERS: usize = 32;
/// Bytes accepted in the whole trailer section (its lines, CRLFs included), like the header bound.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Fixed framing allowance on top of the decoded limit (size lines of small bodies, trailers).
pub const FRAMING_ALLOWANCE_BYTES: usize = 64 * 1024;

/// Raw bytes (data plus framing) a chunked body with a decoded `limit` may take: the limit, a quarter on top for
/// size lines and extensions, and [`FRAMING_ALLOWANCE_BYTES`].
pub fn raw_limit(limit: usize) -> usize {
    limit
        .saturating_add(limit / 4)
        .saturating_add(FRAMING_ALLOWANCE_BYTES)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked body fed in pieces.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    limit: usize,
    raw_limit: usize,
    raw_consumed: usize,
    trailers: usize,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder whose decoded output may reach `limit` bytes (raw input: [`raw_limit`]`(limit)`).
    pub fn new(limit: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            limit,
            raw_limit: raw_limit(limit),
            raw_consumed: 0,
            trailers: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible into `out`; returns bytes consumed. Call again with more input
    /// (starting at the first unconsumed byte) until [`is_done`](Self::is_done).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let result = self.decode_inner(input, out);
        if let Ok(pos) = result {
            self.raw_consumed += pos;
            // Bytes consumed plus bytes waiting for their line end: what the caller holds for this body.
            let pending = if self.is_done() { 0 } else { input.len() - pos };
            if self.raw_consumed.saturating_add(pending) > self.raw_limit {
                return Err(ChunkedError::TooLarge);
            }
        }
        result
    }

    fn decode_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok(pos),
                State::Size => {
                    let max_line = MAX_CHUNK_SIZE_DIGITS + 1 + MAX_CHUNK_EXTENSION_BYTES;
                    let Some(line) = next_line(&input[pos..], max_line)? else {
                        return Ok(pos);
                    };
                    pos += line.len() + 2;
                    let size = parse_size_line(line)?;
                    if size == 0 {
                        self.state = State::Trailers;
                    } else {
                        if size > self.limit.saturating_sub(out.len()) {
                            return Err(ChunkedError::TooLarge);
                        }
                        self.state = State::Data(size);
                    }
                }
                State::Data(remaining) => {
                    let take = remaining.min(input.len() - pos);
                    if take == 0 {
                        return Ok(pos);
                    }
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    self.state = if take == remaining {
                        State::DataEnd
                    } else {
                        State::Data(remaining - take)
                    };
                }
                State::DataEnd => {
                    if input.len() - pos < 2 {
                        return Ok(pos);
                    }
                    if &input[pos..pos + 2] != b"\r\n" {
                        return Err(ChunkedError::Malformed);
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    let room = MAX_TRAILER_BYTES - self.trailer_bytes;
                    let line = match next_line(&input[pos..], room) {
                        Ok(Some(line)) => line,
                        Ok(None) => return Ok(pos),
                        Err(ChunkedError::Malformed) if input.len() - pos > room => {
                            return Err(ChunkedError::TooLarge);
                        }
                        Err(e) => return Err(e),
                    };
                    pos += line.len() + 2;
                    if line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    self.trailers += 1;
                    self.trailer_bytes += line.len() + 2;
                    if self.trailers > MAX_TRAILERS || self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(ChunkedError::TooLarge);
                    }
                }
            }
        }
    }
}

/// The next CRLF-terminated line of `data` (without its CRLF); `None` while incomplete. A bare CR or LF, or a line
/// longer than `max_line` bytes, is malformed.
fn next_line(data: &[u8], max_line: usize) -> Result<Option<&[u8]>, ChunkedError> {
    let window = &data[..data.len().min(max_line + 2)];
    match memchr::memchr(b'\n', window) {
        Some(lf) => {
            if lf == 0 || window[lf - 1] != b'\r' {
                return Err(ChunkedError::Malformed);
            }
            let line = &window[..lf - 1];
            if memchr::memchr(b'\r', line).is_some() {
                return Err(ChunkedError::Malformed);
            }
            Ok(Some(line))
        }
        None => {
            // A CR may only be the last byte seen so far (its LF still to come).
            let cr_ok = match memchr::memchr(b'\r', window) {
                None => true,
                Some(cr) => cr + 1 == data.len(),
            };
            if !cr_ok || data.len() > max_line + 1 {
                return Err(ChunkedError::Malformed);
            }
            Ok(None)
        }
    }
}

/// The size of a chunk from its size line: 1 to 15 hex digits, optional spaces or tabs, then an optional
/// `;extension` of at most [`MAX_CHUNK_EXTENSION_BYTES`]. No sign, no `0x`, no leading whitespace.
fn parse_size_line(line: &[u8]) -> Result<usize, ChunkedError> {
    let (size_part, extension) = match memchr::memchr(b';', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if extension.len() > MAX_CHUNK_EXTENSION_BYTES {
        return Err(ChunkedError::Malformed);
    }
    let digits_end = size_part
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(size_part.len());
    let (digits, rest) = size_part.split_at(digits_end);
    if digits.is_empty()
        || digits.len() > MAX_CHUNK_SIZE_DIGITS
        || !rest.iter().all(|&b| b == b' ' || b == b'\t')
    {
        return Err(ChunkedError::Malformed);
    }
    digits.iter().try_fold(0usize, |acc, &b| {
        let digit = (b as char).to_digit(16).ok_or(ChunkedError::Malformed)? as usize;
        Ok(acc << 4 | digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<Vec<u8>, ChunkedError> {
        let mut dec = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut fed = Vec::new();
        let mut consumed = 0;
        for chunk in input.chunks(piece) {
            fed.extend_from_slice(chunk);
            consumed += dec.decode(&fed[consumed..], &mut out)?;
        }
        assert!(dec.is_done(), "not done");
        assert_eq!(consumed, input.len());
        Ok(out)
    }

    #[test]
    fn decodes_table_in_any_split() {
        let rows: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
                b"abcde",
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        ];
        for (input, expected) in rows {
            for piece in [1, 2, 3, 7, 100] {
                assert_eq!(
                    decode_in_pieces(input, piece).unwrap(),
                    *expected,
                    "piece {piece}"
                );
            }
        }
    }

    fn decode_once(limit: usize, input: &[u8]) -> Result<(Vec<u8>, bool), ChunkedError> {
        let mut dec = ChunkedDecoder::new(limit);
        let mut out = Vec::new();
        dec.decode(input, &mut out)?;
        Ok((out, dec.is_done()))
    }

    #[test]
    fn rejects_malformed_and_oversized() {
        let malformed: &[&[u8]] = &[
            b"zz\r\n",
            b"3\r\nabcX\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5g\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"1000000000000000\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: 1\n\r\n",
            b"5\r\nhello\r\n0\r\nX: \r1\r\n\r\n",
        ];
        for raw in malformed {
            assert_eq!(
                decode_once(100, raw),
                Err(ChunkedError::Malformed),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            decode_once(4, b"5\r\nhello\r\n"),
            Err(ChunkedError::TooLarge)
        );
        // Spaces before the extension are allowed (RFC 9112 BWS); an extension of exactly the bound too.
        let ext = "e".repeat(MAX_CHUNK_EXTENSION_BYTES - 1);
        let ok = format!("5 \t;{ext}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            decode_once(100, ok.as_bytes()),
            Ok((b"hello".to_vec(), true))
        );
        let long = format!("5;{ext}ee\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            decode_once(100, long.as_bytes()),
            Err(ChunkedError::Malformed)
        );
        // A size line without its end, longer than any valid one, fails before more is read.
        assert_eq!(
            decode_once(100, &[b'1'; 2048]),
            Err(ChunkedError::Malformed)
        );
    }

    #[test]
    fn bounds_trailers_by_count_and_bytes() {
        let at_count = format!("0\r\n{}\r\n", "X: 1\r\n".repeat(MAX_TRAILERS));
        assert_eq!(decode_once(100, at_count.as_bytes()), Ok((vec![], true)));
        let over_count = format!("0\r\n{}\r\n", "X: 1\r\n".repeat(MAX_TRAILERS + 1));
        assert_eq!(
            decode_once(100, over_count.as_bytes()),
            Err(ChunkedError::TooLarge)
        );
        let big_line = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILER_BYTES));
        assert_eq!(
            decode_once(100, big_line.as_bytes()),
            Err(ChunkedError::TooLarge)
        );
        // Fed in pieces, an endless trailer line stops at the bound too.
        let mut dec = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        let mut fed = b"0\r\nX: ".to_vec();
        let mut consumed = 0;
        let err = loop {
            match dec.decode(&fed[consumed..], &mut out) {
                Ok(n) => consumed += n,
                Err(e) => break e,
            }
            assert!(fed.len() <= MAX_TRAILER_BYTES + 4096, "never stopped");
            fed.extend_from_slice(&[b'v'; 512]);
        };
        assert_eq!(err, ChunkedError::TooLarge);
    }

    #[test]
    fn bounds_raw_bytes_with_framing() {
        // One-byte chunks with 1000-byte extensions: 10 decoded bytes per ~10 KB raw is far over raw_limit(10).
        let ext = "e".repeat(1000);
        let mut raw = String::new();
        for _ in 0..100 {
            raw.push_str(&format!("1;{ext}\r\nx\r\n"));
        }
        assert!(raw.len() > raw_limit(100));
        assert_eq!(
            decode_once(100, raw.as_bytes()),
            Err(ChunkedError::TooLarge)
        );
        // Pipelined bytes after a finished body do not count.
        let mut pipelined = b"1\r\nx\r\n0\r\n\r\n".to_vec();
        pipelined.extend_from_slice(&vec![b'G'; raw_limit(1) + 1]);
        assert_eq!(decode_once(1, &pipelined), Ok((b"x".to_vec(), true)));
    }
}
