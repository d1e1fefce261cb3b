//! Live configuration (issue 6): the admin API adds, updates and removes chains and providers and reloads the file;
//! changes are validated, applied to all workers without dropping connections or in-flight requests, and persisted
//! atomically with backups. Concurrent updates under load lose no request and no update; the file on disk always
//! parses; a bad update is rejected and the running configuration stays; unauthenticated calls get 401.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "s3cret-admin-token";

fn admin(lasso: &Lasso, method: &str, path: &str, body: &str) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(
        lasso.addr(),
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

fn providers_of(lasso: &Lasso) -> u64 {
    get(lasso.addr(), "/api/chains").json()["chains"][0]["providers"]
        .as_u64()
        .unwrap()
}

fn start(p: &MockProvider, backups: &std::path::Path) -> Lasso {
    Lasso::builder(&single_chain(&[p]).yaml())
        .env("LASSO_ADMIN_TOKEN", TOKEN)
        .env("LASSO_BACKUP_DIR", backups.to_str().unwrap())
        .start()
}

#[test]
fn admin_api_requires_the_token_and_is_absent_without_one() {
    let p = MockProvider::start("p1");
    let plain = Lasso::start(&single_chain(&[&p]).yaml());
    assert_eq!(
        get(plain.addr(), "/api/admin/config").status,
        404,
        "disabled without LASSO_ADMIN_TOKEN"
    );
    let dir = tempfile::tempdir().unwrap();
    let lasso = start(&p, dir.path());
    assert_eq!(get(lasso.addr(), "/api/admin/config").status, 401);
    let wrong = request(
        lasso.addr(),
        "POST",
        "/api/admin/reload",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let r = admin(&lasso, "GET", "/api/admin/config", "");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("chain_id"), "{}", r.text());
}

#[test]
fn concurrent_updates_under_load_lose_no_request_and_no_update() {
    let p = MockProvider::start("p1");
    let extra: Vec<MockProvider> = (0..6)
        .map(|i| MockProvider::start(&format!("x{i}")))
        .collect();
    let backups = tempfile::tempdir().unwrap();
    let lasso = start(&p, backups.path());
    let path: PathBuf = lasso.config_path().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));

    // Load: a stream of reads on keep-alive connections for as long as the updates run.
    let load = {
        let (addr, done) = (lasso.addr(), done.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut sent = 0u64;
            let mut conn: Option<Conn> = None;
            while !done.load(Ordering::SeqCst) && sent < 20_000 {
                let c = conn.get_or_insert_with(|| Conn::connect(addr));
                match c.try_post(
                    "/rpc/ethereum",
                    &rpc(json!(sent), "eth_getTransactionReceipt", json!(["0x01"])),
                ) {
                    Ok(r) => {
                        if r.status != 200 || r.json()["id"] != json!(sent) {
                            errors.push(r.describe());
                        }
                        if r.header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        conn = None;
                        errors.push(format!("request {sent}: {e}"));
                    }
                }
                sent += 1;
            }
            (sent, errors)
        })
    };
    // Watcher: the file on disk parses at every moment.
    let watcher = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let text = std::fs::read_to_string(&path).expect("the file always exists");
                ::lasso::config::load_str(&text, &path, &|_| None)
                    .unwrap_or_else(|e| panic!("file did not parse mid-update: {e}"));
                reads += 1;
            }
            reads
        })
    };
    // Six concurrent updates, each adding one provider.
    let updates: Vec<_> = extra
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let addr = lasso.addr();
            let body = json!({"url": m.url(), "priority": 10 + i}).to_string();
            std::thread::spawn(move || {
                let auth = format!("Bearer {TOKEN}");
                request(
                    addr,
                    "PUT",
                    &format!("/api/admin/chains/ethereum/providers/x{i}"),
                    &[("Authorization", &auth)],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    for u in updates {
        let r = u.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    done.store(true, Ordering::SeqCst);
    let (sent, errors) = load.join().unwrap();
    let reads = watcher.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} of {sent} requests failed during reloads: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(sent > 0 && reads > 0);
    assert_eq!(providers_of(&lasso), 7, "no update was lost");
    let on_disk = ::lasso::config::load_file(&path).unwrap();
    assert_eq!(on_disk.providers.len(), 7);
    let backups_written = std::fs::read_dir(backups.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("chains-"))
        })
        .count();
    assert_eq!(backups_written, 6, "one timestamped backup per change");
    // Beside them, the last good configuration: the one running now.
    let last_good = std::fs::read_to_string(backups.path().join("last-good.yml")).unwrap();
    assert_eq!(last_good, std::fs::read_to_string(&path).unwrap());

    // The new providers serve: the provider override reaches one of them.
    let r = post(
        lasso.addr(),
        "/rpc/provider/x3/ethereum",
        &rpc(json!(1), "eth_getBalance", json!(["0x01", "0x10"])),
    );
    assert_eq!(
        served_by(&r.json()).as_deref(),
        Some("x3"),
        "{}",
        r.describe()
    );
    // Removing one works too.
    assert_eq!(
        admin(
            &lasso,
            "DELETE",
            "/api/admin/chains/ethereum/providers/x5",
            ""
        )
        .status,
        200
    );
    assert_eq!(providers_of(&lasso), 6);
}

