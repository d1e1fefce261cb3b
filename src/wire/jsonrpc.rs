//! Lazy JSON-RPC inspection and byte splicing. Requests and replies are looked at with sonic-rs's validating lazy
//! iterators: only the members the proxy needs (`jsonrpc`, `method`, `id`, `params`, `result`/`error`) are located, as
//! byte ranges into the original buffer. Ids are rewritten by splicing bytes, never by re-serialising a document.

use std::borrow::Cow;
use std::ops::Range;

use sonic_rs::{JsonType, JsonValueTrait};

use crate::error::RpcError;

/// One JSON-RPC call as located inside a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView<'a> {
    /// The method name (unescaped).
    pub method: Cow<'a, str>,
    /// Byte range of the `id` value; `None` for a notification.
    pub id: Option<Range<usize>>,
    /// Byte range of the `params` value, when present.
    pub params: Option<Range<usize>>,
    /// Byte range of the whole call object.
    pub span: Range<usize>,
}

impl CallView<'_> {
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }
}

/// A member of a batch that is not a valid call: its error, and its raw id when one could be read.
#[derive(Debug, Clone)]
pub struct InvalidCall {
    pub error: RpcError,
    pub id: Option<Range<usize>>,
}

/// A request body: one call, or a batch whose members are each valid or not.
#[derive(Debug)]
pub enum RequestBody<'a> {
    Single(CallView<'a>),
    Batch(Vec<Result<CallView<'a>, InvalidCall>>),
}

fn offset_of(base: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

fn skip_ws(body: &[u8], mut pos: usize) -> usize {
    while pos < body.len() && matches!(body[pos], b' ' | b'\t' | b'\r' | b'\n') {
        pos += 1;
    }
    pos
}

/// The offset of the first backslash that does not start a JSON escape (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
/// or `\u` and four hex digits), if any. The JSON parser skips strings without checking `\u`'s digits: it reads
/// `"\u12"]` as an escape swallowing the quote, where another parser ends the string or refuses the body, so such a
/// request is refused here rather than forwarded to a provider that may read it differently.
fn invalid_escape(body: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(k) = memchr::memchr(b'\\', &body[pos..]) {
        let at = pos + k;
        pos = match body.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at + 2,
            Some(b'u')
                if body
                    .get(at + 2..at + 6)
                    .is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) =>
            {
                at + 6
            }
            _ => return Some(at),
        };
    }
    None
}

/// What a structural scan found at one position of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayElement<'a> {
    /// The element's raw bytes, surrounding whitespace trimmed.
    Found(&'a [u8]),
    /// The array is shorter, or the value is not an array.
    Missing,
    /// An escape sequence came first: only a JSON parser can say where its string ends.
    NeedsParser,
}

/// Element `index` of the JSON array `array`, found by a structural scan: strings skipped whole, brackets counted.
/// `array` must be valid JSON as the request parse saw it (a call's `params` after [`parse_request`]); a backslash
/// before the element's end hands over to the parser, so the scan never reads a string differently from it. A
/// call's block parameter is read this way on every routed request: one pass over the bytes before it, no parser
/// set-up.
pub fn array_element(array: &[u8], index: usize) -> ArrayElement<'_> {
    let mut pos = skip_ws(array, 0);
    if array.get(pos) != Some(&b'[') {
        return ArrayElement::Missing;
    }
    pos += 1;
    let mut element = 0;
    let mut start = skip_ws(array, pos);
    let mut depth = 0usize;
    while pos < array.len() {
        match array[pos] {
            b'"' => match memchr::memchr2(b'"', b'\\', &array[pos + 1..]) {
                Some(k) if array[pos + 1 + k] == b'"' => pos += k + 1,
                _ => return ArrayElement::NeedsParser,
            },
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth > 0 => depth -= 1,
            b']' | b',' if depth == 0 => {
                if element == index {
                    let raw = array[start..pos].trim_ascii_end();
                    return if raw.is_empty() {
                        ArrayElement::Missing
                    } else {
                        ArrayElement::Found(raw)
                    };
                }
                if array[pos] == b']' {
                    return ArrayElement::Missing;
                }
                element += 1;
                start = skip_ws(array, pos + 1);
            }
            _ => {}
        }
        pos += 1;
    }
    ArrayElement::Missing
}

fn parse_error(e: impl std::fmt::Display) -> RpcError {
    RpcError::Parse(e.to_string())
}

