//! The endpoint table: every route Lasso serves, in one place ([`Endpoint::of`]). Most endpoints answer a request
//! with a response ([`answer`]); WebSocket upgrades, the SSE stream and the inter-node report take the connection
//! over after the head ([`take_over`]).

use std::rc::Rc;

use monoio::net::TcpStream;

use crate::error::RpcError;
use crate::shard::state::Worker;
use crate::subscriptions::hub::Hub;
use crate::wire::http::request::{Method, RequestHead};
use crate::wire::http::response::Response;

/// True when the query string sets `name=true` (or `1`).
fn query_flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == name && (v == "true" || v == "1"))
}

/// Every endpoint Lasso serves: the one table that maps a request head to what answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// CORS preflight.
    Preflight,
    /// `POST /rpc/...`: the JSON-RPC pipeline.
    Rpc,
    /// `GET /ws/rpc/...` with an upgrade: a WebSocket session (takes the connection over).
    WsUpgrade,
    /// `/ws/rpc/...` without an upgrade: say how to connect.
    WsWithoutUpgrade,
    /// `/api/admin/...`: live configuration.
    Admin,
    Health,
    Status,
    ClusterStatus,
    Chains,
    Metrics,
    ChainMetrics,
    /// `GET /api/events/:profile`: the SSE stream (takes the connection over).
    Events,
    /// `GET /api/cluster/node`: the inter-node report (takes the connection over; reads the raw head).
    ClusterNode,
    /// A known path with a method it does not take; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
    NotFound,
}

impl Endpoint {
    /// The endpoint of a request head.
    pub fn of(head: &RequestHead) -> Endpoint {
        let path = head.path.as_str();
        let get = matches!(head.method, Method::Get | Method::Head);
        if head.method == Method::Options {
            return Endpoint::Preflight;
        }
        if path == "/rpc" || path.starts_with("/rpc/") {
            return if head.method == Method::Post {
                Endpoint::Rpc
            } else {
                Endpoint::MethodNotAllowed("POST, OPTIONS")
            };
        }
        if path == "/ws/rpc" || path.starts_with("/ws/rpc/") {
            return if head.upgrade_websocket && head.method == Method::Get {
                Endpoint::WsUpgrade
            } else {
                Endpoint::WsWithoutUpgrade
            };
        }
        if path == "/api/admin" || path.starts_with("/api/admin/") {
            return Endpoint::Admin;
        }
        match path {
            "/api/health" if get => Endpoint::Health,
            "/api/status" if get => Endpoint::Status,
            "/api/cluster/status" if get => Endpoint::ClusterStatus,
            "/api/cluster/node" if head.method == Method::Get => Endpoint::ClusterNode,
            "/api/chains" if get => Endpoint::Chains,
            "/metrics" if get => Endpoint::Metrics,
            p if get && p.starts_with("/api/metrics/") => Endpoint::ChainMetrics,
            p if head.method == Method::Get && p.starts_with("/api/events/") => Endpoint::Events,
            "/api/health" | "/api/status" | "/api/chains" => {
                Endpoint::MethodNotAllowed("GET, HEAD")
            }
            _ => Endpoint::NotFound,
        }
    }

    /// True for endpoints that check a secret (admin token or cluster secret): their failed attempts are counted
    /// per client address, so the edge fills in `RequestHead::peer`.
    pub fn authenticates(self) -> bool {
        matches!(
            self,
            Endpoint::Admin | Endpoint::ClusterStatus | Endpoint::ClusterNode
        )
    }

    /// True for endpoints that take the connection over after the head (no body is read, no response returned).
    pub fn takes_connection(self) -> bool {
        matches!(
            self,
            Endpoint::WsUpgrade | Endpoint::Events | Endpoint::ClusterNode
        )
    }
}

/// Serves an endpoint that takes the connection over; `buf` holds the head (and whatever followed it).
pub async fn take_over(
    endpoint: Endpoint,
    worker: Rc<Worker>,
    hub: Rc<Hub>,
    stream: TcpStream,
    buf: Vec<u8>,
    head: &RequestHead,
) {
    match endpoint {
        Endpoint::WsUpgrade => {
            crate::edge::ws_session::upgrade(worker, hub, stream, buf, head).await
        }
        Endpoint::Events => crate::edge::sse::serve(worker, stream, head).await,
        Endpoint::ClusterNode => crate::ops::cluster::serve_node(worker, stream, buf, head).await,
        _ => debug_assert!(!endpoint.takes_connection()),
    }
}

/// Answers one HTTP request whose body was read.
pub async fn answer(
    endpoint: Endpoint,
    worker: &Rc<Worker>,
    head: &RequestHead,
    body: &[u8],
) -> Response {
    let path = head.path.as_str();
    match endpoint {
        Endpoint::Preflight => Response::empty(204)
            .with_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
            .with_header(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization, X-Lasso-Include-Meta, X-Lasso-Cache",
            )
            .with_header("Access-Control-Max-Age", "86400"),
        Endpoint::Rpc => match crate::rpc::target::resolve(&worker.config, path, "/rpc") {
            Ok(target) => {
                let target = target
                    .with_failover(query_flag(&head.query, "failover"))
                    .with_cache_bypass(head.cache_bypass);
                let mode = crate::rpc::meta::MetaMode::from_request(
                    &head.query,
                    head.include_meta.as_deref(),
                );
                crate::rpc::pipeline::handle(
                    worker,
                    target,
                    body,
                    mode,
                    crate::rpc::pipeline::Transport::Http,
                )
                .await
                .into()
            }
            Err(e) => Response::from(e),
        },
        // Reached only without an upgrade: say how to connect.
        Endpoint::WsWithoutUpgrade => {
            match crate::rpc::target::resolve(&worker.config, path, "/ws/rpc") {
                Ok(_) => Response::from(RpcError::InvalidRequest(
                    "this endpoint speaks WebSocket: send an HTTP/1.1 upgrade".into(),
                ))
                .with_header("Upgrade", "websocket"),
                Err(e) => Response::from(e),
            }
        }
        Endpoint::Admin => crate::ops::admin::handle(worker, head, body).await,
        Endpoint::Health => crate::ops::api::health(worker),
        Endpoint::Status => crate::ops::api::status(worker).await,
        Endpoint::ClusterStatus => crate::ops::cluster::status(worker, head).await,
        Endpoint::Chains => crate::ops::api::chains(worker),
        Endpoint::Metrics => crate::ops::prometheus::render(worker).await,
        Endpoint::ChainMetrics => {
            crate::ops::api::chain_metrics(worker, &path["/api/metrics/".len()..], &head.query)
                .await
        }
        Endpoint::MethodNotAllowed(allow) => {
            Response::from(RpcError::MethodNotAllowed).with_header("Allow", allow)
        }
        Endpoint::NotFound => Response::from(RpcError::UnknownPath),
        Endpoint::WsUpgrade | Endpoint::Events | Endpoint::ClusterNode => {
            // Served by `take_over`; a head that gets here was routed wrongly.
            Response::from(RpcError::UnknownPath)
        }
    }
}
