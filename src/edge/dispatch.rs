//! The endpoint table: every route Lasso serves, in one place ([`Endpoint::of`]). Most endpoints answer a request
//! with a response ([`answer`]); WebSocket upgrades, the SSE stream and the inter-node report take the connection
//! over after the head ([`take_over`]). CORS is granted here and only here: answers on `/rpc` and `/ws/rpc` (and
//! their `OPTIONS` preflights) carry `Access-Control-Allow-Origin` for the origins of `server.cors_origins`; admin,
//! status, metrics, cluster and event-stream answers never do, so a web page cannot read them.

use std::rc::Rc;

use monoio::net::TcpStream;

use crate::config::schema::CorsOrigins;
use crate::error::RpcError;
use crate::shard::state::Worker;
use crate::subscriptions::hub::Hub;
use crate::upstream::stream::BodyTail;
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
    /// CORS preflight of `/rpc/...` or `/ws/rpc/...`.
    Preflight,
    /// `OPTIONS` on any other path: 204 without CORS headers (browsers get no access).
    OptionsWithoutCors,
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
    /// `GET /dashboard...`: the operator dashboard's pages, assets and data.
    Dashboard,
    /// `GET /dashboard/api/events/:profile`: the dashboard's SSE stream (takes the connection over).
    DashboardEvents,
    /// `GET /api/cluster/events`: a peer pulling this node's routing events (signed).
    ClusterEvents,
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
            return if is_rpc_path(path) || is_ws_path(path) {
                Endpoint::Preflight
            } else {
                Endpoint::OptionsWithoutCors
            };
        }
        if is_rpc_path(path) {
            return if head.method == Method::Post {
                Endpoint::Rpc
            } else {
                Endpoint::MethodNotAllowed("POST, OPTIONS")
            };
        }
        if is_ws_path(path) {
            return if head.upgrade_websocket && head.method == Method::Get {
                Endpoint::WsUpgrade
            } else {
                Endpoint::WsWithoutUpgrade
            };
        }
        if path == "/api/admin" || path.starts_with("/api/admin/") {
            return Endpoint::Admin;
        }
        if path == "/dashboard" || path.starts_with("/dashboard/") {
            return match head.method {
                Method::Get if path.starts_with("/dashboard/api/events/") => {
                    Endpoint::DashboardEvents
                }
                Method::Get | Method::Head => Endpoint::Dashboard,
                _ => Endpoint::MethodNotAllowed("GET, HEAD"),
            };
        }
        match path {
            "/api/health" if get => Endpoint::Health,
            "/api/status" if get => Endpoint::Status,
            "/api/cluster/status" if get => Endpoint::ClusterStatus,
            "/api/cluster/node" if head.method == Method::Get => Endpoint::ClusterNode,
            "/api/cluster/events" if head.method == Method::Get => Endpoint::ClusterEvents,
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
            Endpoint::Admin
                | Endpoint::ClusterStatus
                | Endpoint::ClusterNode
                | Endpoint::ClusterEvents
                | Endpoint::Dashboard
                | Endpoint::DashboardEvents
        )
    }

    /// True for endpoints that take the connection over after the head (no body is read, no response returned).
    pub fn takes_connection(self) -> bool {
        matches!(
            self,
            Endpoint::WsUpgrade
                | Endpoint::Events
                | Endpoint::DashboardEvents
                | Endpoint::ClusterNode
        )
    }
}

fn is_rpc_path(path: &str) -> bool {
    path == "/rpc" || path.starts_with("/rpc/")
}

fn is_ws_path(path: &str) -> bool {
    path == "/ws/rpc" || path.starts_with("/ws/rpc/")
}

/// Adds the CORS grant of `server.cors_origins` for the request's `Origin` (none when that origin is not allowed).
fn with_cors(resp: Response, worker: &Worker, head: &RequestHead) -> Response {
    let cors = &worker.config.server.cors;
    let resp = match cors.allow(head.origin.as_deref()) {
        Some(origin) => resp.with_header("Access-Control-Allow-Origin", origin),
        None => resp,
    };
    match cors {
        CorsOrigins::Any => resp,
        CorsOrigins::List(_) => resp.with_header("Vary", "Origin"),
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
        Endpoint::DashboardEvents => crate::edge::sse::serve_dashboard(worker, stream, head).await,
        Endpoint::ClusterNode => crate::ops::cluster::serve_node(worker, stream, buf, head).await,
        _ => debug_assert!(!endpoint.takes_connection()),
    }
}

/// An endpoint's answer: the response, and for a streamed JSON-RPC answer the rest of its body, still arriving.
pub struct Answer {
    pub response: Response,
    pub tail: Option<BodyTail>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Answer {
            response,
            tail: None,
        }
    }
}

