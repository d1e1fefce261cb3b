//! The little of RESP2 (the Redis protocol) Lasso speaks: commands as arrays of bulk strings, and the replies to
//! AUTH, SELECT, GET, SET and PING (simple strings, errors, integers, bulk strings). A bulk reply larger than the
//! caller's bound is refused before it is read, so a Redis answer never grows a buffer past it.

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    /// `None` is the nil bulk string (`$-1`): a missing key.
    Bulk(Option<Vec<u8>>),
}

/// Why a reply could not be parsed: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Malformed,
    TooLarge,
}

/// Appends the command `args` to `out`.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first reply in `buf` and the bytes it took, `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8], max_bulk: usize) -> Result<Option<(Reply, usize)>, ParseError> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        // A header line is short: a long one without its end is not RESP.
        return if buf.len() > 64 {
            Err(ParseError::Malformed)
        } else {
            Ok(None)
        };
    };
    if line_end == 0 {
        return Err(ParseError::Malformed);
    }
    let line = &buf[1..line_end];
    let after = line_end + 2;
    let number = || -> Result<i64, ParseError> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(ParseError::Malformed)
    };
    match buf[0] {
        b'+' => Ok(Some((Reply::Simple(line.to_vec()), after))),
        b'-' => Ok(Some((Reply::Error(line.to_vec()), after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'$' => {
            let n = number()?;
            if n == -1 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            if n < 0 {
                return Err(ParseError::Malformed);
            }
            let n = n as usize;
            if n > max_bulk {
                return Err(ParseError::TooLarge);
            }
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err(ParseError::Malformed);
            }
            Ok(Some((
                Reply::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )))
        }
        _ => Err(ParseError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_command() {
        let mut out = Vec::new();
        encode(&[b"GET", b"k"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn parses_replies_in_pieces() {
        assert_eq!(
            parse(b"+OK\r\n", 10),
            Ok(Some((Reply::Simple(b"OK".to_vec()), 5)))
        );
        assert_eq!(parse(b"$-1\r\n", 10), Ok(Some((Reply::Bulk(None), 5))));
        assert_eq!(parse(b"$3\r\nab", 10), Ok(None));
        assert_eq!(
            parse(b"$3\r\nabc\r\n+OK\r\n", 10),
            Ok(Some((Reply::Bulk(Some(b"abc".to_vec())), 9)))
        );
        assert_eq!(parse(b":12\r\n", 10), Ok(Some((Reply::Int(12), 5))));
        assert_eq!(
            parse(b"-ERR no\r\n", 10),
            Ok(Some((Reply::Error(b"ERR no".to_vec()), 9)))
        );
        assert_eq!(parse(b"$", 10), Ok(None));
    }

    #[test]
    fn refuses_large_and_malformed_replies() {
        assert_eq!(parse(b"$11\r\n", 10), Err(ParseError::TooLarge));
        assert_eq!(parse(b"?x\r\n", 10), Err(ParseError::Malformed));
        assert_eq!(parse(b"$3\r\nabcd\r\n", 10), Err(ParseError::Malformed));
        assert_eq!(parse(&[b'+'; 100], 10), Err(ParseError::Malformed));
    }
}
