//! The one access check of a request ([`admit`]): find the key (header, bearer or query), match it against the
//! configured hashes in constant time, then apply the key's profile, chain, origin and method restrictions.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};

use crate::config::defaults::ACCESS_KNOWN_KEYS_PER_CORE;
use crate::config::schema::{AccessSettings, ApiKey, Config, Profile, hash_key};
use crate::error::RpcError;
use crate::wire::http::request::RequestHead;
use crate::wire::http::response::Response;
use crate::wire::jsonrpc::{RequestBody, parse_request};

/// The key a request presents: `X-Lasso-Key`, then `Authorization: Bearer`, then the `key` query parameter
/// (`%XX` escapes decoded).
pub fn presented_key(head: &RequestHead) -> Option<Cow<'_, str>> {
    if let Some(k) = head.lasso_key.as_deref().filter(|k| !k.is_empty()) {
        return Some(Cow::Borrowed(k));
    }
    if let Some(auth) = head.authorization.as_deref() {
        if let Some((scheme, token)) = auth.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(Cow::Borrowed(token.trim()));
            }
        }
    }
    let v = head
        .query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == "key" && !v.is_empty()).then_some(v))?;
    Some(if v.contains('%') {
        Cow::Owned(percent_decode(v))
    } else {
        Cow::Borrowed(v)
    })
}

/// Decodes `%XX` escapes (a `+` stays a `+`: keys are not form text).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Presented keys this core already found valid: their SHA-256, looked up by a 64-bit tag (SipHash under this
/// thread's random key, so a client cannot aim for a tag: forging one is 2^64 guesses, each a request), so a
/// client's every request does not hash its key again. It holds tags and the hashes the configuration holds anyway,
/// never a key; a hash found here still goes through the constant-time comparison with the configured hashes (a
/// revoked key is refused at once). Bounded: cleared when [`ACCESS_KNOWN_KEYS_PER_CORE`] are held.
struct KnownKeys {
    tag_key: RandomState,
    hashes: HashMap<u64, [u8; 32], BuildNoHash>,
}

/// The tags are already keyed hashes: the table uses them as they are.
#[derive(Default, Clone, Copy)]
struct BuildNoHash;

/// See [`BuildNoHash`]: passes a `u64` through.
#[derive(Default)]
struct NoHash(u64);

impl std::hash::Hasher for NoHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for BuildNoHash {
    type Hasher = NoHash;
    fn build_hasher(&self) -> NoHash {
        NoHash(0)
    }
}

thread_local! {
    static KNOWN_KEYS: RefCell<KnownKeys> = RefCell::new(KnownKeys {
        tag_key: RandomState::new(),
        hashes: HashMap::with_hasher(BuildNoHash),
    });
}

impl KnownKeys {
    fn tag(&self, presented: &str) -> u64 {
        self.tag_key.hash_one(presented)
    }
}

/// The configured key whose hash equals the presented key's: every stored hash is compared in full, whatever matches
/// first, so the time taken does not depend on which key (or how much of a hash) matched.
pub fn find_key<'a>(access: &'a AccessSettings, presented: &str) -> Option<&'a ApiKey> {
    let (tag, known) = KNOWN_KEYS.with(|k| {
        let k = k.borrow();
        let tag = k.tag(presented);
        (tag, k.hashes.get(&tag).copied())
    });
    let hash = known.unwrap_or_else(|| hash_key(presented));
    let found = matching_key(access, &hash);
    if found.is_some() && known.is_none() {
        KNOWN_KEYS.with(|k| {
            let mut k = k.borrow_mut();
            if k.hashes.len() >= ACCESS_KNOWN_KEYS_PER_CORE {
                k.hashes.clear();
            }
            k.hashes.insert(tag, hash);
        });
    }
    found
}

/// The configured key with SHA-256 `hash`, every stored hash compared in full.
fn matching_key<'a>(access: &'a AccessSettings, hash: &[u8; 32]) -> Option<&'a ApiKey> {
    let mut found = None;
    for key in &access.keys {
        let diff = key
            .hash
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(key);
        }
    }
    found
}

