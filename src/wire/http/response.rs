//! Client-facing responses: status lines, standard headers (length, keep-alive, content type) and bodies. CORS
//! headers are not standard here: the endpoint table adds them to the routes browsers may call (`/rpc`, `/ws/rpc`).

use smallvec::SmallVec;

/// A response to one client request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: SmallVec<[(&'static str, String); 2]>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            content_type: "application/json",
            body,
            headers: SmallVec::new(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Response {
            status,
            content_type: "",
            body: Vec::new(),
            headers: SmallVec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A whole-request error as its HTTP response: the error's status, a JSON-RPC error object with a null id.
impl From<crate::error::RpcError> for Response {
    fn from(err: crate::error::RpcError) -> Self {
        Response::json(err.http_status(), err.to_response(b"null"))
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Writes the status line and headers of `resp` into `out`.
pub fn write_head(out: &mut Vec<u8>, resp: &Response, keep_alive: bool) {
    write_head_with_length(out, resp, keep_alive, resp.body.len());
}

/// As [`write_head`], announcing a body of `length` bytes (a body sent after `resp.body`, as it arrives).
pub fn write_head_with_length(out: &mut Vec<u8>, resp: &Response, keep_alive: bool, length: usize) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(digits.format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !resp.content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(resp.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if resp.status != 204 && resp.status >= 200 {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(digits.format(length).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
