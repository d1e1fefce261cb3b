//! The admin API (`/api/admin/...`, bearer token from `LASSO_ADMIN_TOKEN`; absent when unset): read the
//! configuration, replace it, reload it from the file, and add, update or remove chains and providers. Every change
//! goes to the supervisor, which applies changes one at a time: it validates the new document, persists it
//! atomically (temp file, fsync, rename) with a timestamped backup in `LASSO_BACKUP_DIR` (newest 20 kept), and starts
//! a new configuration generation that takes new connections while the old one finishes its requests. A rejected
//! change leaves the running configuration and the file as they were.

use std::rc::Rc;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use crate::config::change::{ConfigChange, SupervisorCommand};
use crate::ops::error::{OpsError, ok};
use crate::shard::state::Worker;
use crate::wire::http::request::{Method, RequestHead};
use crate::wire::http::response::Response;

/// Constant-time comparison of two secrets.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request (`Authorization: Bearer <token>`, scheme in any case), trimmed.
pub fn bearer(head: &RequestHead) -> Option<&str> {
    let value = head.authorization.as_deref()?.trim();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| value[7..].trim())
}

/// Answers `/api/admin/...`.
pub async fn handle(worker: &Rc<Worker>, head: &RequestHead, body: &[u8]) -> Response {
    let Some(token) = crate::config::env::admin_token(&crate::config::env::process) else {
        return OpsError::not_found(
            "the admin API is disabled (set LASSO_ADMIN_TOKEN to enable it)",
        )
        .into();
    };
    let presented = bearer(head).unwrap_or("");
    if let Err(refusal) = crate::ops::auth::check(
        head.peer,
        &worker.config.server,
        "admin",
        "admin token",
        secrets_equal(presented.as_bytes(), token.as_bytes()),
    ) {
        return refusal.into();
    }
    let path = head.path.trim_end_matches('/');
    let segments: Vec<&str> = path
        .trim_start_matches("/api/admin")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let profile = head
        .query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "profile")
        .map(|(_, v)| v.to_string())
        .filter(|p| p != "default");
    let change = match (head.method, segments.as_slice()) {
        (Method::Get, ["config"]) => {
            return match std::fs::read(&worker.config.source) {
                Ok(text) => {
                    let mut r = Response::json(200, text);
                    r.content_type = "application/yaml";
                    r
                }
                Err(e) => OpsError::internal(format!("cannot read the configuration: {e}")).into(),
            };
        }
        (Method::Get, ["usage"]) => {
            return crate::ops::admin_keys::usage(&worker.config, &head.query);
        }
        (_, ["usage"]) => return OpsError::method_not_allowed("GET").into(),
        (_, ["keys", rest @ ..]) => {
            match crate::ops::admin_keys::handle(&worker.config, head, rest, body) {
                crate::ops::admin_keys::KeysRequest::Answer(resp) => return resp,
                crate::ops::admin_keys::KeysRequest::Change(change) => change,
            }
        }
        (Method::Post, ["reload"]) => ConfigChange::ReloadFile,
        (_, ["config"]) if !is_put_or_post(head) => {
            return OpsError::method_not_allowed("GET, PUT, POST").into();
        }
        (_, ["config"]) if body.is_empty() => return OpsError::bad_request("empty body").into(),
        (_, ["config"]) => match std::str::from_utf8(body) {
            Ok(text) => ConfigChange::Replace(text.to_string()),
            Err(_) => return OpsError::bad_request("the configuration must be UTF-8 YAML").into(),
        },
        (_, ["reload"]) => return OpsError::method_not_allowed("POST").into(),
        (Method::Other | Method::Post, ["chains", chain]) if is_put_or_post(head) => {
            let value = match parse_body(body) {
                Ok(v) => v,
                Err(e) => return OpsError::bad_request(e).into(),
            };
            let (profile, chain) = (profile.clone(), chain.to_string());
            ConfigChange::Edit(Box::new(move |doc| {
                chains_of(doc, profile.as_deref())?.insert(Value::String(chain), value);
                Ok(())
            }))
        }
        (Method::Other, ["chains", chain]) if is_delete(head) => {
            let (profile, chain) = (profile.clone(), chain.to_string());
            ConfigChange::Edit(Box::new(move |doc| {
                chains_of(doc, profile.as_deref())?
                    .remove(Value::String(chain.clone()))
                    .map(|_| ())
                    .ok_or_else(|| format!("no chain '{chain}'"))
            }))
        }
        (Method::Other | Method::Post, ["chains", chain, "providers", id])
            if is_put_or_post(head) =>
        {
            let mut value = match parse_body(body) {
                Ok(v) => v,
                Err(e) => return OpsError::bad_request(e).into(),
            };
            let Some(map) = value.as_mapping_mut() else {
                return OpsError::bad_request("a provider must be a mapping").into();
            };
            map.insert(Value::String("id".into()), Value::String(id.to_string()));
            let (profile, chain, id) = (profile.clone(), chain.to_string(), id.to_string());
            ConfigChange::Edit(Box::new(move |doc| {
                let providers = providers_of(doc, profile.as_deref(), &chain)?;
                match providers
                    .iter_mut()
                    .find(|p| p.get("id").and_then(Value::as_str) == Some(id.as_str()))
                {
                    Some(existing) => *existing = value,
                    None => providers.push(value),
                }
                Ok(())
            }))
        }
        (Method::Other, ["chains", chain, "providers", id]) if is_delete(head) => {
            let (profile, chain, id) = (profile.clone(), chain.to_string(), id.to_string());
            ConfigChange::Edit(Box::new(move |doc| {
                let providers = providers_of(doc, profile.as_deref(), &chain)?;
                let before = providers.len();
                providers.retain(|p| p.get("id").and_then(Value::as_str) != Some(id.as_str()));
                if providers.len() == before {
                    return Err(format!("chain '{chain}' has no provider '{id}'"));
                }
                Ok(())
            }))
        }
        (_, ["chains", _] | ["chains", _, "providers", _]) => {
            return OpsError::method_not_allowed("PUT, POST, DELETE").into();
        }
        _ => return OpsError::not_found("unknown admin endpoint").into(),
    };
    apply(worker, change).await
}