fn method_allowed(key: &ApiKey, method: &str) -> bool {
    use crate::evm::methods::matches_pattern;
    (key.methods_allow.is_empty() || key.methods_allow.iter().any(|p| matches_pattern(p, method)))
        && !key.methods_deny.iter().any(|p| matches_pattern(p, method))
}

/// Admits a request to `profile`'s chain `chain` (an index into `profile.chains`; `None` for a profile-level check).
/// `body` is the JSON-RPC body of an HTTP request (its methods are checked against the key's method rules; a body
/// that does not parse is left to the pipeline to refuse). Returns the key when one was presented and valid;
/// `Ok(None)` when the profile needs no key and none was sent.
pub fn admit<'a>(
    access: &'a AccessSettings,
    profile: &Profile,
    chain: Option<usize>,
    head: &RequestHead,
    body: Option<&[u8]>,
) -> Result<Option<&'a ApiKey>, RpcError> {
    let required = access.requires_key(&profile.name);
    let key = match presented_key(head) {
        None if !required => return Ok(None),
        None => return Err(RpcError::KeyRequired),
        Some(presented) => match find_key(access, &presented) {
            Some(k) => k,
            // A wrong key is refused even where none is needed: the client meant to use one.
            None => return Err(RpcError::KeyRequired),
        },
    };
    if !key.profiles.is_empty() && !key.profiles.iter().any(|p| p == &profile.name) {
        return Err(RpcError::KeyForbidden("profile"));
    }
    if let Some(chain) = chain {
        if !key.chains.is_empty()
            && !key
                .chains
                .iter()
                .any(|c| profile.chain(c).is_some_and(|(i, _)| i == chain))
        {
            return Err(RpcError::KeyForbidden("chain"));
        }
    }
    if !key.origins.is_empty()
        && !head
            .origin
            .as_deref()
            .is_some_and(|o| key.origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
    {
        return Err(RpcError::KeyForbidden("origin"));
    }
    if let Some(body) = body {
        body_rules(key, body)?;
    }
    Ok(Some(key))
}

/// The edge's one call, before the pipeline or the upgrade: [`admit`] for the chain `chain` of profile `profile`
/// (indexes of the resolved target, as a pair), then the rate limits of the key and of the client address `ip` (HTTP only:
/// `body` is the request and `methods` its calls' methods, parsed once by the edge; each member of a batch counts),
/// so a refused request never reaches a provider. `workers` is the number of workers sharing each budget. Returns
/// the key used, if any (a WebSocket session keeps its hash to learn of its revocation; the HTTP answer is metered
/// with it).
pub fn check<'a>(
    config: &'a Config,
    workers: usize,
    (profile, chain): (usize, usize),
    head: &RequestHead,
    ip: Option<std::net::IpAddr>,
    body: Option<&[u8]>,
    methods: &[Cow<'_, str>],
) -> Result<Option<&'a ApiKey>, RpcError> {
    let access = &config.access;
    let key = admit(access, &config.profiles[profile], Some(chain), head, body)?;
    let limited = access.per_ip.is_some() && ip.is_some()
        || key.is_some_and(|k| k.limit.is_some() || access.per_key.is_some());
    if limited && body.is_some() {
        crate::access::limits::charge(access, workers, key, ip, methods)?;
    }
    Ok(key)
}

/// Whether the edge must know a request's methods before the pipeline (access configured: limits or metering).
pub fn wants_methods(config: &Config) -> bool {
    !config.access.keys.is_empty() || config.access.per_ip.is_some()
}

