//! Cluster-wide routing events: every node's event streams (`/api/events/:profile`, the dashboard's) also carry the
//! decisions made on its peers, each with the `source_node` and `source_region` of the node that made it.
//!
//! A node whose own subscribers follow some profiles pulls, every `CLUSTER_EVENTS_PULL_MS`, each connected peer's
//! `GET /api/cluster/events?since=<cursor>&profiles=<a,b>` (signed with the cluster secret over method, path and
//! query, like every inter-node call; refused 401 otherwise, 404 when clustering is off). The peer answers the events
//! of those profiles it kept since the cursor (`crate::telemetry::events::export`: a byte-bounded outbox filled only
//! while a peer asks, by a request path that never waits for its lock) as NDJSON: a first line
//! `{"node_id","next"}`, then one event per line. The puller republishes each event, only to its own subscribers of
//! the event's profile (`events::publish_remote`). Everything here runs on its own thread with blocking sockets (one
//! short-lived scoped thread per peer per pull); a slow or dead peer delays only the next pull, never a worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::defaults::{
    CLUSTER_EVENT_MAX_BYTES, CLUSTER_EVENTS_ANSWER_BYTES, CLUSTER_EVENTS_PULL_MS,
};
use crate::ops::error::OpsError;
use crate::shard::state::Worker;
use crate::telemetry::events;
use crate::wire::http::request::RequestHead;
use crate::wire::http::response::Response;

/// The inter-node events endpoint's path.
pub const EVENTS_PATH: &str = "/api/cluster/events";
/// Timeout of one pull (connect, request and whole answer).
const PULL_TIMEOUT: Duration = Duration::from_secs(2);

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Serves `GET /api/cluster/events?since=N&profiles=a,b` for a peer (signed over the path and query).
pub fn serve(worker: &Worker, head: &RequestHead) -> Response {
    let Some(secret) = crate::ops::cluster::secret() else {
        return OpsError::not_found("clustering is disabled on this node").into();
    };
    let signed = format!("{}?{}", head.path, head.query);
    let verdict = crate::ops::signature::verify(
        secret.as_bytes(),
        "GET",
        &signed,
        head.authorization.as_deref(),
        crate::ops::signature::now_unix(),
    );
    let what = match verdict {
        Ok(()) => "cluster signature",
        Err(refused) => refused.describe(),
    };
    if let Err(refusal) = crate::ops::auth::check(
        head.peer,
        &worker.config.server,
        "cluster events",
        what,
        verdict.is_ok(),
    ) {
        return refusal.into();
    }
    let since = query_value(&head.query, "since")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    // Only profiles this node has: a peer never registers interest in arbitrary names.
    let profiles: Vec<&str> = query_value(&head.query, "profiles")
        .unwrap_or("")
        .split(',')
        .filter(|p| worker.config.profile(p).is_some())
        .collect();
    let exported = events::export(&profiles, since, CLUSTER_EVENTS_ANSWER_BYTES);
    let mut body = sonic_rs::to_vec(&Header {
        node_id: worker.shared.node_id.clone(),
        next: exported.next,
    })
    .unwrap_or_default();
    for e in &exported.events {
        body.push(b'\n');
        body.extend_from_slice(e.as_bytes());
    }
    body.push(b'\n');
    let mut r = Response::json(200, body);
    r.content_type = "application/x-ndjson";
    r
}

#[derive(serde::Serialize, Deserialize)]
struct Header {
    node_id: String,
    next: u64,
}

/// What the puller reads of a forwarded event.
#[derive(Deserialize)]
struct EventHead {
    profile: String,
    source_node: String,
}

/// What one pull brought: the peer's next cursor and the events' raw lines.
type Pulled = Result<(Header, Vec<String>), String>;

/// One pull from a peer.
fn pull(addr: SocketAddr, secret: &str, since: u64, profiles: &str) -> Pulled {
    let path = format!("{EVENTS_PATH}?since={since}&profiles={profiles}");
    let auth = crate::ops::signature::authorization(secret.as_bytes(), "GET", &path);
    let (status, body) =
        crate::ops::cluster::http_get(addr, &path, &[("Authorization", &auth)], PULL_TIMEOUT)
            .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let text = String::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let header: Header = sonic_rs::from_str(lines.next().unwrap_or(""))
        .map_err(|e| format!("bad events header: {e}"))?;
    Ok((
        header,
        lines
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

/// Starts the puller thread (clustering enabled).
pub fn start(own_node: String, secret: String) {
    let spawned = std::thread::Builder::new()
        .name("lasso-cluster-events".into())
        .spawn(move || run(&own_node, &secret));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the cluster events thread: peers' events are not shown");
    }
}

fn run(own_node: &str, secret: &str) {
    // Each peer's cursor, by node id (a peer that restarts answers with a fresh cursor).
    let mut cursors: HashMap<String, u64> = HashMap::new();
    loop {
        std::thread::sleep(Duration::from_millis(CLUSTER_EVENTS_PULL_MS));
        let profiles = events::local_profiles();
        if profiles.is_empty() {
            cursors.clear();
            continue;
        }
        let list = profiles.join(",");
        let peers = crate::ops::cluster::peers();
        let results: Vec<(String, Pulled)> = std::thread::scope(|s| {
            let handles: Vec<_> = peers
                .iter()
                .map(|(id, addr)| {
                    let since = cursors.get(id).copied().unwrap_or(0);
                    let list = &list;
                    (
                        id.clone(),
                        s.spawn(move || pull(*addr, secret, since, list)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(id, h)| (id, h.join().unwrap_or_else(|_| Err("panicked".to_string()))))
                .collect()
        });
        cursors.retain(|id, _| peers.iter().any(|(p, _)| p == id));
        for (id, result) in results {
            match result {
                Ok((header, lines)) => {
                    cursors.insert(id, header.next);
                    for line in lines {
                        republish(own_node, &profiles, line);
                    }
                }
                Err(e) => tracing::debug!(peer = %id, error = %e, "pulling a peer's events failed"),
            }
        }
    }
}

/// Republishes one forwarded event to this node's subscribers of its profile, when it is one asked for, made on
/// another node, and small.
fn republish(own_node: &str, profiles: &[String], line: String) {
    if line.len() > CLUSTER_EVENT_MAX_BYTES {
        return;
    }
    let Ok(head) = sonic_rs::from_str::<EventHead>(&line) else {
        return;
    };
    if head.source_node == own_node || !profiles.contains(&head.profile) {
        return;
    }
    events::publish_remote(&head.profile, &line);
}
