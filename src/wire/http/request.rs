//! Parsing of client request heads with `httparse`: method, target, version, framing (Content-Length / chunked),
//! keep-alive, `Expect: 100-continue`, and the few headers the proxy reads. Ambiguous framing is rejected.

/// The method, for the routes Lasso serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Other,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

/// A parsed request head. `path` and `query` are owned so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The method as sent (for methods without their own variant, such as PUT and DELETE).
    pub raw_method: String,
    pub path: String,
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub keep_alive: bool,
    pub framing: BodyFraming,
    pub expect_continue: bool,
    pub upgrade_websocket: bool,
    /// Value of `X-Lasso-Include-Meta`, if sent.
    pub include_meta: Option<String>,
    /// `X-Lasso-Cache: bypass` (or `no-cache`): not served from, and not filling, the response cache.
    pub cache_bypass: bool,
    /// Value of `Authorization`, if sent (admin API).
    pub authorization: Option<String>,
    /// Value of `X-Lasso-Key`, if sent (a client API key; never logged).
    pub lasso_key: Option<String>,
    /// Values of `Fly-Client-IP` and `X-Forwarded-For` (believed only from `access.trusted_proxies`).
    pub fly_client_ip: Option<String>,
    pub forwarded_for: Option<String>,
    /// Value of the dashboard's session cookie (`lasso_dash` in `Cookie`), if sent.
    pub dashboard_cookie: Option<String>,
    /// Value of `Origin`, if sent (CORS and WebSocket origin checks).
    pub origin: Option<String>,
    /// Value of the W3C `traceparent`, if sent (used only when tracing is on).
    pub traceparent: Option<String>,
    /// Length of the head in bytes (the body starts there).
    pub head_len: usize,
    /// The client's address, filled in by the edge for endpoints that authenticate (failed attempts are counted per
    /// address); `None` elsewhere.
    pub peer: Option<std::net::IpAddr>,
}

/// Why a request head is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head is malformed (400).
    Malformed(String),
    /// Too many headers (431).
    TooManyHeaders,
}

const MAX_HEADERS: usize = 96;

/// The name of the dashboard's session cookie.
pub const DASHBOARD_COOKIE: &str = "lasso_dash";

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut upgrade_websocket = false;
    let mut include_meta = None;
    let mut cache_bypass = false;
    let mut authorization = None;
    let mut lasso_key = None;
    let mut fly_client_ip = None;
    let mut forwarded_for: Option<String> = None;
    let mut dashboard_cookie = None;
    let mut origin = None;
    let mut traceparent = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)
                .ok_or_else(|| HeadError::Malformed("invalid Content-Length".into()))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a single `chunked` is decoded; a coding list (`gzip, chunked`) or a repeated header is refused
            // rather than half-understood.
            if chunked || !value.eq_ignore_ascii_case("chunked") {
                return Err(HeadError::Malformed("unsupported Transfer-Encoding".into()));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if h.name.eq_ignore_ascii_case("x-lasso-include-meta") {
            include_meta = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("x-lasso-cache") {
            cache_bypass =
                value.eq_ignore_ascii_case("bypass") || value.eq_ignore_ascii_case("no-cache");
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("x-lasso-key") {
            lasso_key = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("fly-client-ip") {
            fly_client_ip = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            // Repeated headers form one list, in order.
            forwarded_for = Some(match forwarded_for {
                Some(prev) => format!("{prev}, {value}"),
                None => value.to_string(),
            });
        } else if h.name.eq_ignore_ascii_case("cookie") {
            if let Some(v) = value
                .split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find_map(|(k, v)| (k == DASHBOARD_COOKIE).then_some(v))
            {
                dashboard_cookie = Some(v.to_string());
            }
        } else if h.name.eq_ignore_ascii_case("origin") {
            origin = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("traceparent") && value.len() <= 128 {
            traceparent = Some(value.to_string());
        }
    }
    if chunked && content_length.is_some() {
        return Err(HeadError::Malformed(
            "both Content-Length and Transfer-Encoding".into(),
        ));
    }
    if chunked && version == 0 {
        return Err(HeadError::Malformed(
            "chunked encoding needs HTTP/1.1".into(),
        ));
    }
    let framing = match (chunked, content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) => BodyFraming::None,
    };
    Ok(Some(RequestHead {
        method,
        raw_method: req.method.unwrap_or("").to_string(),
        path,
        query,
        version,
        keep_alive,
        framing,
        expect_continue,
        upgrade_websocket,
        include_meta,
        cache_bypass,
        authorization,
        lasso_key,
        fly_client_ip,
        forwarded_for,
        dashboard_cookie,
        origin,
        traceparent,
        head_len,
        peer: None,
    }))
}

/// Digits of a Content-Length: 1 to 19 ASCII digits, nothing else (no sign, no list, no spaces inside).
const MAX_CONTENT_LENGTH_DIGITS: usize = 19;

fn parse_content_length(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_CONTENT_LENGTH_DIGITS
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_table() {
        type Row = (&'static [u8], Method, &'static str, bool, BodyFraming, bool);
        let rows: &[Row] = &[
            (
                b"POST /rpc/eth HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                Method::Post,
                "/rpc/eth",
                true,
                BodyFraming::Length(5),
                false,
            ),
            (
                b"POST /rpc/eth?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Post,
                "/rpc/eth",
                true,
                BodyFraming::Chunked,
                false,
            ),
            (
                b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
                Method::Post,
                "/",
                false,
                BodyFraming::Length(0),
                false,
            ),
            (
                b"POST / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                Method::Post,
                "/",
                true,
                BodyFraming::None,
                false,
            ),
            (
                b"GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n",
                Method::Get,
                "/api/health",
                false,
                BodyFraming::None,
                false,
            ),
            (
                b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                Method::Post,
                "/",
                true,
                BodyFraming::Length(3),
                true,
            ),
        ];
        for (raw, method, path, keep_alive, framing, expect) in rows {
            let h = parse_head(raw).unwrap().unwrap();
            assert_eq!(
                (
                    h.method,
                    h.path.as_str(),
                    h.keep_alive,
                    h.framing,
                    h.expect_continue
                ),
                (*method, *path, *keep_alive, *framing, *expect),
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(h.head_len, raw.len());
        }
    }

    #[test]
    fn partial_and_rejected_heads() {
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\nContent-Le").unwrap(), None);
        let bad: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5,5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x00\x01 garbage\r\n\r\n",
        ];
        for raw in bad {
            assert!(
                matches!(parse_head(raw), Err(HeadError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // The same Content-Length twice is one length.
        let same = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(same.unwrap().unwrap().framing, BodyFraming::Length(5));
    }
}