/// Checks that after `end` only whitespace, `close` and whitespace remain up to `limit`.
fn expect_close(body: &[u8], end: usize, close: u8, limit: usize) -> Result<(), RpcError> {
    let body = &body[..limit];
    let pos = skip_ws(body, end);
    if pos >= limit || body[pos] != close {
        return Err(RpcError::Parse(format!("unexpected data at byte {pos}")));
    }
    if skip_ws(body, pos + 1) != limit {
        return Err(RpcError::Parse(format!("trailing data after byte {pos}")));
    }
    Ok(())
}

/// The envelope members of a call: each at most once, in exactly this case (Go-based nodes take the last member
/// that matches case-insensitively, so `"Method"` next to `"method"` would mean something else to them).
const REQUEST_KEYS: &[&str] = &["jsonrpc", "id", "method", "params"];
/// The envelope members of a reply.
const REPLY_KEYS: &[&str] = &["jsonrpc", "id", "result", "error"];

/// Which envelope members an object had so far.
#[derive(Default)]
struct Envelope {
    seen: u8,
    keys: &'static [&'static str],
}

impl Envelope {
    /// Accepts `key` unless it repeats an envelope member or spells one in another case.
    fn admit(&mut self, key: &str, keys: &'static [&'static str]) -> Result<(), String> {
        self.keys = keys;
        let Some(i) = keys.iter().position(|k| k.eq_ignore_ascii_case(key)) else {
            return Ok(());
        };
        if keys[i] != key {
            return Err(format!("member \"{}\" must be spelled exactly so", keys[i]));
        }
        if self.seen & (1 << i) != 0 {
            return Err(format!("member \"{}\" appears twice", keys[i]));
        }
        self.seen |= 1 << i;
        Ok(())
    }

    fn has(&self, key: &str) -> bool {
        self.keys
            .iter()
            .position(|k| *k == key)
            .is_some_and(|i| self.seen & (1 << i) != 0)
    }
}

/// Deepest nesting accepted in a request (real calls need well under 16).
pub const MAX_REQUEST_DEPTH: usize = 128;
/// Deepest nesting accepted in a provider's reply (call traces nest twice per EVM call frame, up to 1024 frames).
pub const MAX_REPLY_DEPTH: usize = 10_000;

/// True when `body` nests arrays/objects deeper than `limit`. One pass, no recursion, strings skipped with memchr;
/// it guards the recursive validator against stack exhaustion. Every level takes at least one byte, so a body no
/// longer than `limit` cannot exceed it and is not scanned (most requests and replies).
pub fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    if body.len() <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Skip the string: find the closing quote not preceded by an escaping backslash.
                let mut j = i + 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[j..]) {
                        Some(k) if body[j + k] == b'\\' => j += k + 2,
                        Some(k) => {
                            j += k;
                            break;
                        }
                        None => return false,
                    }
                    if j >= body.len() {
                        return false;
                    }
                }
                i = j;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Parses a request body: validates it as JSON and locates each call's members.
pub fn parse_request(body: &[u8]) -> Result<RequestBody<'_>, RpcError> {
    if nesting_exceeds(body, MAX_REQUEST_DEPTH) {
        return Err(RpcError::InvalidRequest(format!(
            "JSON nested deeper than {MAX_REQUEST_DEPTH} levels"
        )));
    }
    if let Some(at) = invalid_escape(body) {
        return Err(RpcError::Parse(format!(
            "invalid escape sequence at byte {at}"
        )));
    }
    let start = skip_ws(body, 0);
    match body.get(start) {
        None => Err(RpcError::Parse("empty body".into())),
        Some(b'{') => {
            let end = trailing_end(body);
            inspect_object(body, start..end)
                .map(RequestBody::Single)
                .map_err(|e| e.error)
        }
        Some(b'[') => {
            let end = trailing_end(body);
            let mut members = Vec::new();
            let mut last_end = start + 1;
            for item in sonic_rs::to_array_iter(&body[start..end]) {
                let item = item.map_err(parse_error)?;
                let raw = item.as_raw_str();
                let span = offset_of(body, raw);
                last_end = span.end;
                members.push(if item.get_type() == JsonType::Object {
                    inspect_object(body, span)
                } else {
                    Err(InvalidCall {
                        error: RpcError::InvalidRequest("batch member is not an object".into()),
                        id: None,
                    })
                });
            }
            if members.is_empty() {
                expect_close(body, start + 1, b']', end)?;
                return Err(RpcError::InvalidRequest("empty batch".into()));
            }
            expect_close(body, last_end, b']', end)?;
            Ok(RequestBody::Batch(members))
        }
        Some(_) => {
            // Valid JSON that is neither an object nor an array is an invalid request; anything else a parse error.
            sonic_rs::from_slice::<sonic_rs::Value>(body).map_err(parse_error)?;
            Err(RpcError::InvalidRequest(
                "expected an object or an array".into(),
            ))
        }
    }
}

