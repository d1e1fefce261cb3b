//! The admin plane under attack (hardening issue, items 13 and 17): what the admin token (or a guess at it) can
//! reach. A profile path cannot read a file outside the config file's directory and no error quotes a file's
//! content; `${VAR}` cannot copy Lasso's own secrets (or any variable outside `LASSO_EXPAND_ALLOW`) into a provider
//! URL; a file that failed its SIGHUP does not stop the next start (the last good configuration runs, loudly); and
//! failed admin-token and cluster-secret attempts are logged without what was presented and limited per address.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::*;

const TOKEN: &str = "adm1n-t0ken-for-tests";

fn admin_put(lasso: &Lasso, body: &str) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(
        lasso.addr(),
        "PUT",
        "/api/admin/config",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/yaml"),
        ],
        body.as_bytes(),
    )
}

fn balance(lasso: &Lasso, path: &str) -> Response {
    post(
        lasso.addr(),
        path,
        &rpc(json!(7), "eth_getBalance", json!(["0x1", "latest"])),
    )
}

#[test]
fn a_profile_path_reads_nothing_outside_the_config_directory_and_no_error_quotes_a_file() {
    let p = MockProvider::start("p1");
    let outer = tempfile::tempdir().unwrap();
    let conf = outer.path().join("conf");
    std::fs::create_dir_all(conf.join("profiles")).unwrap();
    let secret = outer.path().join("secret.txt");
    std::fs::write(&secret, "root:x:0:0:SENTINEL-outside:/root:/bin/bash\n").unwrap();
    std::fs::write(conf.join("notes.txt"), "hunter2 SENTINEL-inside\n").unwrap();
    std::os::unix::fs::symlink(&secret, conf.join("profiles/link.yml")).unwrap();
    let base = single_chain(&[&p]).yaml();
    let lasso = Lasso::builder(&base)
        .in_dir(&conf)
        .env("LASSO_ADMIN_TOKEN", TOKEN)
        .file(
            "profiles/other.yml",
            &single_chain(&[&p]).yaml().replace("ethereum", "other-eth"),
        )
        .start();
    let on_disk = std::fs::read_to_string(lasso.config_path()).unwrap();
    let with_profile = |path: &str| format!("{base}profiles:\n  other: \"{path}\"\n");
    for (path, why) in [
        ("/etc/passwd", "inside the config file's directory"),
        ("../secret.txt", "'..'"),
        ("profiles/../../secret.txt", "'..'"),
        (
            secret.to_str().unwrap(),
            "inside the config file's directory",
        ),
        ("profiles/link.yml", "inside the config file's directory"),
        ("notes.txt", "invalid type"),
        ("/proc/self/environ", "inside the config file's directory"),
    ] {
        let r = admin_put(&lasso, &with_profile(path));
        assert_eq!(r.status, 400, "{path}: {}", r.describe());
        let text = r.text();
        // The error names the entry (or, for a file that is read but is not a profile, that file).
        assert!(
            text.contains("profiles.other") || text.contains("conf/notes.txt"),
            "{path}: {text}"
        );
        assert!(text.contains(why), "{path}: {text}");
        for leaked in ["root:", "SENTINEL", "hunter2", "/bin/bash"] {
            assert!(!text.contains(leaked), "{path} leaked {leaked}: {text}");
        }
    }
    // Nothing changed: the file, and what is served.
    assert_eq!(
        std::fs::read_to_string(lasso.config_path()).unwrap(),
        on_disk
    );
    assert_eq!(
        balance(&lasso, "/rpc/profile/other/other-eth").status,
        404,
        "no profile was added"
    );
    // A profile file inside the directory still works.
    let r = admin_put(&lasso, &with_profile("profiles/other.yml"));
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = balance(&lasso, "/rpc/profile/other/other-eth");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(!lasso.logs().contains("SENTINEL"), "{}", lasso.logs());
}

#[test]
fn the_admin_token_cannot_copy_lassos_secrets_into_a_provider_url() {
    let p = MockProvider::start("p1");
    let catcher = MockProvider::start("catcher");
    catcher.set_chain_id("0x1");
    let lasso = Lasso::builder(&single_chain(&[&p]).yaml())
        .env("LASSO_ADMIN_TOKEN", TOKEN)
        .env("LASSO_CLUSTER_SECRET", "cluster-SENTINEL")
        .env("AWS_SECRET_ACCESS_KEY", "aws-SENTINEL")
        .env("RPC_CATCHER_KEY", "allowed-key")
        // Patterns that match Lasso's own variables by name: those stay refused all the same.
        .env("LASSO_EXPAND_ALLOW", "RPC_*,*_SECRET,*_TOKEN")
        .start();
    let with = |provider: &str| {
        format!(
            "chains:\n  ethereum:\n    chain_id: 1\n    providers:\n      - {{ id: p1, url: \"{}\" }}\n      - {provider}\n",
            p.url()
        )
    };
    let url = catcher.url();
    for var in [
        "LASSO_CLUSTER_SECRET",
        "LASSO_ADMIN_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        for provider in [
            format!("{{ id: c, url: \"{url}/${{{var}}}\" }}"),
            format!("{{ id: c, url: \"{url}/{{api_key}}\", api_key: \"${{{var}}}\" }}"),
            format!("{{ id: c, url: \"{url}/\", headers: {{ X-Leak: \"${{{var}:-x}}\" }} }}"),
            format!("{{ id: c, url: \"{url}/\", ws_url: \"ws://127.0.0.1:1/${{{var}}}\" }}"),
        ] {
            let r = admin_put(&lasso, &with(&provider));
            assert_eq!(r.status, 400, "{provider}: {}", r.describe());
            let text = r.text();
            assert!(text.contains("may not be expanded"), "{provider}: {text}");
            assert!(!text.contains("SENTINEL"), "{provider}: {text}");
        }
    }
    // Nothing carrying a secret ever reached the catcher (not even a start-up chain-id probe).
    for rec in catcher.recorded() {
        let seen = format!(
            "{} {:?} {}",
            rec.path,
            rec.headers,
            String::from_utf8_lossy(&rec.raw)
        );
        assert!(!seen.contains("SENTINEL"), "{seen}");
    }
    // An allowed name still expands (the control: the refusals above are about the names).
    let r = admin_put(
        &lasso,
        &with(&format!("{{ id: c, url: \"{url}/${{RPC_CATCHER_KEY}}\" }}")),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        catcher.recorded().iter().any(|r| r.path == "/allowed-key"),
        "{:?}",
        catcher
            .recorded()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
}