#[test]
fn a_bad_update_is_rejected_and_the_running_configuration_stays() {
    let p = MockProvider::start("p1");
    let backups = tempfile::tempdir().unwrap();
    let lasso = start(&p, backups.path());
    let before = std::fs::read_to_string(lasso.config_path()).unwrap();
    let rows = [
        (
            "PUT",
            "/api/admin/chains/ethereum/providers/bad",
            r#"{"url":"ftp://nowhere"}"#,
            "unsupported scheme",
        ),
        (
            "PUT",
            "/api/admin/chains/ethereum",
            r#"{"providers":[]}"#,
            "chain_id",
        ),
        ("PUT", "/api/admin/config", "chains: [unclosed", "line"),
        (
            "DELETE",
            "/api/admin/chains/ethereum/providers/ghost",
            "",
            "no provider 'ghost'",
        ),
        (
            "PUT",
            "/api/admin/chains/ethereum/providers/x",
            "not a mapping",
            "mapping",
        ),
    ];
    for (method, path, body, why) in rows {
        let r = admin(&lasso, method, path, body);
        assert_eq!(r.status, 400, "{method} {path}: {}", r.describe());
        let v = r.json();
        assert!(
            v["error"].as_str().unwrap().contains(why),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(lasso.config_path()).unwrap(),
        before,
        "the file is unchanged"
    );
    assert_eq!(providers_of(&lasso), 1);
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(1), "eth_getBalance", json!(["0x01", "0x10"])),
    );
    assert_eq!(r.status, 200, "still serving");
}

#[test]
fn sighup_reloads_the_file_and_a_broken_file_keeps_the_running_config() {
    let p = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    let backups = tempfile::tempdir().unwrap();
    let lasso = start(&p, backups.path());
    let path = lasso.config_path().to_path_buf();
    std::fs::write(&path, single_chain(&[&p, &p2]).yaml()).unwrap();
    lasso.send_signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "SIGHUP reloads",
        || match providers_of(&lasso) {
            2 => Ok(()),
            n => Err(format!("{n} providers; logs: {}", lasso.logs())),
        },
    );
    std::fs::write(&path, "chains: {").unwrap();
    lasso.send_signal(libc::SIGHUP);
    assert!(
        lasso.wait_for_log("configuration change rejected", Duration::from_secs(10)),
        "{}",
        lasso.logs()
    );
    assert_eq!(providers_of(&lasso), 2, "the running configuration stays");
    let v: Value = get(lasso.addr(), "/api/health").json();
    assert_eq!(v["status"], "ok");
}

#[test]
fn other_methods_on_admin_endpoints_are_405_and_change_nothing() {
    let p = MockProvider::start("p1");
    let backups = tempfile::tempdir().unwrap();
    let lasso = start(&p, backups.path());
    let before = std::fs::read_to_string(lasso.config_path()).unwrap();
    let replacement = "chains: {}\n";
    for (method, path) in [
        ("DELETE", "/api/admin/config"),
        ("FROB", "/api/admin/config"),
        ("PATCH", "/api/admin/config"),
        ("GET", "/api/admin/reload"),
        ("GET", "/api/admin/chains/ethereum"),
        ("FROB", "/api/admin/chains/ethereum/providers/p1"),
    ] {
        let r = admin(&lasso, method, path, replacement);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.describe());
        assert!(
            r.header("allow").is_some(),
            "{method} {path}: no Allow header"
        );
        let v = r.json();
        assert_eq!(v["ok"], false, "{method} {path}: {v}");
        assert!(v["error"].is_string(), "{method} {path}: {v}");
    }
    assert_eq!(
        std::fs::read_to_string(lasso.config_path()).unwrap(),
        before,
        "the file is unchanged"
    );
    assert_eq!(providers_of(&lasso), 1);
}
