//! Incremental checks for a single JSON-RPC reply passed on while it arrives (a streamed answer): [`reply_head`]
//! reads the envelope's head (`{"jsonrpc":"2.0","id":N,"result":` with `jsonrpc` and `id` in either order, each once,
//! before `result`), and [`TailScanner`] follows the `result` value byte by byte (strings, escapes, nesting of
//! objects and arrays, bounded depth) to verify that the reply object ends exactly once and that nothing but
//! whitespace follows it. A reply in any other shape (an `error`, `result` not last, other members, escaped keys) is
//! not streamed: its caller buffers it and judges it whole, as every other answer.

use std::ops::Range;

use crate::wire::jsonrpc::MAX_REPLY_DEPTH;

/// Where a streamable reply's head puts things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHead {
    /// The raw `id` value.
    pub id: Range<usize>,
    /// Where the `result` value starts (after `"result":` and whitespace).
    pub value_start: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// Reads the head of a reply whose `result` member comes after `jsonrpc` and `id`; `None` when `prefix` does not hold
/// such a head (another shape, an `error`, or too few bytes).
pub fn reply_head(prefix: &[u8]) -> Option<ReplyHead> {
    let mut i = skip_ws(prefix, 0);
    if prefix.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut id = None;
    let mut version = false;
    loop {
        i = skip_ws(prefix, i);
        // A key without escapes.
        if prefix.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i + 1;
        let key_end = key_start + memchr::memchr2(b'"', b'\\', prefix.get(key_start..)?)?;
        if prefix[key_end] != b'"' {
            return None;
        }
        let key = &prefix[key_start..key_end];
        i = skip_ws(prefix, key_end + 1);
        if prefix.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(prefix, i + 1);
        match key {
            b"jsonrpc" if !version => {
                if !prefix.get(i..)?.starts_with(b"\"2.0\"") {
                    return None;
                }
                version = true;
                i += 5;
            }
            b"id" if id.is_none() => {
                // Upstream ids are unsigned integers (ours).
                let start = i;
                while i < prefix.len() && prefix[i].is_ascii_digit() {
                    i += 1;
                }
                if i == start || i >= prefix.len() {
                    return None;
                }
                id = Some(start..i);
            }
            b"result" if version => {
                let id = id?;
                if i >= prefix.len() {
                    return None;
                }
                return Some(ReplyHead { id, value_start: i });
            }
            _ => return None,
        }
        i = skip_ws(prefix, i);
        if prefix.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

/// Where the scanner is in the reply after the `result` value started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first byte of the value.
    Value,
    /// Inside a string (`escape`: the previous byte was a backslash).
    Str { escape: bool },
    /// Inside a number or literal at the top level.
    Scalar,
    /// Inside an object or array, outside strings.
    Nested,
    /// The value ended: only whitespace and the closing `}` may follow.
    AfterValue,
    /// The reply object is closed: only whitespace may follow.
    Closed,
}

/// Why a streamed reply is not what its head promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TailError {
    #[error("data after the reply object")]
    Trailing,
    #[error("malformed reply value")]
    Malformed,
    #[error("reply nested too deeply")]
    TooDeep,
    #[error("reply object not closed")]
    Unfinished,
}

/// Follows a streamed `result` value and the end of its reply object.
#[derive(Debug)]
pub struct TailScanner {
    state: State,
    /// Open containers, innermost last: `true` for an object.
    open: Vec<bool>,
}

impl Default for TailScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl TailScanner {
    /// A scanner positioned at the start of the `result` value.
    pub fn new() -> Self {
        TailScanner {
            state: State::Value,
            open: Vec::new(),
        }
    }

