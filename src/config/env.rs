//! Every environment variable Lasso reads, in one place. Each variable is a named constant; [`ALL`] lists them so the
//! test harness can scrub exactly this set. Values are read through a [`Source`] (the process environment by
//! default, [`process`]; a map in tests), so the parsing here can be tested without touching the real environment.
//! `${VAR}` references inside the config file are resolved through the same source, limited to the names
//! `LASSO_EXPAND_ALLOW` admits and never Lasso's own variables ([`may_expand`]).

/// Resolves one variable name to its value; `None` when unset.
pub type Source<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as a [`Source`] (unset or non-UTF-8 values are `None`).
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Config file path (seeded from the image default when it names a missing file).
pub const CHAINS_PATH: &str = "LASSO_CHAINS_PATH";
/// Where the image keeps its default chains file (default `/app/config/chains.yml`).
pub const DEFAULT_CHAINS_PATH: &str = "LASSO_DEFAULT_CHAINS_PATH";
/// Worker threads (command-line equivalent `--workers`).
pub const WORKERS: &str = "LASSO_WORKERS";
/// Listening port (command-line equivalent `--port`).
pub const PORT: &str = "PORT";
/// Bind address (command-line equivalent `--bind`).
pub const BIND: &str = "LASSO_BIND";
/// `legacy` selects the epoll driver instead of io_uring.
pub const DRIVER: &str = "LASSO_DRIVER";
/// `plain` sets io_uring rings up without `SINGLE_ISSUER`, `DEFER_TASKRUN` and `COOP_TASKRUN` (to compare).
pub const RING_FLAGS: &str = "LASSO_RING_FLAGS";
/// `json` switches logs to JSON lines.
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Log filter (tracing `EnvFilter` syntax; default `info`).
pub const RUST_LOG: &str = "RUST_LOG";
/// Share of requests sampled into the access log (default 0.01).
pub const LOG_SAMPLE_RATE: &str = "LOG_SAMPLE_RATE";
/// Bearer token enabling the admin API; unset or empty = admin API disabled.
pub const ADMIN_TOKEN: &str = "LASSO_ADMIN_TOKEN";
/// A read-only token opening the dashboard (besides `dashboard.token` in the file and the admin token).
pub const DASHBOARD_TOKEN: &str = "LASSO_DASHBOARD_TOKEN";
/// Directory for timestamped backups of the config file before each write.
pub const BACKUP_DIR: &str = "LASSO_BACKUP_DIR";
/// Default `routing.snapshots_dir`.
pub const SNAPSHOTS_DIR: &str = "LASSO_SNAPSHOTS_DIR";
/// Node id, first choice.
pub const NODE_ID: &str = "LASSO_NODE_ID";
/// Node id, second choice (set by Fly.io).
pub const FLY_MACHINE_ID: &str = "FLY_MACHINE_ID";
/// Node id, third choice (before the kernel's host name).
pub const HOSTNAME: &str = "HOSTNAME";
/// Region, first choice (set by Fly.io).
pub const FLY_REGION: &str = "FLY_REGION";
/// Region, second choice.
pub const CLUSTER_REGION: &str = "CLUSTER_REGION";
/// Shared secret required for any inter-node call.
pub const CLUSTER_SECRET: &str = "LASSO_CLUSTER_SECRET";
/// Host name whose A and AAAA records are the cluster's nodes.
pub const CLUSTER_DNS_QUERY: &str = "CLUSTER_DNS_QUERY";
/// Comma-separated `host:port` seed list.
pub const CLUSTER_SEEDS: &str = "CLUSTER_SEEDS";
/// File holding a seed list, re-read at every poll.
pub const CLUSTER_SEEDS_FILE: &str = "CLUSTER_SEEDS_FILE";
/// Port of DNS answers and of seeds without one (default: this node's port).
pub const CLUSTER_PORT: &str = "CLUSTER_PORT";
/// Cluster discovery poll interval in ms (default 5000).
pub const CLUSTER_POLL_MS: &str = "CLUSTER_POLL_MS";
/// Expected number of nodes (default: the number discovered).
pub const EXPECTED_NODE_COUNT: &str = "EXPECTED_NODE_COUNT";

/// Which variables `${VAR}` in the config file may expand: comma-separated names, `PREFIX*` or `*SUFFIX` patterns
/// (default `RPC_*,*_API_KEY`, `crate::config::defaults::DEFAULT_EXPAND_ALLOW`). Lasso's own `LASSO_*` variables
/// never are.
pub const EXPAND_ALLOW: &str = "LASSO_EXPAND_ALLOW";

/// Every variable above: what the test harness removes from each process it starts.
pub const ALL: &[&str] = &[
    CHAINS_PATH,
    DEFAULT_CHAINS_PATH,
    WORKERS,
    PORT,
    BIND,
    DRIVER,
    RING_FLAGS,
    LOG_FORMAT,
    RUST_LOG,
    LOG_SAMPLE_RATE,
    ADMIN_TOKEN,
    DASHBOARD_TOKEN,
    BACKUP_DIR,
    SNAPSHOTS_DIR,
    NODE_ID,
    FLY_MACHINE_ID,
    HOSTNAME,
    FLY_REGION,
    CLUSTER_REGION,
    CLUSTER_SECRET,
    CLUSTER_DNS_QUERY,
    CLUSTER_SEEDS,
    CLUSTER_SEEDS_FILE,
    CLUSTER_PORT,
    CLUSTER_POLL_MS,
    EXPECTED_NODE_COUNT,
    EXPAND_ALLOW,
];

