//! Incremental decoder for `Transfer-Encoding: chunked` bodies (request and response side), with a size bound.

/// Why a chunked body is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("malformed chunked encoding")]
    Malformed,
    #[error("chunked body exceeds the limit")]
    TooLarge,
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
}

impl ChunkedDecoder {
    pub fn new(limit: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            limit,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible into `out`; returns bytes consumed. Call again with more input
    /// (starting at the first unconsumed byte) until [`is_done`](Self::is_done).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok(pos),
                State::Size => {
                    let Some(eol) = find_crlf(&input[pos..]) else {
                        if input.len() - pos > 1024 {
                            return Err(ChunkedError::Malformed);
                        }
                        return Ok(pos);
                    };
                    let line = &input[pos..pos + eol];
                    let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
                    let hex = std::str::from_utf8(hex)
                        .map_err(|_| ChunkedError::Malformed)?
                        .trim();
                    if hex.is_empty() || hex.len() > 15 {
                        return Err(ChunkedError::Malformed);
                    }
                    let size =
                        usize::from_str_radix(hex, 16).map_err(|_| ChunkedError::Malformed)?;
                    pos += eol + 2;
                    if size == 0 {
                        self.state = State::Trailers;
                    } else {
                        if out.len() + size > self.limit {
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
                    let Some(eol) = find_crlf(&input[pos..]) else {
                        if input.len() - pos > 8192 {
                            return Err(ChunkedError::Malformed);
                        }
                        return Ok(pos);
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
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

    #[test]
    fn rejects_malformed_and_oversized() {
        let mut out = Vec::new();
        assert_eq!(
            ChunkedDecoder::new(100).decode(b"zz\r\n", &mut out),
            Err(ChunkedError::Malformed)
        );
        assert_eq!(
            ChunkedDecoder::new(100).decode(b"3\r\nabcX\r\n", &mut out),
            Err(ChunkedError::Malformed)
        );
        assert_eq!(
            ChunkedDecoder::new(4).decode(b"5\r\nhello\r\n", &mut out),
            Err(ChunkedError::TooLarge)
        );
    }
}
