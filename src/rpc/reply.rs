//! The pipeline's answer, whatever the transport: the body owed to the client (empty when nothing is owed: a
//! notification, a batch of them), a status hint for HTTP, and the routing metadata headers the client asked for.
//! HTTP turns it into a [`Response`] (`From<Reply>`); a WebSocket session sends the body as one text frame.

use crate::error::RpcError;
use crate::wire::http::response::Response;

/// One request's answer.
#[derive(Debug)]
pub struct Reply {
    /// What HTTP would answer: 200 for answers (batches always), 204 when nothing is owed, the error's status for a
    /// whole-request error.
    pub status: u16,
    pub body: Vec<u8>,
    /// Routing metadata the client asked for as headers (`x-lasso-request-id`, `x-lasso-meta`); HTTP only.
    pub meta_headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A JSON-RPC answer (single or batch).
    pub fn answer(body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            body,
            meta_headers: Vec::new(),
        }
    }

    /// Nothing owed to the client.
    pub fn nothing() -> Self {
        Reply {
            status: 204,
            body: Vec::new(),
            meta_headers: Vec::new(),
        }
    }

    /// A whole-request error answered with the client's `id` (raw JSON bytes).
    pub fn error(err: &RpcError, id: &[u8]) -> Self {
        Reply {
            status: err.http_status(),
            body: err.to_response(id),
            meta_headers: Vec::new(),
        }
    }
}

impl From<Reply> for Response {
    fn from(reply: Reply) -> Self {
        let mut resp = if reply.body.is_empty() {
            Response::empty(reply.status)
        } else {
            Response::json(reply.status, reply.body)
        };
        for (name, value) in reply.meta_headers {
            resp = resp.with_header(name, value);
        }
        resp
    }
}
