//! The operator dashboard (`/dashboard`, `/dashboard/:profile`): off unless configured; pages and data behind the
//! dashboard token or the admin token, a token exchanged once for a signed session cookie that also opens the event
//! stream; never `Access-Control-Allow-Origin`; a profile's data holds that profile only. The browser test (headless
//! Chromium over the same pages) is `dashboard_in_a_browser` below.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::sse::EventStream;
use support::*;

const TOKEN: &str = "dash board token";

fn two_profiles(p1: &MockProvider, p2: &MockProvider) -> String {
    Config::new()
        .chain(
            Chain::new("ethereum", 1)
                .strategy("priority")
                .provider(Provider::new("alpha-one", &p1.url())),
        )
        .profile(
            "beta",
            vec![
                Chain::new("base", 8453)
                    .strategy("priority")
                    .provider(Provider::new("beta-only", &p2.url())),
            ],
        )
        .yaml()
}

fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, b"")
}

/// The `lasso_dash=...` pair of a `Set-Cookie` answer.
fn session_cookie(r: &Response) -> String {
    let set = r.header("set-cookie").expect("Set-Cookie").to_string();
    let pair = set.split(';').next().unwrap().trim().to_string();
    assert!(pair.starts_with("lasso_dash="), "{set}");
    pair
}

#[test]
fn the_dashboard_is_off_unless_configured() {
    let p1 = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&p1]).yaml())
        .workers(1)
        .env("LASSO_ADMIN_TOKEN", "admin")
        .start();
    for path in [
        "/dashboard",
        "/dashboard/default",
        "/dashboard/assets/app.js",
        "/dashboard/api/status",
        "/dashboard/api/events/default",
    ] {
        let r = get_with(lasso.addr(), path, &[("Authorization", "Bearer admin")]);
        assert_eq!(r.status, 404, "{path}: {}", r.describe());
    }
}

