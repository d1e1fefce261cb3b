//! The Grafana board (`deployment/grafana/lasso.json`) and the Prometheus alert rules
//! (`deployment/prometheus/alerts.yml`): promtool accepts the rules and their unit tests, and every metric name the
//! board's and the rules' expressions use is exported by a running Lasso's `/metrics` (PromQL parsed crudely: the
//! identifiers that are neither functions, keywords, label names nor durations).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const BOARD: &str = "deployment/grafana/lasso.json";
const RULES: &str = "deployment/prometheus/alerts.yml";
const RULE_TESTS: &str = "deployment/prometheus/alerts.test.yml";

/// Series Prometheus records itself for every target (not exported by Lasso).
const SYNTHETIC: &[&str] = &["up"];

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e} (install it: apt-get install prometheus; .ci/run does)")
        })
}

/// Metric names used by one PromQL expression: identifiers left once strings, label matchers (`{...}`),
/// grouping clauses (`by (...)` and friends), range and offset durations (`[...]`) and Grafana variables are
/// taken out, that are not followed by `(` (a function) and are not keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    // Strings and `{...}` / `[...]` contents out.
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => s.push(c),
        }
    }
    // Grouping clauses: `by (a, b)`, `on(a)`, `group_left(a)`...
    let tokens: Vec<(usize, String)> = {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' || c == '.' {
                if cur.is_empty() {
                    start = i;
                }
                cur.push(c);
            } else if !cur.is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
        }
        if !cur.is_empty() {
            out.push((start, cur));
        }
        out
    };
    let mut names = BTreeSet::new();
    let mut skip_group = false;
    for (pos, tok) in tokens {
        let rest = s[pos + tok.len()..].trim_start();
        if skip_group {
            if s[..pos].trim_end().ends_with(['(', ',']) && !rest.starts_with('(') {
                // A label inside a grouping clause.
                if rest.starts_with(')') {
                    skip_group = false;
                }
                continue;
            }
            skip_group = false;
        }
        let lower = tok.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            skip_group = rest.starts_with('(');
            continue;
        }
        if rest.starts_with('(')
            || KEYWORDS.contains(&lower.as_str())
            || tok.starts_with('$')
            || tok
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '.')
        {
            continue;
        }
        names.insert(tok);
    }
    names
}

/// Every PromQL expression of the board: panel targets and template variable queries.
fn board_exprs(board: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = board["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("target expr").to_string());
        }
    }
    for v in board["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().expect("variable query");
            // label_values(metric{...}, label): the metric only.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m.to_string())
                .expect("label_values(metric, label)");
            out.push(inner);
        }
    }
    out
}

fn rule_exprs(rules: &str) -> Vec<(String, String)> {
    let doc: Value = serde_norway::from_str(rules).expect("the rules are YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            out.push((
                name.to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// Metric families exported on `/metrics` (from `# TYPE` lines; summaries also as `_sum` / `_count`).
fn exported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            out.insert(name.to_string());
            if kind == "summary" || kind == "histogram" {
                out.insert(format!("{name}_sum"));
                out.insert(format!("{name}_count"));
            }
            if kind == "histogram" {
                out.insert(format!("{name}_bucket"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            out.insert(name.to_string());
        }
    }
    out
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES]);
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let tests = promtool(&["test", "rules", RULE_TESTS]);
    assert!(
        tests.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&tests.stdout),
        String::from_utf8_lossy(&tests.stderr)
    );
}

#[test]
fn the_board_is_an_importable_grafana_dashboard() {
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(BOARD)).expect("read the board"))
            .expect("the board is JSON");
    assert_eq!(board["uid"], "lasso-overview");
    assert!(board["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars: Vec<&str> = board["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance", "profile", "chain"]);
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in board["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {p}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "grid: {p}");
        titles.push(p["title"].as_str().unwrap().to_string());
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            assert!(t["refId"].is_string() && t["expr"].is_string(), "{t}");
        }
    }
    // The views the issue asks for.
    for wanted in [
        "Requests per second",
        "Errors per second by JSON-RPC code",
        "Upstream latency p90 by provider and method",
        "Circuit breakers",
        "Head lag by provider (blocks)",
        "WebSocket clients",
        "Subscriptions: client vs upstream (multiplexing)",
        "Cluster nodes",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "{wanted} in {titles:?}");
    }
}

#[test]
fn crude_promql_parse_finds_metric_names_only() {
    let names = metric_names(
        r#"sum by (instance, job) (rate(lasso_a_total{code!~"-32700|x"}[5m])) / on (instance) group_left(chain) lasso_b > 0.05 and max(lasso_c{x="y"}) offset 5m == 1 or up{job="lasso"} == 0 and $var"#,
    );
    let want: BTreeSet<String> = ["lasso_a_total", "lasso_b", "lasso_c", "up"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
}

#[test]
fn every_metric_of_the_board_and_the_alerts_is_exported() {
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(BOARD)).expect("read the board"))
            .expect("the board is JSON");
    let rules = std::fs::read_to_string(root().join(RULES)).expect("read the rules");

    let mut used: Vec<(String, String)> = Vec::new();
    for e in board_exprs(&board) {
        for m in metric_names(&e) {
            used.push((format!("board: {e}"), m));
        }
    }
    let rules = rule_exprs(&rules);
    assert!(rules.len() >= 10, "every alert rule read: {rules:?}");
    for (alert, e) in &rules {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{alert}: no metric in {e}");
        for m in names {
            used.push((format!("alert {alert}"), m));
        }
    }
    let distinct: BTreeSet<&str> = used.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        distinct.len() >= 25,
        "the board and alerts use {distinct:?}"
    );

    // Lasso in front of two mock providers with head probes answering, a little traffic of every kind.
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    p1.set_result("eth_blockNumber", json!("0x20"));
    p2.set_result("eth_blockNumber", json!("0x1e"));
    let yaml = single_chain(&[&p1, &p2])
        .routing("merge_interval_ms", 200)
        .yaml();
    let lasso = Lasso::builder(&yaml).workers(2).start();
    let mut ws =
        support::ws::WsClient::connect(lasso.addr(), "/ws/rpc/ethereum").expect("ws connect");
    let mut notes = Vec::new();
    let answer = ws.call(1, "eth_getBalance", json!(["0x01", "0x10"]), &mut notes);
    assert!(answer.get("result").is_some(), "{answer}");

    let text = eventually(
        Duration::from_secs(20),
        "every used metric exported",
        || {
            for i in 0..5 {
                let r = post(
                    lasso.addr(),
                    "/rpc/ethereum",
                    &rpc(json!(i), "eth_getBalance", json!(["0x01", "0x10"])),
                );
                assert_eq!(r.status, 200, "{}", r.describe());
            }
            assert_eq!(post(lasso.addr(), "/rpc/ethereum", "{nope").status, 400);
            let r = get(lasso.addr(), "/metrics");
            assert_eq!(r.status, 200);
            let text = r.text();
            let have = exported(&text);
            let missing: Vec<String> = used
                .iter()
                .filter(|(_, m)| !have.contains(m) && !SYNTHETIC.contains(&m.as_str()))
                .map(|(w, m)| format!("{m} ({w})"))
                .collect();
            if missing.is_empty() {
                Ok(text)
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    );
    // Prometheus conventions: counters end in `_total`, nothing else does.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            assert!(name.starts_with("lasso_"), "{line}");
        }
    }
}