/// The end of the body without trailing whitespace.
fn trailing_end(body: &[u8]) -> usize {
    let mut end = body.len();
    while end > 0 && matches!(body[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    end
}

/// Inspects one call object occupying `span` of `body`.
fn inspect_object(body: &[u8], span: Range<usize>) -> Result<CallView<'_>, InvalidCall> {
    let invalid = |why: &str, id: Option<Range<usize>>| InvalidCall {
        error: RpcError::InvalidRequest(why.to_string()),
        id,
    };
    let mut version_ok = false;
    let mut method: Option<Cow<'_, str>> = None;
    let mut method_invalid = false;
    let mut id = None;
    let mut id_invalid = false;
    let mut params = None;
    let mut last_end = span.start + 1;
    let mut envelope = Envelope::default();
    for member in sonic_rs::to_object_iter(&body[span.clone()]) {
        let (key, value) = member.map_err(|e| InvalidCall {
            error: parse_error(e),
            id: None,
        })?;
        let range = offset_of(body, value.as_raw_str());
        last_end = range.end;
        if let Err(why) = envelope.admit(&key, REQUEST_KEYS) {
            return Err(invalid(&why, None));
        }
        match &*key {
            "jsonrpc" => version_ok = value.as_str() == Some("2.0"),
            "method" => match value.get_type() {
                JsonType::String => method = Some(string_at(body, range)),
                _ => method_invalid = true,
            },
            "id" => match value.get_type() {
                JsonType::String | JsonType::Number | JsonType::Null => id = Some(range),
                _ => id_invalid = true,
            },
            "params" => params = Some(range),
            _ => {}
        }
    }
    expect_close(body, last_end, b'}', span.end).map_err(|e| InvalidCall { error: e, id: None })?;
    if id_invalid {
        return Err(invalid("id must be a string, a number or null", None));
    }
    if !version_ok {
        return Err(invalid("jsonrpc must be \"2.0\"", id));
    }
    let method = match method {
        Some(m) if !method_invalid => m,
        _ => return Err(invalid("method must be a string", id)),
    };
    if let Some(p) = &params {
        if !matches!(body[p.start], b'[' | b'{') {
            return Err(invalid("params must be an array or an object", id));
        }
    }
    Ok(CallView {
        method,
        id,
        params,
        span,
    })
}

/// The string value whose JSON text (quotes included) occupies `range`: borrowed unless it has escapes.
fn string_at(body: &[u8], range: Range<usize>) -> Cow<'_, str> {
    let raw = &body[range];
    if raw.len() >= 2 && !raw.contains(&b'\\') {
        if let Ok(s) = std::str::from_utf8(&raw[1..raw.len() - 1]) {
            return Cow::Borrowed(s);
        }
    }
    Cow::Owned(sonic_rs::from_slice::<String>(raw).unwrap_or_default())
}

/// Builds the upstream form of `call`: the same bytes with its id replaced by `upstream_id` (or inserted for a
/// notification, so that the provider answers and the proxy can tell the outcome).
pub fn with_upstream_id(body: &[u8], call: &CallView<'_>, upstream_id: u64, out: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    let id = digits.format(upstream_id).as_bytes();
    match &call.id {
        Some(range) => {
            out.extend_from_slice(&body[call.span.start..range.start]);
            out.extend_from_slice(id);
            out.extend_from_slice(&body[range.end..call.span.end]);
        }
        None => {
            out.extend_from_slice(b"{\"id\":");
            out.extend_from_slice(id);
            let rest = &body[call.span.start + 1..call.span.end];
            if body[skip_ws(body, call.span.start + 1)] != b'}' {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
    }
}

/// What a provider's reply to one call says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    Result,
    Error { code: i64, message: String },
}

/// One reply object located in a provider's response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyView {
    pub span: Range<usize>,
    pub id: Range<usize>,
    pub kind: ReplyKind,
}

/// Why a provider's body is not a usable JSON-RPC reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("response is not valid JSON: {0}")]
    NotJson(String),
    #[error("response is not a JSON-RPC reply: {0}")]
    NotJsonRpc(&'static str),
}