#[test]
fn a_token_opens_the_dashboard_through_a_session_cookie_and_a_profile_sees_only_itself() {
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    p1.set_chain_id("0x1");
    p2.set_chain_id("0x2105");
    let yaml = format!(
        "{}dashboard:\n  token: \"{TOKEN}\"\n",
        two_profiles(&p1, &p2)
    );
    let lasso = Lasso::builder(&yaml)
        .workers(2)
        .env("LASSO_ADMIN_TOKEN", "the admin token")
        .env("LASSO_NODE_ID", "dash-node")
        .start();
    let addr = lasso.addr();

    // Nothing presented: the page is a sign-in form, the data and the stream are refused.
    let r = get(addr, "/dashboard");
    assert_eq!(r.status, 401, "{}", r.describe());
    assert!(r.text().contains("name=\"token\""), "{}", r.describe());
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = get(addr, "/dashboard/api/status");
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = get(addr, "/dashboard/api/events/default");
    assert_eq!(r.status, 401, "{}", r.describe());
    assert_eq!(r.header("access-control-allow-origin"), None);
    // A wrong token and a forged cookie are refused.
    let r = get_with(
        addr,
        "/dashboard/api/status",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(r.status, 401);
    let r = get_with(
        addr,
        "/dashboard/api/status",
        &[("Cookie", "lasso_dash=99999999999.deadbeef")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(get(addr, "/dashboard?token=wrong").status, 401);
    // Assets are code, not data: served to anyone while the dashboard is on, never to other origins.
    let r = get(addr, "/dashboard/assets/app.js");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The token in the query is exchanged for a cookie, and the address loses it.
    let r = get(addr, "/dashboard/beta?token=dash%20board+token");
    assert_eq!(r.status, 303, "{}", r.describe());
    assert_eq!(r.header("location"), Some("/dashboard/beta"));
    let set = r.header("set-cookie").unwrap().to_ascii_lowercase();
    assert!(
        set.contains("httponly")
            && set.contains("samesite=strict")
            && set.contains("path=/dashboard"),
        "{set}"
    );
    let cookie = session_cookie(&r);
    let with_cookie = [("Cookie", cookie.as_str())];

    let page = get_with(addr, "/dashboard/beta", &with_cookie);
    assert_eq!(page.status, 200, "{}", page.describe());
    assert!(page.text().contains("/dashboard/assets/app.js"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.header("access-control-allow-origin"), None);
    assert_eq!(get_with(addr, "/dashboard/nope", &with_cookie).status, 404);

    // Every profile on the whole dashboard; one profile's data holds nothing of another.
    let call = rpc(json!(1), "eth_blockNumber", json!([]));
    for _ in 0..2 {
        assert_eq!(post(addr, "/rpc/ethereum", &call).status, 200);
    }
    let all = get_with(addr, "/dashboard/api/status", &with_cookie);
    assert_eq!(all.status, 200, "{}", all.describe());
    assert_eq!(all.header("access-control-allow-origin"), None);
    let all = all.json();
    assert_eq!(all["profiles"], json!(["default", "beta"]));
    assert_eq!(all["node_id"], json!("dash-node"));
    assert_eq!(all["status"]["chains"].as_array().unwrap().len(), 2);
    let beta = get_with(addr, "/dashboard/api/status?profile=beta", &with_cookie);
    let text = beta.text();
    let beta = beta.json();
    assert_eq!(beta["profiles"], json!(["beta"]));
    let chains = beta["status"]["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0]["name"], json!("base"));
    assert!(
        !text.contains("alpha-one") && !text.contains("ethereum"),
        "{text}"
    );
    let cluster = get_with(addr, "/dashboard/api/cluster?profile=beta", &with_cookie);
    assert_eq!(cluster.status, 200, "{}", cluster.describe());
    assert!(!cluster.text().contains("alpha-one"), "{}", cluster.text());
    // Its request counts are the profile's own (the default profile's traffic is not in them).
    let beta_requests = beta["status"]["chains"][0]["providers"][0]["requests"].clone();
    assert_eq!(
        cluster.json()["nodes"][0]["metrics"]["requests"],
        beta_requests
    );
    let metrics = get_with(
        addr,
        "/dashboard/api/metrics/base?profile=beta",
        &with_cookie,
    );
    assert_eq!(metrics.status, 200, "{}", metrics.describe());
    assert_eq!(metrics.json()["providers"][0]["id"], json!("beta-only"));

    // A bearer is taken as sent (no form decoding: `+` stays `+`).
    let r = get_with(
        addr,
        "/dashboard/api/status",
        &[("Authorization", "Bearer dash+board+token")],
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = get_with(
        addr,
        "/dashboard/api/status",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    // The admin token opens it too, as a bearer.
    let r = get_with(
        addr,
        "/dashboard/api/status",
        &[("Authorization", "Bearer the admin token")],
    );
    assert_eq!(r.status, 200, "{}", r.describe());

    // The cookie opens the event stream (a browser's EventSource sends no header), scoped to its profile.
    let mut stream = EventStream::open_path(addr, "/dashboard/api/events/beta", &with_cookie);
    let body = rpc(json!(1), "eth_blockNumber", json!([]));
    assert_eq!(post(addr, "/rpc/ethereum", &body).status, 200);
    assert_eq!(post(addr, "/rpc/profile/beta/base", &body).status, 200);
    let e: Value = stream
        .next_event(Duration::from_secs(5))
        .expect("a beta event");
    assert_eq!(e["profile"], json!("beta"), "{e}");
    assert_eq!(e["provider"], json!("beta-only"), "{e}");
    assert_eq!(e["source_node"], json!("dash-node"), "{e}");
}

/// Sends light traffic to both profiles until dropped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let body = rpc(json!(1), "eth_getBalance", json!(["0x1", "latest"]));
            let mut conn = Conn::connect(addr);
            let mut i = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let path = match i % 4 {
                    3 => "/rpc/profile/beta/base",
                    // With an API key (in the query): the feed shows its id.
                    1 => "/rpc/ethereum?key=dashboard-key-0000000000",
                    _ => "/rpc/ethereum",
                };
                if conn.try_post(path, &body).is_err() {
                    conn = Conn::connect(addr);
                }
                i += 1;
                // Light load: about 100 requests per second, paced by the provider's answers.
                std::thread::park_timeout(Duration::from_millis(10));
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Headless Chromium (the system's `chromium`, driven by `playwright-core` from tests/js) against Lasso in front of
/// mock providers under light load, on one of two clustered nodes: the page loads without console errors, shows every
/// chain and provider, its numbers move, the feed shows the other node's decisions with its node id, a provider killed mid-test shows as down and the feed shows the failover, the request tester answers over
/// HTTP and WebSocket, and a profile's page shows nothing of another profile. Screenshots are saved under
/// `target/dashboard-screenshots/`. A missing `chromium`, `node` or `tests/js/node_modules/playwright-core` is a
/// failure, not a skip (`.ci/run` installs them).
#[test]
fn dashboard_in_a_browser() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/js/dashboard_browser.mjs");
    let playwright = root.join("tests/js/node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "tests/js/node_modules/playwright-core is missing: run `npm ci --prefix tests/js` (bash .ci/run does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install the Debian package `chromium` (bash .ci/run does)"
    );
    let shots = root.join("target/dashboard-screenshots");

    let fast = MockProvider::start("fast-a");
    let slow = MockProvider::start("slow-b");
    let beta = MockProvider::start("beta-only");
    fast.set_chain_id("0x1");
    slow.set_chain_id("0x1");
    beta.set_chain_id("0x2105");
    slow.set_fault(Fault::Delay(5));
    let yaml = Config::new()
        .routing("merge_interval_ms", 200)
        .chain(
            Chain::new("ethereum", 1)
                .strategy("priority")
                .provider(Provider::new("fast-a", &fast.url()).priority(1))
                .provider(Provider::new("slow-b", &slow.url()).priority(2)),
        )
        .profile(
            "beta",
            vec![
                Chain::new("base", 8453)
                    .strategy("priority")
                    .provider(Provider::new("beta-only", &beta.url())),
            ],
        )
        .yaml();
    let yaml = format!(
        "{yaml}dashboard:\n  token: \"{TOKEN}\"\naccess:\n  keys:\n    - {{ id: dash-key, key: dashboard-key-0000000000 }}\n"
    );
    // Two clustered nodes: the browser watches node A, whose feed also carries node B's decisions.
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seeds");
    std::fs::write(&seeds, "").unwrap();
    let node = |id: &str, region: &str| {
        Lasso::builder(&yaml)
            .workers(2)
            .env("LASSO_NODE_ID", id)
            .env("CLUSTER_REGION", region)
            .env("LASSO_CLUSTER_SECRET", "browser cluster secret")
            .env("CLUSTER_SEEDS_FILE", seeds.to_str().unwrap())
            .env("CLUSTER_POLL_MS", "200")
            .start()
    };
    let lasso = node("node-a", "iad");
    let peer = node("node-b", "sjc");
    std::fs::write(&seeds, format!("{},{}", lasso.addr(), peer.addr())).unwrap();
    eventually(Duration::from_secs(20), "node-a sees node-b", || {
        let h = get(lasso.addr(), "/api/health").json();
        if h["cluster"]["nodes_total"] == json!(2) {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    let _load = Load::start(lasso.addr());
    let _peer_load = Load::start(peer.addr());

    let started = std::time::Instant::now();
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(root.join("tests/js"))
        .env("LASSO_URL", format!("http://{}", lasso.addr()))
        .env("DASH_TOKEN", TOKEN)
        .env("SHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node >= 20) is required");
    let pid = child.id();
    // A hung browser must not hang the suite.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(Duration::from_secs(90))
        {
            // SAFETY: kill(2) on the child's pid; it is not reaped before `done` is sent.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut out = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("browser: {line}");
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    let mut killed = false;
    for line in std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if line.trim() == "KILL" {
            fast.set_fault(Fault::Refuse);
            killed = true;
            writeln!(stdin, "KILLED").unwrap();
        }
    }
    let _ = done.send(());
    let _ = watchdog.join();
    let status = child.wait().unwrap();
    let log = log.join().unwrap();
    assert!(
        status.success(),
        "the browser test failed ({status}) after {:?}:\n{log}\nlasso:\n{}",
        started.elapsed(),
        support::lasso::tail(&lasso.logs(), 30)
    );
    assert!(
        killed,
        "the script never asked for the provider to die:\n{log}"
    );
    for shot in ["overview", "failover", "tester", "profile-beta"] {
        let path = shots.join(format!("{shot}.png"));
        assert!(path.exists(), "no screenshot {}", path.display());
    }
    eprintln!(
        "browser test passed in {:?}; screenshots in {}",
        started.elapsed(),
        shots.display()
    );
}