/// Starts Lasso on the config already in `dir` (the builder writes the same text again).
fn start_in(dir: &Path, yaml: &str) -> Lasso {
    Lasso::builder(yaml).in_dir(dir).workers(1).start()
}

#[test]
fn a_file_that_failed_its_sighup_does_not_stop_the_next_start() {
    let p = MockProvider::start("p1");
    let dir = tempfile::tempdir().unwrap();
    let good = single_chain(&[&p]).yaml();
    let mut first = start_in(dir.path(), &good);
    let path = first.config_path().to_path_buf();
    // A hand edit that does not validate: SIGHUP rejects it and the proxy keeps serving.
    let bad = good.replace("chain_id: 1", "chain_id: 0");
    std::fs::write(&path, &bad).unwrap();
    first.send_signal(libc::SIGHUP);
    assert!(
        first.wait_for_log("configuration change rejected", Duration::from_secs(10)),
        "{}",
        first.logs()
    );
    let r = balance(&first, "/rpc/ethereum");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(served_by(&r.json()).as_deref(), Some("p1"));
    first.send_signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(20)).success());

    // The next start runs the last good configuration, with an ERROR naming both files; the file stays as it is.
    let second = start_in(dir.path(), &bad);
    let logs = second.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("does not validate"))
        .unwrap_or_else(|| panic!("no fallback line:\n{logs}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains(".lasso.yml.last-good"), "{line}");
    assert!(line.contains("chain_id"), "the reason is named: {line}");
    let r = balance(&second, "/rpc/ethereum");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);

    // Without any good configuration behind it, a bad file still fails the start.
    let fresh = tempfile::tempdir().unwrap();
    let lone = fresh.path().join("lasso.yml");
    std::fs::write(&lone, &bad).unwrap();
    let out = run_lasso(
        &[
            "--config",
            lone.to_str().unwrap(),
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chain_id"),
        "{out:?}"
    );
}

#[test]
fn failed_admin_and_cluster_authentication_is_logged_and_limited_per_address() {
    let p = MockProvider::start("p1");
    let yaml = single_chain(&[&p])
        .server("auth_max_failures", 3)
        .server("auth_failure_window_ms", 1500)
        .yaml();
    let lasso = Lasso::builder(&yaml)
        .env("LASSO_ADMIN_TOKEN", TOKEN)
        .env("LASSO_CLUSTER_SECRET", "cluster-secret-for-tests")
        .start();
    let admin = |token: &str| {
        let auth = format!("Bearer {token}");
        request(
            lasso.addr(),
            "GET",
            "/api/admin/config",
            &[("Authorization", &auth)],
            b"",
        )
    };
    // Two wrong admin tokens and one wrong cluster signature: three failures from this address.
    for guess in ["guess-SENTINEL-1", "guess-SENTINEL-2"] {
        assert_eq!(admin(guess).status, 401);
    }
    let forged =
        ::lasso::ops::signature::authorization(b"guess-SENTINEL-3", "GET", "/api/cluster/node");
    let r = request(
        lasso.addr(),
        "GET",
        "/api/cluster/node",
        &[("Authorization", &forged)],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    // Now every authenticated endpoint refuses this address, the right token included, until the window ends.
    let r = admin(TOKEN);
    assert_eq!(r.status, 429, "{}", r.describe());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let r = request(
        lasso.addr(),
        "GET",
        "/api/cluster/status",
        &[("Authorization", "Bearer cluster-secret-for-tests")],
        b"",
    );
    assert_eq!(r.status, 429, "{}", r.describe());
    // Clients of the proxy are not affected.
    let r = balance(&lasso, "/rpc/ethereum");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["id"], json!(7));
    // Each failure is logged with the address, never with what was presented (lines reach stdout through the log
    // queue: wait for all three).
    let logs = eventually(
        Duration::from_secs(5),
        "three `authentication failed` lines",
        || {
            let logs = lasso.logs();
            match logs.matches("authentication failed").count() {
                3 => Ok(logs),
                n => Err(format!("{n} lines:\n{logs}")),
            }
        },
    );
    assert!(logs.contains("peer=127.0.0.1"), "{logs}");
    assert!(logs.contains("refused (429)"), "{logs}");
    assert!(!logs.contains("SENTINEL"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
    // The window passes; the right token works again.
    eventually(Duration::from_secs(10), "the window ends", || {
        let r = admin(TOKEN);
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.describe())
        }
    });
}
