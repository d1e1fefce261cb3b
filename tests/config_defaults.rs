//! docs/CONTRACT.md documents every configuration default; this holds those values to the constants in
//! `src/config/defaults.rs`, so changing a default without the contract (or the reverse) fails here.

use std::collections::BTreeMap;

use lasso::config::defaults;

/// Top-level config sections whose YAML blocks in the contract show defaults.
const SECTIONS: &[&str] = &[
    "server",
    "upstream",
    "routing",
    "websocket",
    "telemetry",
    "dashboard",
    "access",
    "cache",
];

/// The YAML lines under each of `SECTIONS` in the contract's ```yaml blocks (the examples around them are skipped).
fn documented_sections(contract: &str) -> String {
    let mut out = String::new();
    let mut in_yaml = false;
    let mut keep = false;
    for line in contract.lines() {
        if line.starts_with("```") {
            in_yaml = line.trim() == "```yaml";
            keep = false;
            continue;
        }
        if !in_yaml {
            continue;
        }
        if !line.starts_with(' ') && !line.trim().is_empty() {
            let key = line.split(':').next().unwrap_or("").trim();
            keep = SECTIONS.contains(&key);
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn flatten(prefix: &str, value: &serde_norway::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_norway::Value::Mapping(map) => {
            for (k, v) in map {
                let k = k.as_str().expect("string keys");
                let key = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_norway::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        serde_norway::Value::Number(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        serde_norway::Value::Bool(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        other => panic!("{prefix}: unexpected documented value {other:?}"),
    }
}

fn same_value(documented: &str, constant: &str) -> bool {
    match (documented.parse::<f64>(), constant.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => documented == constant,
    }
}

#[test]
fn contract_defaults_match_the_constants() {
    let contract =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONTRACT.md"))
            .expect("read docs/CONTRACT.md");
    let yaml = documented_sections(&contract);
    let value: serde_norway::Value = serde_norway::from_str(&yaml).expect("contract YAML parses");
    let mut documented = BTreeMap::new();
    flatten("", &value, &mut documented);
    let sections: Vec<&str> = documented
        .keys()
        .filter_map(|k| k.split('.').next())
        .collect();
    assert!(
        sections.contains(&"server")
            && sections.contains(&"upstream")
            && sections.contains(&"routing"),
        "the contract's config reference was not found: {documented:?}"
    );

    let mut problems = Vec::new();
    for (key, constant) in defaults::table() {
        let section = key.split('.').next().unwrap();
        match documented.get(key) {
            Some(doc) if same_value(doc, &constant) => {}
            Some(doc) => problems.push(format!(
                "{key}: contract says {doc}, constant is {constant}"
            )),
            // A section the contract does not show (websocket) is not held to it; a shown one must list every key.
            None if sections.contains(&section) => problems.push(format!(
                "{key}: default {constant} missing from the contract"
            )),
            None => {}
        }
    }
    assert!(
        problems.is_empty(),
        "docs/CONTRACT.md drifted:\n{}",
        problems.join("\n")
    );
}
