//! Request dispatch: maps method and path to the JSON-RPC proxy, the operations API, CORS preflight, or the right
//! error response.

use std::rc::Rc;

use crate::errors::RpcError;
use crate::http::request::{Method, RequestHead};
use crate::http::response::Response;
use crate::worker::Worker;

fn error(err: RpcError) -> Response {
    Response::json(err.http_status(), err.to_response(b"null"))
}

/// True when the query string sets `name=true` (or `1`).
fn query_flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == name && (v == "true" || v == "1"))
}

/// Answers one HTTP request.
pub async fn handle(worker: &Rc<Worker>, head: &RequestHead, body: &[u8]) -> Response {
    let path = head.path.as_str();
    if head.method == Method::Options {
        return Response::empty(204)
            .with_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
            .with_header(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization, X-Lasso-Include-Meta",
            )
            .with_header("Access-Control-Max-Age", "86400");
    }
    if path == "/rpc" || path.starts_with("/rpc/") {
        if head.method != Method::Post {
            return error(RpcError::MethodNotAllowed).with_header("Allow", "POST, OPTIONS");
        }
        return match crate::routes::resolve(&worker.config, path, "/rpc") {
            Ok(target) => {
                let target = target.with_failover(query_flag(&head.query, "failover"));
                let mode =
                    crate::meta::MetaMode::from_request(&head.query, head.include_meta.as_deref());
                crate::proxy::handle(worker, target, body, mode, crate::proxy::Transport::Http)
                    .await
            }
            Err(e) => error(e),
        };
    }
    if path == "/ws/rpc" || path.starts_with("/ws/rpc/") {
        // Reached only without an upgrade: say how to connect.
        return match crate::routes::resolve(&worker.config, path, "/ws/rpc") {
            Ok(_) => error(RpcError::InvalidRequest(
                "this endpoint speaks WebSocket: send an HTTP/1.1 upgrade".into(),
            ))
            .with_header("Upgrade", "websocket"),
            Err(e) => error(e),
        };
    }
    if path == "/api/admin" || path.starts_with("/api/admin/") {
        return crate::admin::handle(worker, head, body).await;
    }
    let get = matches!(head.method, Method::Get | Method::Head);
    match path {
        "/api/health" if get => crate::api::health(worker),
        "/api/status" if get => crate::api::status(worker).await,
        "/api/cluster/status" if get => crate::cluster::status(worker).await,
        "/api/chains" if get => crate::api::chains(worker),
        "/metrics" if get => crate::prometheus::render(worker).await,
        p if get && p.starts_with("/api/metrics/") => {
            crate::api::chain_metrics(worker, &p["/api/metrics/".len()..], &head.query).await
        }
        "/api/health" | "/api/status" | "/api/chains" => {
            error(RpcError::MethodNotAllowed).with_header("Allow", "GET, HEAD")
        }
        _ => error(RpcError::UnknownPath),
    }
}
