//! `lasso check-config FILE` (docs/CONTRACT.md, "Command line").

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::*;

fn check_config(path: &Path, env: &[(&str, &str)]) -> Output {
    run_lasso(
        &["check-config", path.to_str().unwrap()],
        env,
        Duration::from_secs(20),
    )
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn shipped_configs_are_valid() {
    let mut failures = Vec::new();
    for rel in ["config/chains.yml", "config/local.yml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        if !path.exists() {
            failures.push(format!("{rel} does not exist"));
            continue;
        }
        let out = check_config(&path, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(0) || !stdout.contains("ok:") {
            failures.push(format!("{rel}: {}", show(&out)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const GOOD: &str = r#"
chains:
  ethereum:
    chain_id: 1
    aliases: [eth]
    default_strategy: priority
    providers:
      - id: p1
        url: http://127.0.0.1:1/a
      - id: p2
        url: "http://127.0.0.1:2/${RPC_TEST_SET_VAR}"
        headers: { X-Api-Key: "{api_key}" }
        api_key: "k"
  base:
    chain_id: "0x2105"
    providers:
      - id: b1
        url: http://127.0.0.1:3
"#;

#[test]
fn valid_config_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.yml");
    std::fs::write(&path, GOOD).unwrap();
    let out = check_config(&path, &[("RPC_TEST_SET_VAR", "v")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: 2 chains, 3 providers"),
        "{}",
        show(&out)
    );
}

/// (name, YAML, texts that must all appear on stderr besides the file name)
const BROKEN: &[(&str, &str, &[&str])] = &[
    (
        "unknown_strategy",
        r#"
chains:
  ethereum:
    chain_id: 1
    default_strategy: bogus
    providers:
      - id: p1
        url: http://127.0.0.1:1
"#,
        &["chains.ethereum.default_strategy"],
    ),
    (
        "missing_url",
        r#"
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: p1
        name: "no url here"
"#,
        &["chains.ethereum.providers", "url"],
    ),
    (
        "duplicate_provider_id",
        r#"
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: dup1
        url: http://127.0.0.1:1
      - id: dup1
        url: http://127.0.0.1:2
"#,
        &["chains.ethereum.providers", "dup1"],
    ),
    (
        "bad_yaml",
        "chains:\n  ethereum: [unclosed, {\n    chain_id: 1\n",
        &[],
    ),
    (
        "unset_env_var",
        r#"
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: p1
        url: "http://127.0.0.1:1/${RPC_TEST_DEFINITELY_UNSET_VAR}"
"#,
        &[
            "chains.ethereum.providers",
            "url",
            "RPC_TEST_DEFINITELY_UNSET_VAR",
        ],
    ),
    (
        "unset_env_var_in_header",
        r#"
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: p1
        url: "http://127.0.0.1:1/"
        headers: { X-Key: "${RPC_TEST_DEFINITELY_UNSET_VAR2}" }
"#,
        &[
            "chains.ethereum.providers",
            "headers",
            "RPC_TEST_DEFINITELY_UNSET_VAR2",
        ],
    ),
    (
        "bad_chain_id",
        r#"
chains:
  ethereum:
    chain_id: not-a-number
    providers:
      - id: p1
        url: http://127.0.0.1:1
"#,
        &["chains.ethereum.chain_id"],
    ),
    (
        "bad_server_value",
        r#"
server:
  max_body_bytes: lots
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: p1
        url: http://127.0.0.1:1
"#,
        &["server.max_body_bytes"],
    ),
];

#[test]
fn broken_configs_are_rejected_with_file_and_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, yaml, needles) in BROKEN {
        let path = dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let out = check_config(&path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push("exit code is not 1".to_string());
        }
        if !stderr.contains(path.to_str().unwrap()) {
            problems.push("stderr does not name the file".to_string());
        }
        for n in *needles {
            if !stderr.contains(n) {
                problems.push(format!("stderr lacks {n:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("[{name}] {}\n{}", problems.join("; "), show(&out)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.yml");
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does-not-exist.yml"),
        "{}",
        show(&out)
    );
}

/// `LASSO_CHAINS_PATH` naming a missing file is seeded from the image default (seed 000 section 4).
#[test]
fn missing_chains_path_is_seeded_from_the_image_default() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("image-chains.yml");
    std::fs::write(&default, "chains:\n  dev:\n    chain_id: 1337\n    providers:\n      - { id: a, url: \"http://127.0.0.1:9\" }\n").unwrap();
    let target = dir.path().join("data/chains.yml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lasso"))
        .args(["--port", "0", "--bind", "127.0.0.1", "--workers", "1"])
        .env("LASSO_CHAINS_PATH", &target)
        .env("LASSO_DEFAULT_CHAINS_PATH", &default)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.is_ok(), "lasso did not start from the seeded file");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        std::fs::read_to_string(&default).unwrap()
    );
}
