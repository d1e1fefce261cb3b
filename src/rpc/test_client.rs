//! The one way the in-process tests send a request through the pipeline: as an HTTP client would, to a target
//! path, no metadata, no trace context; the answer's status and its JSON (`null` for an empty body).

use std::rc::Rc;

use serde_json::Value;

use crate::rpc::meta::MetaMode;
use crate::rpc::pipeline::{Transport, handle};
use crate::rpc::target::Target;
use crate::shard::state::Worker;

/// The target of an HTTP `path` under `/rpc` (e.g. `/rpc/ethereum`).
pub(crate) fn target(worker: &Worker, path: &str) -> Target {
    crate::rpc::target::resolve(&worker.config, path, "/rpc").unwrap()
}

/// Sends `body` to `target` and returns the status and the parsed answer.
pub(crate) async fn send(worker: &Rc<Worker>, target: Target, body: &str) -> (u16, Value) {
    let reply = handle(
        worker,
        target,
        body.as_bytes().into(),
        MetaMode::Off,
        Transport::Http,
        None,
        None,
    )
    .await;
    let value = if reply.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&reply.body).unwrap()
    };
    (reply.status, value)
}