    /// Scans the next bytes of the reply.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), TailError> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Str { escape } => {
                    if escape {
                        self.state = State::Str { escape: false };
                        i += 1;
                        continue;
                    }
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        None => return Ok(()),
                        Some(k) if bytes[i + k] == b'\\' => {
                            self.state = State::Str { escape: true };
                            i += k + 1;
                        }
                        Some(k) => {
                            self.state = if self.open.is_empty() {
                                State::AfterValue
                            } else {
                                State::Nested
                            };
                            i += k + 1;
                        }
                    }
                }
                State::Nested => {
                    let b = bytes[i];
                    i += 1;
                    match b {
                        b'"' => self.state = State::Str { escape: false },
                        b'{' | b'[' => self.push(b == b'{')?,
                        b'}' | b']' => {
                            if self.open.pop() != Some(b == b'}') {
                                return Err(TailError::Malformed);
                            }
                            if self.open.is_empty() {
                                self.state = State::AfterValue;
                            }
                        }
                        _ => {}
                    }
                }
                State::Value => {
                    let b = bytes[i];
                    i += 1;
                    match b {
                        b if is_ws(b) => {}
                        b'"' => self.state = State::Str { escape: false },
                        b'{' | b'[' => {
                            self.push(b == b'{')?;
                            self.state = State::Nested;
                        }
                        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.state = State::Scalar,
                        _ => return Err(TailError::Malformed),
                    }
                }
                State::Scalar => {
                    let b = bytes[i];
                    i += 1;
                    match b {
                        b'0'..=b'9' | b'a'..=b'z' | b'E' | b'+' | b'-' | b'.' => {}
                        b if is_ws(b) => self.state = State::AfterValue,
                        b'}' => self.state = State::Closed,
                        _ => return Err(TailError::Malformed),
                    }
                }
                State::AfterValue => {
                    let b = bytes[i];
                    i += 1;
                    match b {
                        b if is_ws(b) => {}
                        b'}' => self.state = State::Closed,
                        // Another member after `result` (or anything else): not the shape that was streamed.
                        _ => return Err(TailError::Malformed),
                    }
                }
                State::Closed => {
                    if bytes[i..].iter().any(|&b| !is_ws(b)) {
                        return Err(TailError::Trailing);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, object: bool) -> Result<(), TailError> {
        if self.open.len() >= MAX_REPLY_DEPTH {
            return Err(TailError::TooDeep);
        }
        self.open.push(object);
        Ok(())
    }

    /// Checks that the reply ended: the object closed.
    pub fn finish(&self) -> Result<(), TailError> {
        if self.state == State::Closed {
            Ok(())
        } else {
            Err(TailError::Unfinished)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(reply: &[u8], split: usize) -> Result<(), TailError> {
        let head = reply_head(reply).expect("head");
        let mut s = TailScanner::new();
        let rest = &reply[head.value_start..];
        let split = split.min(rest.len());
        s.feed(&rest[..split])?;
        s.feed(&rest[split..])?;
        s.finish()
    }

    #[test]
    fn heads_that_stream_and_heads_that_do_not() {
        let r = br#" {"jsonrpc":"2.0","id":17,"result":"0xab"}"#;
        let h = reply_head(r).unwrap();
        assert_eq!(&r[h.id.clone()], b"17");
        assert_eq!(r[h.value_start], b'"');
        let r = br#"{ "id" : 3 , "jsonrpc" : "2.0" , "result" : [1]}"#;
        assert!(reply_head(r).is_some());
        for no in [
            &br#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#[..],
            br#"{"jsonrpc":"2.0","result":"0x","id":1}"#,
            br#"{"jsonrpc":"1.0","id":1,"result":"0x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"id":2,"result":"0x"}"#,
            br#"{"jsonrpc":"2.0","id":"1","result":"0x"}"#,
            br#"{"jsonrpc":"2.0","i\"d":1,"result":"0x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"extra":1,"result":"0x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"res"#,
            br#"{"id":1,"result":"0x"}"#,
            br#"[{"jsonrpc":"2.0","id":1,"result":"0x"}]"#,
        ] {
            assert_eq!(reply_head(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn tails_are_verified_at_every_split() {
        let good: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"result":"0x\"}{\\"}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":[{"a":"]}"},[]]} "#,
            br#"{"jsonrpc":"2.0","id":1,"result":12}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":null }"#,
        ];
        let bad: &[(&[u8], TailError)] = &[
            (
                br#"{"jsonrpc":"2.0","id":1,"result":"0x"}{"jsonrpc":"2.0","id":1,"result":"0xforged"}"#,
                TailError::Trailing,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":"0x","id":2}"#,
                TailError::Malformed,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":[1}}"#,
                TailError::Malformed,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":"0x"#,
                TailError::Unfinished,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":[[1]]"#,
                TailError::Unfinished,
            ),
        ];
        for reply in good {
            for split in 0..reply.len() {
                assert_eq!(
                    scan(reply, split),
                    Ok(()),
                    "{} at {split}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
        for (reply, why) in bad {
            for split in 0..reply.len() {
                assert_eq!(
                    scan(reply, split),
                    Err(*why),
                    "{} at {split}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut s = TailScanner::new();
        let deep = vec![b'['; MAX_REPLY_DEPTH + 1];
        assert_eq!(s.feed(&deep), Err(TailError::TooDeep));
    }
}
