//! The one error envelope of the operator endpoints (admin, status, metrics, cluster): an HTTP status and
//! `{"ok":false,"error":"<why>"}`; success answers of the admin API are `{"ok":true,"message":"<what>"}`. The
//! JSON-RPC endpoints keep JSON-RPC error objects (`crate::error::RpcError`).

use crate::error::json_string;
use crate::wire::http::response::Response;

/// An operator endpoint's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsError {
    pub status: u16,
    pub message: String,
    /// Extra response header (`WWW-Authenticate` for 401, `Allow` for 405).
    pub header: Option<(&'static str, String)>,
}

impl OpsError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        OpsError {
            status,
            message: message.into(),
            header: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        OpsError::new(400, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        OpsError::new(404, message)
    }

    /// 401 with a bearer challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        OpsError {
            header: Some(("WWW-Authenticate", "Bearer".to_string())),
            ..OpsError::new(401, message)
        }
    }

    /// 405 naming the methods the endpoint takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        OpsError {
            header: Some(("Allow", allow.to_string())),
            ..OpsError::new(405, format!("method not allowed here (allowed: {allow})"))
        }
    }

    /// 429 after too many failed authentication attempts, with `Retry-After` in seconds.
    pub fn too_many_attempts(retry_after_secs: u64) -> Self {
        OpsError {
            header: Some(("Retry-After", retry_after_secs.to_string())),
            ..OpsError::new(
                429,
                format!(
                    "too many failed authentication attempts from this address; retry in {retry_after_secs} s"
                ),
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        OpsError::new(500, message)
    }

    /// The envelope's JSON bytes.
    pub fn body(&self) -> Vec<u8> {
        format!("{{\"ok\":false,\"error\":{}}}", json_string(&self.message)).into_bytes()
    }
}

impl From<OpsError> for Response {
    fn from(e: OpsError) -> Self {
        let resp = Response::json(e.status, e.body());
        match e.header {
            Some((name, value)) => resp.with_header(name, value),
            None => resp,
        }
    }
}

/// A successful change: `{"ok":true,"message":"<what>"}`.
pub fn ok(message: &str) -> Response {
    Response::json(
        200,
        format!("{{\"ok\":true,\"message\":{}}}", json_string(message)).into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_the_same_envelope() {
        for e in [
            OpsError::bad_request("bad \"yaml\""),
            OpsError::unauthorized("no"),
            OpsError::method_not_allowed("GET, PUT"),
            OpsError::not_found("x"),
        ] {
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(v["ok"], false);
            assert_eq!(v["error"], e.message.as_str());
        }
        let resp = Response::from(OpsError::method_not_allowed("GET, PUT"));
        assert_eq!(resp.status, 405);
        assert!(
            resp.headers
                .iter()
                .any(|(k, v)| *k == "Allow" && v == "GET, PUT")
        );
    }
}
