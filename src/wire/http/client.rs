//! Parsing of upstream (provider) response heads: status, framing, keep-alive, content encoding and `Retry-After`.

use std::time::Duration;

/// How an upstream response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Length(usize),
    Chunked,
    /// Read until the provider closes the connection.
    UntilClose,
}

/// A parsed upstream response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: ResponseFraming,
    pub keep_alive: bool,
    pub gzip: bool,
    pub retry_after: Option<Duration>,
    pub head_len: usize,
}

/// Parses a response head from the start of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let version = resp.version.unwrap_or(1);
    let mut keep_alive = version == 1;
    let mut length = None;
    let mut chunked = false;
    let mut gzip = false;
    let mut retry_after = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "invalid Content-Length".to_string())?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            match value.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => gzip = true,
                "identity" | "" => {}
                other => return Err(format!("unsupported Content-Encoding '{other}'")),
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    let framing = if chunked {
        ResponseFraming::Chunked
    } else if let Some(n) = length {
        ResponseFraming::Length(n)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        ResponseFraming::Length(0)
    } else {
        keep_alive = false;
        ResponseFraming::UntilClose
    };
    Ok(Some(ResponseHead {
        status,
        framing,
        keep_alive,
        gzip,
        retry_after,
        head_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_heads_table() {
        let rows: &[(&[u8], u16, ResponseFraming, bool, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                200,
                ResponseFraming::Length(10),
                true,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n",
                200,
                ResponseFraming::Chunked,
                true,
                true,
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n",
                200,
                ResponseFraming::UntilClose,
                false,
                false,
            ),
            (
                b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                503,
                ResponseFraming::Length(0),
                false,
                false,
            ),
        ];
        for (raw, status, framing, keep_alive, gzip) in rows {
            let h = parse_response_head(raw).unwrap().unwrap();
            assert_eq!(
                (h.status, h.framing, h.keep_alive, h.gzip),
                (*status, *framing, *keep_alive, *gzip)
            );
        }
        let h = parse_response_head(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.retry_after, Some(Duration::from_secs(3)));
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n").is_err());
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
    }
}
