//! The JSON-RPC route grammar: `/rpc/:chain`, `/rpc/:strategy/:chain`, `/rpc/provider/:id/:chain`, each optionally under
//! `/rpc/profile/:profile/`, resolved against the configuration into a [`Target`] (which profile, chain and how to pick
//! providers) or the error a client should see.

use crate::config::Config;
use crate::config::Strategy;
use crate::error::{ResourceKind, RpcError};

/// How providers are picked for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Strategy(Strategy),
    /// One named provider (`pid`).
    Provider(usize),
}

/// A resolved JSON-RPC route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub profile: usize,
    pub chain: usize,
    pub pick: Pick,
    /// With a provider override: fail over to the chain's other providers when it fails (`?failover=true`).
    pub failover: bool,
    /// The client asked not to be served from, nor to fill, the response cache (`X-Lasso-Cache: bypass`).
    pub cache_bypass: bool,
}

impl Target {
    pub fn with_failover(self, failover: bool) -> Self {
        Target { failover, ..self }
    }

    pub fn with_cache_bypass(self, cache_bypass: bool) -> Self {
        Target {
            cache_bypass,
            ..self
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Selection<'a> {
    Default,
    Strategy(&'a str),
    Provider(&'a str),
}

#[derive(Debug, PartialEq, Eq)]
struct RpcPath<'a> {
    profile: Option<&'a str>,
    selection: Selection<'a>,
    chain: &'a str,
}

/// The prefix of a transport: `/rpc` for HTTP, `/ws/rpc` for WebSocket.
fn parse_rpc_path<'a>(path: &'a str, prefix: &str) -> Option<RpcPath<'a>> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (profile, segments) = match segments.as_slice() {
        ["profile", name, tail @ ..] => (Some(*name), tail),
        all => (None, all),
    };
    let (selection, chain) = match segments {
        [chain] => (Selection::Default, *chain),
        ["provider", id, chain] => (Selection::Provider(id), *chain),
        [strategy, chain] if *strategy != "provider" && *strategy != "profile" => {
            (Selection::Strategy(strategy), *chain)
        }
        _ => return None,
    };
    Some(RpcPath {
        profile,
        selection,
        chain,
    })
}

/// Resolves `path` (under `prefix`) against `config`.
pub fn resolve(config: &Config, path: &str, prefix: &str) -> Result<Target, RpcError> {
    let parsed = parse_rpc_path(path, prefix).ok_or(RpcError::UnknownPath)?;
    let (profile_index, profile) = match parsed.profile {
        None => (0, &config.profiles[0]),
        Some(name) => config.profile(name).ok_or_else(|| RpcError::NotFound {
            kind: ResourceKind::Profile,
            name: name.to_string(),
        })?,
    };
    let (chain_index, chain) = profile
        .chain(parsed.chain)
        .ok_or_else(|| RpcError::NotFound {
            kind: ResourceKind::Chain,
            name: parsed.chain.to_string(),
        })?;
    let pick = match parsed.selection {
        Selection::Default => Pick::Strategy(chain.default_strategy),
        Selection::Strategy(s) => Pick::Strategy(
            s.parse()
                .map_err(|_| RpcError::UnknownStrategy(s.to_string()))?,
        ),
        Selection::Provider(id) => Pick::Provider(
            chain
                .providers
                .iter()
                .copied()
                .find(|&pid| config.providers[pid].id == id)
                .ok_or_else(|| RpcError::NotFound {
                    kind: ResourceKind::Provider,
                    name: id.to_string(),
                })?,
        ),
    };
    Ok(Target {
        profile: profile_index,
        chain: chain_index,
        pick,
        failover: false,
        cache_bypass: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_table() {
        let rows: &[(&str, Option<RpcPath>)] = &[
            (
                "/rpc/eth",
                Some(RpcPath {
                    profile: None,
                    selection: Selection::Default,
                    chain: "eth",
                }),
            ),
            (
                "/rpc/eth/",
                Some(RpcPath {
                    profile: None,
                    selection: Selection::Default,
                    chain: "eth",
                }),
            ),
            (
                "/rpc/fastest/1",
                Some(RpcPath {
                    profile: None,
                    selection: Selection::Strategy("fastest"),
                    chain: "1",
                }),
            ),
            (
                "/rpc/provider/p1/eth",
                Some(RpcPath {
                    profile: None,
                    selection: Selection::Provider("p1"),
                    chain: "eth",
                }),
            ),
            (
                "/rpc/profile/pro/eth",
                Some(RpcPath {
                    profile: Some("pro"),
                    selection: Selection::Default,
                    chain: "eth",
                }),
            ),
            (
                "/rpc/profile/pro/cheapest/eth",
                Some(RpcPath {
                    profile: Some("pro"),
                    selection: Selection::Strategy("cheapest"),
                    chain: "eth",
                }),
            ),
            (
                "/rpc/profile/pro/provider/x/eth",
                Some(RpcPath {
                    profile: Some("pro"),
                    selection: Selection::Provider("x"),
                    chain: "eth",
                }),
            ),
            ("/rpc", None),
            ("/rpc/", None),
            ("/rpc/a/b/c/d", None),
            ("/rpc/provider/eth", None),
            ("/rpcx/eth", None),
            ("/rpc//eth", None),
        ];
        for (path, expected) in rows {
            assert_eq!(&parse_rpc_path(path, "/rpc"), expected, "{path}");
        }
        assert!(parse_rpc_path("/ws/rpc/eth", "/ws/rpc").is_some());
    }
}