/// Answers one HTTP request whose body was read.
pub async fn answer(
    endpoint: Endpoint,
    worker: &Rc<Worker>,
    head: &RequestHead,
    body: &[u8],
) -> Answer {
    let path = head.path.as_str();
    let response = match endpoint {
        Endpoint::Preflight => {
            let resp = with_cors(Response::empty(204), worker, head);
            if worker
                .config
                .server
                .cors
                .allow(head.origin.as_deref())
                .is_none()
            {
                return resp.into();
            }
            resp.with_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
                .with_header(
                    "Access-Control-Allow-Headers",
                    "Content-Type, Authorization, X-Lasso-Key, X-Lasso-Include-Meta, X-Lasso-Cache, traceparent, tracestate",
                )
                .with_header("Access-Control-Max-Age", "86400")
        }
        Endpoint::OptionsWithoutCors => Response::empty(204),
        Endpoint::Rpc => {
            let (response, tail) = rpc(worker, head, body).await;
            return Answer {
                response: with_cors(response, worker, head),
                tail,
            };
        }
        // Reached only without an upgrade: say how to connect.
        Endpoint::WsWithoutUpgrade => {
            let resp = match crate::rpc::target::resolve(&worker.config, path, "/ws/rpc") {
                Ok(_) => Response::from(RpcError::InvalidRequest(
                    "this endpoint speaks WebSocket: send an HTTP/1.1 upgrade".into(),
                ))
                .with_header("Upgrade", "websocket"),
                Err(e) => Response::from(e),
            };
            with_cors(resp, worker, head)
        }
        Endpoint::Admin => crate::ops::admin::handle(worker, head, body).await,
        Endpoint::Dashboard => crate::ops::dashboard::handle(worker, head).await,
        Endpoint::Health => crate::ops::api::health(worker),
        Endpoint::Status => crate::ops::api::status(worker).await,
        Endpoint::ClusterStatus => crate::ops::cluster::status(worker, head).await,
        Endpoint::ClusterEvents => crate::ops::cluster_events::serve(worker, head),
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
        Endpoint::WsUpgrade
        | Endpoint::Events
        | Endpoint::DashboardEvents
        | Endpoint::ClusterNode => {
            // Served by `take_over`; a head that gets here was routed wrongly.
            Response::from(RpcError::UnknownPath)
        }
    };
    response.into()
}

/// `POST /rpc/...`: the JSON-RPC pipeline; a streamed answer comes with the rest of its body.
async fn rpc(worker: &Rc<Worker>, head: &RequestHead, body: &[u8]) -> (Response, Option<BodyTail>) {
    match crate::rpc::target::resolve(&worker.config, &head.path, "/rpc") {
        Ok(target) => {
            let config = &worker.config;
            let ip = head.peer.map(|peer| {
                crate::shard::peers::client_address(crate::access::limits::client_ip(
                    &config.access,
                    peer,
                    head.fly_client_ip.as_deref(),
                    head.forwarded_for.as_deref(),
                ))
            });
            let workers = worker.shared.workers;
            let (p, c) = (target.profile, target.chain);
            // With access configured, the body is parsed here once: the limits and the metering read its
            // methods, and the pipeline takes the parse.
            let parsed = crate::access::gate::wants_methods(config)
                .then(|| crate::wire::jsonrpc::parse_request(body));
            let methods = parsed
                .as_ref()
                .map(crate::access::gate::methods_in)
                .unwrap_or_default();
            let check =
                crate::access::gate::check(config, workers, (p, c), head, ip, Some(body), &methods);
            let key = match check {
                Ok(key) => key,
                Err(e) => return (crate::access::gate::refusal(e), None),
            };
            if let Some(key) = key.filter(|_| config.access.redis.is_some()) {
                if let Err(e) = crate::access::gate::check_shared(config, key, body).await {
                    return (crate::access::gate::refusal(e), None);
                }
            }
            let target = target
                .with_failover(query_flag(&head.query, "failover"))
                .with_cache_bypass(head.cache_bypass);
            let mode =
                crate::rpc::meta::MetaMode::from_request(&head.query, head.include_meta.as_deref());
            let resp = crate::rpc::pipeline::handle(
                worker,
                target,
                crate::rpc::pipeline::ClientBody {
                    bytes: body,
                    parsed,
                },
                mode,
                crate::rpc::pipeline::Transport::Http,
                head.traceparent.as_deref(),
                key.map(|k| k.id.as_str()),
            )
            .await
            .into_parts();
            if let Some(key) = key {
                let (bytes_in, bytes_out) = (body.len(), resp.0.body.len());
                crate::access::gate::meter(config, key, (p, c), &methods, bytes_in, bytes_out);
            }
            resp
        }
        Err(e) => (Response::from(e), None),
    }
}
