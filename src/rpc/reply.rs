//! The pipeline's answer, whatever the transport: the body owed to the client (empty when nothing is owed: a
//! notification, a batch of them), a status hint for HTTP, and the routing metadata headers the client asked for.
//! HTTP turns it into a [`Response`] (`From<Reply>`); a WebSocket session sends the body as one text frame.

use crate::error::RpcError;
use crate::upstream::stream::BodyTail;
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
    /// A streamed answer's rest, still arriving from the provider (HTTP only): `body` holds its first bytes.
    pub tail: Option<BodyTail>,
}

impl Reply {
    /// A JSON-RPC answer (single or batch).
    pub fn answer(body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            body,
            meta_headers: Vec::new(),
            tail: None,
        }
    }

    /// A JSON-RPC answer whose rest may still be arriving (`tail`).
    pub fn streamed(body: Vec<u8>, tail: Option<BodyTail>) -> Self {
        Reply {
            tail,
            ..Reply::answer(body)
        }
    }

    /// The HTTP response and, for a streamed answer, the rest to send after its body.
    pub fn into_parts(mut self) -> (Response, Option<BodyTail>) {
        let tail = self.tail.take();
        (self.into(), tail)
    }

    /// Nothing owed to the client.
    pub fn nothing() -> Self {
        Reply {
            status: 204,
            body: Vec::new(),
            meta_headers: Vec::new(),
            tail: None,
        }
    }

    /// A whole-request error answered with the client's `id` (raw JSON bytes).
    pub fn error(err: &RpcError, id: &[u8]) -> Self {
        Reply {
            status: err.http_status(),
            body: err.to_response(id),
            meta_headers: Vec::new(),
            tail: None,
        }
    }
}

/// The response of an answer that is not streamed (see [`Reply::into_parts`]).
impl From<Reply> for Response {
    fn from(reply: Reply) -> Self {
        debug_assert!(reply.tail.is_none(), "a streamed reply lost its rest");
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