/// The method names of a parsed body (each member of a batch; none when it does not parse).
pub fn methods_in<'a>(parsed: &Result<RequestBody<'a>, RpcError>) -> Vec<Cow<'a, str>> {
    match parsed {
        Ok(RequestBody::Single(call)) => vec![call.method.clone()],
        Ok(RequestBody::Batch(calls)) => calls.iter().flatten().map(|c| c.method.clone()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Meters an answered request of `key` (`access::usage`): each call's share of the bytes in and out, times its
/// method weight, under the key's id, the chain's name and the method.
pub fn meter(
    config: &Config,
    key: &ApiKey,
    (profile, chain): (usize, usize),
    methods: &[Cow<'_, str>],
    bytes_in: usize,
    bytes_out: usize,
) {
    let weights = &config.access.weights;
    let chain = &config.profiles[profile].chains[chain].name;
    crate::access::usage::record(&key.id, chain, methods, weights, bytes_in, bytes_out);
}

/// With `access.redis_url`: charges the request `body` (each member of a batch) to `key`'s request rate shared by
/// every node (`access::shared`; fail-open when Redis does not answer).
pub async fn check_shared(config: &Config, key: &ApiKey, body: &[u8]) -> Result<(), RpcError> {
    let access = &config.access;
    let (Some(redis), Some(limit)) = (
        access.redis.as_ref(),
        key.limit.as_ref().or(access.per_key.as_ref()),
    ) else {
        return Ok(());
    };
    let requests = methods_of(body).len().max(1) as f64;
    crate::access::shared::charge(redis, &key.id, limit.requests_per_s, requests).await
}

/// Whether any per-address limit is configured (the edge then looks up the client's address).
pub fn limits_addresses(config: &Config) -> bool {
    config.access.per_ip.is_some()
}

/// The answer to a refused access check; a 401 names the scheme a key may come in.
pub fn refusal(e: RpcError) -> Response {
    match e {
        RpcError::KeyRequired => {
            Response::from(e).with_header("WWW-Authenticate", "Bearer realm=\"lasso\"")
        }
        RpcError::RateLimited { retry_after_ms } => {
            let secs = retry_after_ms.div_ceil(1000).max(1).to_string();
            Response::from(e).with_header("Retry-After", &secs)
        }
        _ => Response::from(e),
    }
}

/// The key's method and contract rules over every call of `body` (a body that does not parse passes: the pipeline
/// refuses it).
fn body_rules(key: &ApiKey, body: &[u8]) -> Result<(), RpcError> {
    if key.methods_allow.is_empty() && key.methods_deny.is_empty() && key.contracts.is_empty() {
        return Ok(());
    }
    let calls = match parse_request(body) {
        Ok(RequestBody::Single(call)) => vec![call],
        Ok(RequestBody::Batch(calls)) => calls.into_iter().flatten().collect(),
        Err(_) => Vec::new(),
    };
    for call in &calls {
        if !method_allowed(key, &call.method) {
            return Err(RpcError::KeyForbidden("method"));
        }
        let params = call.params.clone().map(|r| &body[r]).unwrap_or(b"[]");
        if !key.contracts.is_empty()
            && !crate::access::contracts::permits(&key.contracts, &call.method, params)
        {
            return Err(RpcError::KeyForbidden("contract"));
        }
    }
    Ok(())
}

/// The method names of a body (each member of a batch); empty when it does not parse.
pub fn methods_of(body: &[u8]) -> Vec<Cow<'_, str>> {
    methods_in(&parse_request(body))
}

/// One message of a WebSocket session opened with the key whose hash is `key`: the key's method and contract rules
/// and its rate limit, as for an HTTP request. A key no longer configured is refused (its session is closing).
pub fn check_message<'a>(
    config: &'a Config,
    workers: usize,
    key: &[u8; 32],
    text: &[u8],
) -> Result<&'a ApiKey, RpcError> {
    let access = &config.access;
    let key = access
        .keys
        .iter()
        .find(|k| &k.hash == key)
        .ok_or(RpcError::KeyRequired)?;
    body_rules(key, text)?;
    if key.limit.is_some() || access.per_key.is_some() {
        crate::access::limits::charge(access, workers, Some(key), None, &methods_of(text))?;
    }
    Ok(key)
}