/// Inspects a single reply object.
pub fn inspect_reply(body: &[u8]) -> Result<ReplyView, ReplyError> {
    if nesting_exceeds(body, MAX_REPLY_DEPTH) {
        return Err(ReplyError::NotJsonRpc("nested too deeply"));
    }
    let start = skip_ws(body, 0);
    if body.get(start) != Some(&b'{') {
        return Err(ReplyError::NotJsonRpc("expected an object"));
    }
    inspect_reply_object(body, start..trailing_end(body))
}

fn inspect_reply_object(body: &[u8], span: Range<usize>) -> Result<ReplyView, ReplyError> {
    let mut id = None;
    let mut kind = None;
    let mut version_ok = false;
    let mut last_end = span.start + 1;
    let mut envelope = Envelope::default();
    for member in sonic_rs::to_object_iter(&body[span.clone()]) {
        let (key, value) = member.map_err(|e| ReplyError::NotJson(e.to_string()))?;
        let range = offset_of(body, value.as_raw_str());
        last_end = range.end;
        envelope
            .admit(&key, REPLY_KEYS)
            .map_err(|_| ReplyError::NotJsonRpc("duplicate or case-variant envelope key"))?;
        match &*key {
            "jsonrpc" => version_ok = value.as_str() == Some("2.0"),
            "id" => id = Some(range),
            "result" => kind = Some(ReplyKind::Result),
            "error" => {
                let code = value.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
                let message = value
                    .get("message")
                    .and_then(|m| m.as_str().map(str::to_owned))
                    .unwrap_or_default();
                kind = Some(ReplyKind::Error { code, message });
            }
            _ => {}
        }
    }
    let close = skip_ws(body, last_end);
    if close >= span.end || body[close] != b'}' {
        return Err(ReplyError::NotJson("truncated object".into()));
    }
    // Nothing may follow the reply object: a provider appending a second object must not reach the client.
    if skip_ws(body, close + 1) != span.end {
        return Err(ReplyError::NotJsonRpc("data after the reply object"));
    }
    if !version_ok {
        return Err(ReplyError::NotJsonRpc("jsonrpc is not \"2.0\""));
    }
    if envelope.has("result") && envelope.has("error") {
        return Err(ReplyError::NotJsonRpc("both result and error"));
    }
    match (id, kind) {
        (Some(id), Some(kind)) => Ok(ReplyView { span, id, kind }),
        (None, _) => Err(ReplyError::NotJsonRpc("no id")),
        (_, None) => Err(ReplyError::NotJsonRpc("neither result nor error")),
    }
}

/// Inspects a batch reply: each member object, in the order the provider sent them.
pub fn inspect_batch_reply(body: &[u8]) -> Result<Vec<ReplyView>, ReplyError> {
    if nesting_exceeds(body, MAX_REPLY_DEPTH) {
        return Err(ReplyError::NotJsonRpc("nested too deeply"));
    }
    let start = skip_ws(body, 0);
    if body.get(start) != Some(&b'[') {
        // A provider may answer a whole batch with one error object.
        return Err(ReplyError::NotJsonRpc("expected an array"));
    }
    let end = trailing_end(body);
    let mut replies: Vec<ReplyView> = Vec::new();
    let mut last_end = start + 1;
    for item in sonic_rs::to_array_iter(&body[start..end]) {
        let item = item.map_err(|e| ReplyError::NotJson(e.to_string()))?;
        let span = offset_of(body, item.as_raw_str());
        last_end = span.end;
        if item.get_type() != JsonType::Object {
            return Err(ReplyError::NotJsonRpc("batch member is not an object"));
        }
        let reply = inspect_reply_object(body, span)?;
        // Two answers to one id: which one is true is unknowable, so neither is.
        if replies
            .iter()
            .any(|r| body[r.id.clone()] == body[reply.id.clone()])
        {
            return Err(ReplyError::NotJsonRpc("duplicate id in a batch reply"));
        }
        replies.push(reply);
    }
    expect_close(body, last_end, b']', end)
        .map_err(|_| ReplyError::NotJsonRpc("data after the batch reply"))?;
    Ok(replies)
}

/// Reads an upstream id (a number the proxy assigned) from its raw bytes.
pub fn parse_upstream_id(raw: &[u8]) -> Option<u64> {
    std::str::from_utf8(raw).ok()?.trim().parse().ok()
}

/// Appends `reply` (located in `body`) to `out` with its id replaced by `client_id` (raw JSON).
pub fn restore_id(body: &[u8], reply: &ReplyView, client_id: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&body[reply.span.start..reply.id.start]);
    out.extend_from_slice(client_id);
    out.extend_from_slice(&body[reply.id.end..reply.span.end]);
}

