//! Client API keys through the admin API: `GET /api/admin/keys` lists ids and rules (never a key or its hash),
//! `PUT /api/admin/keys/:id` adds a key or replaces it (rotation: a new `key`, the old one stops working), `DELETE
//! /api/admin/keys/:id` revokes it. The key sent in a body is hashed here: only `key_sha256` reaches the file. Each
//! change is an ordinary configuration change (validated, persisted, a new generation started without dropping
//! anyone), after which the WebSocket sessions of a revoked or rotated key close themselves (`access::live`).

use serde_norway::{Mapping, Value};

use crate::config::change::ConfigChange;
use crate::config::defaults::ACCESS_MIN_KEY_BYTES;
use crate::config::schema::{Config, hash_key, key_hash_hex};
use crate::ops::error::OpsError;
use crate::wire::http::request::{Method, RequestHead};
use crate::wire::http::response::Response;

/// What `/api/admin/keys...` asks: an answer now, or a change for the supervisor.
pub enum KeysRequest {
    Answer(Response),
    Change(ConfigChange),
}

/// Serves `/api/admin/keys` (`rest` = the path segments after `keys`).
pub fn handle(config: &Config, head: &RequestHead, rest: &[&str], body: &[u8]) -> KeysRequest {
    let put = head.method == Method::Post || head.raw_method.eq_ignore_ascii_case("PUT");
    let delete = head.raw_method.eq_ignore_ascii_case("DELETE");
    match rest {
        [] if matches!(head.method, Method::Get | Method::Head) => {
            KeysRequest::Answer(list(config))
        }
        [] => KeysRequest::Answer(OpsError::method_not_allowed("GET").into()),
        [id] if put => match new_entry(id, body) {
            Ok(entry) => {
                let id = id.to_string();
                KeysRequest::Change(ConfigChange::Edit(Box::new(move |doc| {
                    let keys = keys_of(doc)?;
                    match keys
                        .iter_mut()
                        .find(|k| k.get("id").and_then(Value::as_str) == Some(&id))
                    {
                        Some(existing) => *existing = entry,
                        None => keys.push(entry),
                    }
                    Ok(())
                })))
            }
            Err(e) => KeysRequest::Answer(OpsError::bad_request(e).into()),
        },
        [id] if delete => {
            let id = id.to_string();
            KeysRequest::Change(ConfigChange::Edit(Box::new(move |doc| {
                let keys = keys_of(doc)?;
                let before = keys.len();
                keys.retain(|k| k.get("id").and_then(Value::as_str) != Some(&id));
                if keys.len() == before {
                    return Err(format!("no key '{id}'"));
                }
                Ok(())
            })))
        }
        [_] => KeysRequest::Answer(OpsError::method_not_allowed("PUT, POST, DELETE").into()),
        _ => KeysRequest::Answer(OpsError::not_found("unknown admin endpoint").into()),
    }
}

/// `GET /api/admin/usage?key=&from=&to=` (unix ms; defaults: every key, from 0, to now): metered usage per key id,
/// chain and method, from the usage file plus what is not yet written.
pub fn usage(config: &Config, query: &str) -> Response {
    use crate::error::json_string;
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find_map(|(k, v)| (k == name && !v.is_empty()).then_some(v))
    };
    let number = |name: &str, default: u64| match param(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("`{name}` must be unix milliseconds")),
    };
    let (from, to) = match (number("from", 0), number("to", u64::MAX)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return OpsError::bad_request(e).into(),
    };
    let path = crate::access::usage::usage_path(&config.source);
    let rows: Vec<String> = crate::access::usage::query(&path, param("key"), from, to)
        .into_iter()
        .map(|((key, chain, method), c)| {
            format!(
                "{{\"key\":{},\"chain\":{},\"method\":{},\"requests\":{},\"compute_units\":{}}}",
                json_string(&key),
                json_string(&chain),
                json_string(&method),
                c.requests,
                c.units.round()
            )
        })
        .collect();
    Response::json(
        200,
        format!("{{\"usage\":[{}]}}", rows.join(",")).into_bytes(),
    )
}

fn list(config: &Config) -> Response {
    use crate::error::json_string;
    let strings = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| json_string(s)).collect();
        format!("[{}]", items.join(","))
    };
    let keys: Vec<String> = config
        .access
        .keys
        .iter()
        .map(|k| {
            format!(
                "{{\"id\":{},\"profiles\":{},\"chains\":{},\"methods\":{{\"allow\":{},\"deny\":{}}},\"origins\":{}}}",
                json_string(&k.id),
                strings(&k.profiles),
                strings(&k.chains),
                strings(&k.methods_allow),
                strings(&k.methods_deny),
                strings(&k.origins)
            )
        })
        .collect();
    Response::json(
        200,
        format!("{{\"keys\":[{}]}}", keys.join(",")).into_bytes(),
    )
}

/// The file's entry for key `id` from a request body: `key` replaced by its `key_sha256`.
fn new_entry(id: &str, body: &[u8]) -> Result<Value, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the body must be UTF-8 YAML or JSON".to_string())?;
    let mut value: Value = serde_norway::from_str(text).map_err(|_| "invalid body".to_string())?;
    let map = value.as_mapping_mut().ok_or("the body must be a mapping")?;
    map.insert(Value::String("id".into()), Value::String(id.into()));
    if let Some(key) = map.remove(Value::String("key".into())) {
        let key = key
            .as_str()
            .ok_or("`key` must be a string")?
            .trim()
            .to_string();
        if key.len() < ACCESS_MIN_KEY_BYTES {
            return Err(format!(
                "a key needs at least {ACCESS_MIN_KEY_BYTES} characters"
            ));
        }
        map.insert(
            Value::String("key_sha256".into()),
            Value::String(key_hash_hex(&hash_key(&key))),
        );
    }
    if !map.contains_key(Value::String("key_sha256".into())) {
        return Err("give the new key as `key`".into());
    }
    Ok(value)
}

/// `access.keys` of the document, created when absent.
fn keys_of(doc: &mut Value) -> Result<&mut Vec<Value>, String> {
    let root = doc
        .as_mapping_mut()
        .ok_or("the configuration is not a mapping")?;
    let access = root
        .entry(Value::String("access".into()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if access.is_null() {
        *access = Value::Mapping(Mapping::new());
    }
    let access = access.as_mapping_mut().ok_or("`access` is not a mapping")?;
    let keys = access
        .entry(Value::String("keys".into()))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if keys.is_null() {
        *keys = Value::Sequence(Vec::new());
    }
    keys.as_sequence_mut()
        .ok_or_else(|| "`access.keys` is not a list".to_string())
}