/// Whether `key` may call `method` (WebSocket sessions check each call with this).
pub fn may_call(access: &AccessSettings, key_id: &str, method: &str) -> bool {
    access
        .keys
        .iter()
        .find(|k| k.id == key_id)
        .is_none_or(|k| method_allowed(k, method))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::http::request::parse_head;

    fn head(extra: &str, query: &str) -> RequestHead {
        let raw = format!(
            "POST /rpc/ethereum{query} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn keys_are_found_in_each_place_and_header_wins() {
        let key =
            |extra: &str, query: &str| presented_key(&head(extra, query)).map(|k| k.into_owned());
        let some = |k: &str| Some(k.to_string());
        assert_eq!(key("X-Lasso-Key: aaa\r\n", ""), some("aaa"));
        assert_eq!(key("Authorization: Bearer bbb\r\n", ""), some("bbb"));
        assert_eq!(key("Authorization: Basic bbb\r\n", ""), None);
        assert_eq!(key("", "?x=1&key=ccc"), some("ccc"));
        assert_eq!(key("X-Lasso-Key: aaa\r\n", "?key=ccc"), some("aaa"));
        assert_eq!(key("", "?key="), None);
        assert_eq!(key("", "?key=a%2Bb%3D+c"), some("a+b=+c"));
    }

    fn load(access: &str) -> Result<Config, String> {
        let text = format!(
            "chains: {{ ethereum: {{ chain_id: 1, providers: [ {{ id: a, url: \"http://x\" }} ] }} }}\n{access}"
        );
        let env = |name: &str| (name == "RPC_K").then(|| "env-key-0123456789abcdef".to_string());
        crate::config::load_str(&text, std::path::Path::new("t.yml"), &env)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_shared_limits_redis_url_is_parsed_and_its_password_kept_secret() {
        let c = load("access: { redis_url: \"redis://:pw-0123456789@limits.internal:6380/2\" }")
            .unwrap();
        let redis = c.access.redis.as_ref().expect("redis settings");
        assert_eq!(redis.addr, "limits.internal:6380");
        assert_eq!(redis.db, 2);
        assert!(c.secrets.iter().any(|s| s == "pw-0123456789"));
        assert!(load("access: {}").unwrap().access.redis.is_none());
        let e = load("access: { redis_url: \"http://x\" }").err().unwrap();
        assert!(e.contains("access.redis_url"), "{e}");
    }

    #[test]
    fn keys_are_kept_hashed_and_as_secrets_and_checked_when_loaded() {
        let c = load(
            "access: { require_key: true, keys: [ { id: a1, key: \"${RPC_K}\" }, { id: b2, key: literal-key-000000000 } ] }",
        )
        .unwrap();
        assert_eq!(c.access.keys.len(), 2);
        assert_eq!(c.access.keys[0].hash, hash_key("env-key-0123456789abcdef"));
        assert!(
            c.secrets.iter().any(|s| s == "literal-key-000000000"),
            "a literal key is a secret too"
        );
        assert!(!format!("{:?}", c.access).contains("literal-key"));
        assert_eq!(
            find_key(&c.access, "literal-key-000000000").map(|k| k.id.as_str()),
            Some("b2")
        );
        assert!(find_key(&c.access, "literal-key-00000000").is_none());
        for (bad, why) in [
            ("access: { keys: [ { id: a, key: short } ] }", "at least 16"),
            (
                "access: { keys: [ { id: \"a b\", key: literal-key-000000000 } ] }",
                "key ids",
            ),
            (
                "access: { keys: [ { id: a, key: literal-key-000000000 }, { id: a, key: literal-key-000000001 } ] }",
                "duplicate",
            ),
            (
                "access: { keys: [ { id: a, key: literal-key-000000000 }, { id: b, key: literal-key-000000000 } ] }",
                "same value",
            ),
            ("access: { require_key: [nope] }", "unknown profile"),
            (
                "access: { keys: [ { id: a, key: literal-key-000000000, profiles: [nope] } ] }",
                "unknown profile",
            ),
        ] {
            let e = load(bad).err().unwrap_or_else(|| panic!("{bad} loaded"));
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("literal-key-000000000"), "{bad}: {e}");
        }
    }
}