/// True when `${name}` may be expanded from the environment: `name` matches `LASSO_EXPAND_ALLOW` (default
/// `RPC_*,*_API_KEY`) and
/// is none of Lasso's own variables (anything in [`ALL`], anything starting `LASSO_`), so whoever can write the config
/// (the admin API) cannot copy the cluster secret, the admin token or another process secret into a provider URL.
pub fn may_expand(env: Source, name: &str) -> bool {
    if name.starts_with("LASSO_") || ALL.contains(&name) {
        return false;
    }
    let allow = env(EXPAND_ALLOW)
        .unwrap_or_else(|| crate::config::defaults::DEFAULT_EXPAND_ALLOW.to_string());
    allow
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| match (p.strip_suffix('*'), p.strip_prefix('*')) {
            (Some(prefix), _) => name.starts_with(prefix),
            (None, Some(suffix)) => name.ends_with(suffix),
            (None, None) => name == p,
        })
}

/// The log sample rate (`LOG_SAMPLE_RATE`), default 0.01 when unset or unparsable.
pub fn log_sample_rate(env: Source) -> f64 {
    env(LOG_SAMPLE_RATE)
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LOG_SAMPLE_RATE)
}

/// Access-log sample rate when `LOG_SAMPLE_RATE` is unset.
pub const DEFAULT_LOG_SAMPLE_RATE: f64 = 0.01;

/// True when `LOG_FORMAT=json` (any case).
pub fn json_logs(env: Source) -> bool {
    env(LOG_FORMAT).is_some_and(|v| v.eq_ignore_ascii_case("json"))
}

/// True when `LASSO_DRIVER=legacy` asks for the epoll driver.
pub fn legacy_driver(env: Source) -> bool {
    env(DRIVER).as_deref() == Some("legacy")
}

/// True when `LASSO_RING_FLAGS=plain` asks for io_uring rings without the tuned set-up flags.
pub fn plain_ring(env: Source) -> bool {
    env(RING_FLAGS).as_deref() == Some("plain")
}

/// The admin token, `None` (admin API disabled) when unset or empty.
pub fn admin_token(env: Source) -> Option<String> {
    env(ADMIN_TOKEN).filter(|t| !t.is_empty())
}

/// The dashboard token from `LASSO_DASHBOARD_TOKEN`, if set and not empty.
pub fn dashboard_token(env: Source) -> Option<String> {
    env(DASHBOARD_TOKEN).filter(|t| !t.is_empty())
}

/// The node id from `LASSO_NODE_ID`, `FLY_MACHINE_ID`, `HOSTNAME` (first non-empty), if any.
pub fn node_id(env: Source) -> Option<String> {
    [NODE_ID, FLY_MACHINE_ID, HOSTNAME]
        .into_iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()))
}

/// The region from `FLY_REGION`, else `CLUSTER_REGION`.
pub fn region(env: Source) -> Option<String> {
    env(FLY_REGION).or_else(|| env(CLUSTER_REGION))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| m.get(name).cloned()
    }

    #[test]
    fn all_lists_each_variable_once() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(seen.insert(name), "{name} listed twice");
        }
    }

    #[test]
    fn node_id_skips_empty_values_in_order() {
        let env = map(&[(NODE_ID, ""), (FLY_MACHINE_ID, "m1"), (HOSTNAME, "h")]);
        assert_eq!(node_id(&env).as_deref(), Some("m1"));
        assert_eq!(node_id(&map(&[])), None);
    }

    #[test]
    fn expansion_admits_only_allowed_names_and_never_lassos_own() {
        let none = map(&[]);
        assert!(may_expand(&none, "RPC_ALCHEMY_KEY"));
        assert!(may_expand(&none, "ALCHEMY_API_KEY"));
        assert!(!may_expand(&none, "ALCHEMY_KEY"));
        assert!(!may_expand(&none, "AWS_SECRET_ACCESS_KEY"));
        assert!(!may_expand(&none, "LASSO_API_KEY"));
        let only = map(&[(EXPAND_ALLOW, "ALCHEMY_KEY")]);
        assert!(may_expand(&only, "ALCHEMY_KEY"));
        assert!(!may_expand(&only, "RPC_X"));
        let env = map(&[(EXPAND_ALLOW, "ALCHEMY_KEY, INFURA_*, *")]);
        assert!(may_expand(&env, "ALCHEMY_KEY"));
        assert!(may_expand(&env, "INFURA_PROJECT"));
        // Even `*` never reaches Lasso's own secrets.
        for own in [
            CLUSTER_SECRET,
            ADMIN_TOKEN,
            EXPAND_ALLOW,
            "LASSO_ANYTHING",
            HOSTNAME,
        ] {
            assert!(!may_expand(&env, own), "{own}");
        }
    }

    #[test]
    fn parsed_values_fall_back_to_defaults() {
        let env = map(&[
            (LOG_SAMPLE_RATE, "nope"),
            (LOG_FORMAT, "JSON"),
            (DRIVER, "uring"),
        ]);
        assert_eq!(log_sample_rate(&env), DEFAULT_LOG_SAMPLE_RATE);
        assert!(json_logs(&env));
        assert!(!legacy_driver(&env));
        assert_eq!(admin_token(&map(&[(ADMIN_TOKEN, "")])), None);
        assert_eq!(
            region(&map(&[(CLUSTER_REGION, "ams")])).as_deref(),
            Some("ams")
        );
    }
}