fn is_put_or_post(head: &RequestHead) -> bool {
    head.method == Method::Post || head.raw_method.eq_ignore_ascii_case("PUT")
}

fn is_delete(head: &RequestHead) -> bool {
    head.raw_method.eq_ignore_ascii_case("DELETE")
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the body must be UTF-8 YAML or JSON".to_string())?;
    let value: Value = serde_norway::from_str(text).map_err(|e| format!("invalid body: {e}"))?;
    if !value.is_mapping() {
        return Err("the body must be a mapping".into());
    }
    Ok(value)
}

fn mapping_entry<'a>(map: &'a mut Mapping, key: &str) -> Result<&'a mut Mapping, String> {
    let entry = map
        .entry(Value::String(key.into()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if entry.is_null() {
        *entry = Value::Mapping(Mapping::new());
    }
    entry
        .as_mapping_mut()
        .ok_or_else(|| format!("`{key}` is not a mapping"))
}

/// The `chains` mapping of the default profile (top level) or of an inline profile.
fn chains_of<'a>(doc: &'a mut Value, profile: Option<&str>) -> Result<&'a mut Mapping, String> {
    let root = doc
        .as_mapping_mut()
        .ok_or("the configuration is not a mapping")?;
    match profile {
        None => mapping_entry(root, "chains"),
        Some(p) => {
            let profiles = mapping_entry(root, "profiles")?;
            let entry = profiles
                .get_mut(Value::String(p.into()))
                .ok_or_else(|| format!("no profile '{p}'"))?;
            let body = entry
                .as_mapping_mut()
                .ok_or_else(|| format!("profile '{p}' lives in its own file; edit that file"))?;
            mapping_entry(body, "chains")
        }
    }
}

fn providers_of<'a>(
    doc: &'a mut Value,
    profile: Option<&str>,
    chain: &str,
) -> Result<&'a mut Vec<Value>, String> {
    let chains = chains_of(doc, profile)?;
    let chain_entry = chains
        .get_mut(Value::String(chain.into()))
        .ok_or_else(|| format!("no chain '{chain}'"))?;
    let chain_map = chain_entry
        .as_mapping_mut()
        .ok_or_else(|| format!("chain '{chain}' is not a mapping"))?;
    let providers = chain_map
        .entry(Value::String("providers".into()))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    providers
        .as_sequence_mut()
        .ok_or_else(|| format!("chain '{chain}': providers is not a list"))
}

async fn apply(worker: &Rc<Worker>, change: ConfigChange) -> Response {
    let (tx, rx) = futures_channel::oneshot::channel();
    if worker
        .shared
        .supervisor
        .send(SupervisorCommand::Change(change, tx))
        .is_err()
    {
        return OpsError::new(503, "the server is shutting down").into();
    }
    match monoio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(Ok(summary))) => ok(&summary),
        Ok(Ok(Err(reason))) => OpsError::bad_request(worker.config.redact(&reason)).into(),
        _ => OpsError::new(503, "the change was not applied in time").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn secrets_compare_in_constant_time_shape() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
    }

    #[test]
    fn edits_address_chains_and_providers() {
        let mut doc: Value = serde_norway::from_str("chains:\n  eth:\n    chain_id: 1\n    providers:\n      - { id: a, url: \"http://a\" }\n").unwrap();
        providers_of(&mut doc, None, "eth")
            .unwrap()
            .push(serde_norway::from_str("{ id: b, url: \"http://b\" }").unwrap());
        assert_eq!(providers_of(&mut doc, None, "eth").unwrap().len(), 2);
        assert!(providers_of(&mut doc, None, "nope").is_err());
        assert!(chains_of(&mut doc, Some("missing")).is_err());
        let text = serde_norway::to_string(&doc).unwrap();
        let config = crate::config::load_str(&text, Path::new("t.yml"), &|_| None).unwrap();
        assert_eq!(config.providers.len(), 2);
    }
}