/// Builds `{"jsonrpc":"2.0","id":<id>,"result":<raw result>}`.
pub fn result_response(raw_id: &[u8], raw_result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + raw_id.len() + raw_result.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(raw_id);
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(raw_result);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> CallView<'_> {
        match parse_request(body.as_bytes()).unwrap() {
            RequestBody::Single(c) => c,
            other => panic!("expected single, got {other:?}"),
        }
    }

    #[test]
    fn locates_members_of_a_call() {
        let body = r#" {"jsonrpc":"2.0","id":"a\"b","method":"eth_call","params":[{"to":"0x1"},"latest"]} "#;
        let c = single(body);
        assert_eq!(c.method, "eth_call");
        assert_eq!(&body[c.id.clone().unwrap()], r#""a\"b""#);
        assert_eq!(
            &body[c.params.clone().unwrap()],
            r#"[{"to":"0x1"},"latest"]"#
        );
    }

    #[test]
    fn valid_escapes_are_accepted_and_found_by_the_element_scan() {
        let body = r#"{"jsonrpc":"2.0","id":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00","method":"eth_getBalance","params":["0x\u0061",  "latest" ]}"#;
        let call = single(body);
        let params = &body.as_bytes()[call.params.clone().unwrap()];
        // An escape before the element's end hands over to the parser.
        for i in 0..3 {
            assert_eq!(array_element(params, i), ArrayElement::NeedsParser);
        }
        assert_eq!(
            array_element(br#"["0xab",  "latest" ]"#, 1),
            ArrayElement::Found(&br#""latest""#[..])
        );
        assert_eq!(array_element(b" [ ] ", 0), ArrayElement::Missing);
        assert_eq!(
            array_element(b"[1, [2, \"]\"], {\"a\": \",\"}]", 2),
            ArrayElement::Found(&b"{\"a\": \",\"}"[..])
        );
        assert_eq!(array_element(b"[1,2]", 2), ArrayElement::Missing);
        assert_eq!(array_element(b"{\"a\":[1]}", 0), ArrayElement::Missing);
    }

    #[test]
    fn rejects_invalid_requests_table() {
        let rows: &[(&str, i32)] = &[
            ("", -32700),
            ("{", -32700),
            ("{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"id\":1,}", -32700),
            ("{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"id\":1} x", -32700),
            ("[1,2", -32700),
            ("[]", -32600),
            (" [ ] ", -32600),
            ("42", -32600),
            ("\"x\"", -32600),
            ("{\"method\":\"x\",\"id\":1}", -32600),
            ("{\"jsonrpc\":\"1.0\",\"method\":\"x\",\"id\":1}", -32600),
            ("{\"jsonrpc\":\"2.0\",\"method\":5,\"id\":1}", -32600),
            ("{\"jsonrpc\":\"2.0\",\"id\":1}", -32600),
            ("{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"id\":{}}", -32600),
            ("{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"id\":true}", -32600),
            (
                "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":1}",
                -32600,
            ),
            // Escapes the JSON parser would skip leniently: `\u` without four hex digits swallowing a quote.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["\ue00"a",""]}"#,
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["\u12"]}"#,
                -32700,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["\q"]}"#,
                -32700,
            ),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"x\"}]"#, -32700),
        ];
        for (body, code) in rows {
            let err = parse_request(body.as_bytes()).expect_err(body);
            assert_eq!(err.code(), *code, "{body}: {err:?}");
        }
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = |n: usize| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":[{}{}]}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse_request(deep(10).as_bytes()).is_ok());
        let err = parse_request(deep(100_000).as_bytes()).unwrap_err();
        assert_eq!(err.code(), -32600);
        assert!(
            !nesting_exceeds(br#"{"a":"[[[[[[[[\"[[[["}"#, 2),
            "brackets inside strings do not count"
        );
        assert!(nesting_exceeds(b"[[[", 2));
        // A body of `limit` bytes cannot nest deeper than `limit` (it is not scanned); one byte more can.
        assert!(!nesting_exceeds(
            &[b'['; MAX_REQUEST_DEPTH],
            MAX_REQUEST_DEPTH
        ));
        assert!(nesting_exceeds(
            &[b'['; MAX_REQUEST_DEPTH + 1],
            MAX_REQUEST_DEPTH
        ));
        assert!(
            inspect_reply(
                format!(
                    "{{\"id\":1,\"result\":{}{}}}",
                    "[".repeat(20_000),
                    "]".repeat(20_000)
                )
                .as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn batch_members_are_judged_one_by_one() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 5, {"jsonrpc":"2.0","id":2}, {"jsonrpc":"2.0","method":"n"}]"#;
        let RequestBody::Batch(items) = parse_request(body).unwrap() else {
            panic!()
        };
        assert_eq!(items.len(), 4);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        let bad = items[2].as_ref().unwrap_err();
        assert_eq!(&body[bad.id.clone().unwrap()], b"2");
        assert!(items[3].as_ref().unwrap().is_notification());
    }

    #[test]
    fn upstream_id_is_spliced_and_inserted() {
        let body = br#"{"jsonrpc":"2.0","id":"client","method":"m","params":[]}"#;
        let c = match parse_request(body).unwrap() {
            RequestBody::Single(c) => c,
            _ => panic!(),
        };
        let mut out = Vec::new();
        with_upstream_id(body, &c, 42, &mut out);
        assert_eq!(
            out,
            br#"{"jsonrpc":"2.0","id":42,"method":"m","params":[]}"#
        );

        let body = br#"{"jsonrpc":"2.0","method":"m"}"#;
        let c = match parse_request(body).unwrap() {
            RequestBody::Single(c) => c,
            _ => panic!(),
        };
        let mut out = Vec::new();
        with_upstream_id(body, &c, 7, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "m");
    }

    #[test]
    fn replies_are_inspected_and_ids_restored() {
        let body = br#"{"jsonrpc":"2.0","id":42,"error":{"code":3,"message":"execution reverted","data":"0x"}}"#;
        let r = inspect_reply(body).unwrap();
        assert_eq!(
            r.kind,
            ReplyKind::Error {
                code: 3,
                message: "execution reverted".into()
            }
        );
        assert_eq!(parse_upstream_id(&body[r.id.clone()]), Some(42));
        let mut out = Vec::new();
        restore_id(body, &r, br#"{"weird":[1]}"#, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"]["weird"][0], 1);
        assert_eq!(v["error"]["code"], 3);

        let rows: &[&[u8]] = &[
            b"<html>",
            b"{\"id\":1}",
            b"{\"result\":1}",
            b"{\"id\":1,\"result\":",
            b"",
        ];
        for body in rows {
            assert!(
                inspect_reply(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn batch_replies_in_any_order() {
        let body =
            br#"[{"jsonrpc":"2.0","id":2,"result":"b"},{"jsonrpc":"2.0","id":1,"result":"a"}]"#;
        let replies = inspect_batch_reply(body).unwrap();
        let ids: Vec<_> = replies
            .iter()
            .map(|r| parse_upstream_id(&body[r.id.clone()]))
            .collect();
        assert_eq!(ids, vec![Some(2), Some(1)]);
    }

    #[test]
    fn envelopes_are_canonical_table() {
        let refused = [
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","Method":"debug_setHead"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","method":"debug_setHead"}"#,
            r#"{"jsonrpc":"2.0","id":1,"ID":2,"method":"eth_blockNumber"}"#,
            r#"{"jsonrpc":"2.0","JSONRPC":"1.0","id":1,"method":"eth_blockNumber"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[],"PARAMS":[{}]}"#,
        ];
        for body in refused {
            let Err(e) = parse_request(body.as_bytes()) else {
                panic!("accepted: {body}")
            };
            assert_eq!(e.code(), -32600, "{body}: {e}");
        }
        // Other members are the client's business.
        assert!(
            parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"m","Extra":1,"extra":2}"#).is_ok()
        );
        let bad_replies: &[&[u8]] = &[
            br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}{"jsonrpc":"2.0","id":1,"result":"0xforged"}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":"0x1","ID":2}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":"0x1","result":"0x2"}"#,
            br#"{"jsonrpc":"1.0","id":1,"result":"0x1"}"#,
            br#"{"id":1,"result":"0x1"}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":"0x1","error":{"code":1,"message":"x"}}"#,
        ];
        for body in bad_replies {
            assert!(
                inspect_reply(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let bad_batches: &[&[u8]] = &[
            br#"[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":1,"result":2}]"#,
            br#"[{"jsonrpc":"2.0","id":1,"result":1}]{"jsonrpc":"2.0","id":2,"result":2}"#,
        ];
        for body in bad_batches {
            assert!(
                inspect_batch_reply(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(
            inspect_batch_reply(
                br#" [{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":2,"result":2}] "#
            )
            .is_ok()
        );
    }
}
