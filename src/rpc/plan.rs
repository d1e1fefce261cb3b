//! Planning one JSON-RPC call: answer it locally when no provider is needed (`eth_chainId`, subscriptions where they
//! cannot be served), otherwise ask the worker's router for the candidates under the target's strategy or provider
//! pick, and note what forwarding needs to know (method key and class, write-ness).

use std::time::Instant;

use crate::config::Chain;
use crate::config::Strategy;
use crate::error::RpcError;
use crate::evm::methods::{self, MethodClass, MethodKey};
use crate::routing::router::{Candidates, RouteInputs, RouteQuery};
use crate::rpc::filters;
use crate::rpc::target::{Pick, Target};
use crate::shard::state::Worker;
use crate::wire::jsonrpc::{self, CallView};

/// Which transport a request came over (subscriptions exist only on WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    WebSocket,
}

fn is_subscription(method: &str) -> bool {
    matches!(method, "eth_subscribe" | "eth_unsubscribe")
}

/// A call the proxy answers without a provider, if it is one.
pub(crate) fn local_answer(
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    transport: Transport,
) -> Option<Result<Vec<u8>, RpcError>> {
    let id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    if call.method == "eth_chainId" {
        let hex = format!("\"{}\"", chain.chain_id_hex);
        return Some(Ok(jsonrpc::result_response(id, hex.as_bytes())));
    }
    if is_subscription(&call.method) && transport == Transport::WebSocket {
        return Some(Err(RpcError::InvalidRequest(format!(
            "{} cannot be batched; send it on its own",
            call.method
        ))));
    }
    if is_subscription(&call.method) {
        return Some(Err(RpcError::SubscriptionOverHttp {
            method: call.method.to_string(),
            ws_path: format!("/ws/rpc/{}", chain.name),
        }));
    }
    None
}

/// Asks the worker's router for the candidates of one call under `strategy`.
fn route(
    worker: &Worker,
    chain: &Chain,
    strategy: Strategy,
    body: &[u8],
    call: &CallView<'_>,
    key: MethodKey,
) -> Candidates {
    let params = call.params.clone().map(|r| &body[r]);
    let target = methods::block_target(&call.method, params);
    let routing = worker.routing.borrow();
    let inputs = RouteInputs {
        config: &worker.config,
        table: &routing.table,
        health: &routing.health,
        now: Instant::now(),
    };
    let query = RouteQuery {
        chain,
        strategy,
        method: &call.method,
        key,
        target,
    };
    worker.router.borrow_mut().candidates(&inputs, &query)
}

/// What routing needs to know about one call.
pub(crate) struct CallPlan {
    pub key: MethodKey,
    pub class: MethodClass,
    pub write: bool,
    pub candidates: Candidates,
    pub strategy: Option<Strategy>,
}

/// Plans one call for `target`; an error when no provider may serve it.
pub(crate) fn plan(
    worker: &Worker,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Result<CallPlan, RpcError> {
    let config = &worker.config;
    let key = MethodKey::of(&call.method);
    // A filter lives on the node that made it: created once (like a write), then used there only. (A key's class is
    // its method's class: no second lookup of the name.)
    let write = key.class() == MethodClass::Write || filters::creates_filter(&call.method);
    if let Some(sticky) = filters::sticky(config, chain, body, call)? {
        let mut candidates = Candidates::new();
        if config.providers[sticky.pid].methods.permits(&call.method) {
            candidates.push(sticky.pid);
        }
        if candidates.is_empty() {
            return Err(RpcError::MethodNotSupported {
                method: call.method.to_string(),
            });
        }
        return Ok(CallPlan {
            key,
            class: key.class(),
            write,
            candidates,
            strategy: None,
        });
    }
    let (candidates, strategy) = match target.pick {
        Pick::Strategy(strategy) => (
            route(worker, chain, strategy, body, call, key),
            Some(strategy),
        ),
        Pick::Provider(pid) => {
            let mut list = Candidates::new();
            if config.providers[pid].methods.permits(&call.method) {
                list.push(pid);
            }
            if target.failover {
                // The named provider first, then the chain's default strategy for the rest.
                let rest = route(worker, chain, chain.default_strategy, body, call, key);
                list.extend(rest.into_iter().filter(|&p| p != pid));
            }
            (list, None)
        }
    };
    if candidates.is_empty() {
        return Err(RpcError::MethodNotSupported {
            method: call.method.to_string(),
        });
    }
    Ok(CallPlan {
        key,
        class: key.class(),
        write,
        candidates,
        strategy,
    })
}
