//! The routing-event stream under attack (hardening issue, items 7, 9 and 14): a subscriber that never reads costs a
//! bounded number of bytes whatever clients send, client text is cut in events, and idle streams cannot take every
//! connection slot; a reload that inserts a profile never sends another profile's events to an open stream.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Opens `GET /api/events/default` and returns the connection after the response head; the caller never reads.
fn open_stream(lasso: &Lasso) -> (u16, Conn) {
    let mut c = Conn::connect(lasso.addr());
    c.send(b"GET /api/events/default HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.io.read_head(16 * 1024).unwrap().expect("a head");
    let text = String::from_utf8_lossy(&head).to_string();
    let status = text[9..12].parse().unwrap();
    assert!(
        status != 200
            || !text
                .to_ascii_lowercase()
                .contains("access-control-allow-origin"),
        "the event stream carries no CORS wildcard: {text}"
    );
    (status, c)
}

#[test]
fn a_subscriber_that_never_reads_costs_bounded_memory_and_sees_cut_method_names() {
    let mock = MockProvider::start("p1");
    let cfg = single_chain(&[&mock]).server("max_body_bytes", "2097152");
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let (status, mut sleeper) = open_stream(&lasso);
    assert_eq!(status, 200);
    let before = rss_bytes(lasso.pid());
    let long_method = format!("eth_{}", "x".repeat(1 << 20));
    let body = rpc(json!(1), &long_method, json!([]));
    for _ in 0..80 {
        let r = post(lasso.addr(), "/rpc/ethereum", &body);
        assert!(r.status < 600, "{}", r.describe());
    }
    let grown = rss_bytes(lasso.pid()).saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "80 requests with 1 MiB method names grew RSS by {grown} bytes while a subscriber did not read"
    );
    // The queued events name the method cut to 128 characters.
    sleeper.set_read_timeout(Duration::from_secs(5));
    let text = eventually(Duration::from_secs(5), "an event on the stream", || {
        sleeper.io.fill().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(sleeper.io.buffered()).to_string();
        if text.contains("data: ") && text[text.find("data: ").unwrap()..].contains("\n\n") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    let line = text
        .lines()
        .find(|l| l.starts_with("data: "))
        .unwrap_or_else(|| panic!("no event in {text:?}"));
    let event: serde_json::Value = serde_json::from_str(&line[6..]).unwrap();
    let method = event["method"].as_str().unwrap();
    assert_eq!(method.chars().count(), 128, "{method}");
    assert!(long_method.starts_with(method));
    // Other clients are still served.
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(7), "eth_blockNumber", json!([])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn idle_event_streams_are_capped_and_do_not_lock_other_clients_out() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::start(&single_chain(&[&mock]).yaml());
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let (status, c) = open_stream(&lasso);
        match status {
            200 => held.push(c),
            503 => refused += 1,
            other => panic!("event stream answered {other}"),
        }
    }
    assert_eq!(held.len(), 64, "at most 64 streams at once");
    assert_eq!(refused, 16);
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(1), "eth_blockNumber", json!([])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    drop(held);
    // Closed streams free their places.
    eventually(
        Duration::from_secs(10),
        "a stream after others closed",
        || match open_stream(&lasso) {
            (200, _) => Ok(()),
            (s, _) => Err(format!("status {s}")),
        },
    );
}

/// Reads the stream until an event with `method` arrives; returns every event read up to it.
fn events_until(conn: &mut Conn, method: &str) -> Vec<serde_json::Value> {
    conn.set_read_timeout(Duration::from_secs(5));
    eventually(
        Duration::from_secs(10),
        &format!("a {method} event"),
        || {
            conn.io.fill().map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(conn.io.buffered()).to_string();
            let events: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect();
            if events.iter().any(|e| e["method"] == method) {
                Ok(events)
            } else {
                Err(format!("{} events so far", events.len()))
            }
        },
    )
}

#[test]
fn a_reload_that_inserts_a_profile_never_redirects_a_stream() {
    let (p1, p2, p3) = (
        MockProvider::start("p1"),
        MockProvider::start("p2"),
        MockProvider::start("p3"),
    );
    let chain = |p: &MockProvider| {
        p.set_chain_id("0x1");
        Chain::new("ethereum", 1).provider(Provider::new(p.name(), &p.url()))
    };
    let before = Config::new()
        .chain(chain(&p1))
        .profile("beta", vec![chain(&p2)]);
    let lasso = Lasso::builder(&before.yaml()).workers(1).start();

    let mut beta = Conn::connect(lasso.addr());
    beta.send(b"GET /api/events/beta HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = beta.io.read_head(16 * 1024).unwrap().expect("a head");
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // A new profile `alpha` lands before `beta` (the index `beta` had before now names `alpha`).
    let after = Config::new()
        .chain(chain(&p1))
        .profile("alpha", vec![chain(&p3)])
        .profile("beta", vec![chain(&p2)]);
    std::fs::write(lasso.config_path(), after.yaml()).unwrap();
    lasso.send_signal(libc::SIGHUP);
    eventually(Duration::from_secs(20), "profile alpha served", || {
        let r = post(
            lasso.addr(),
            "/rpc/profile/alpha/ethereum",
            &rpc(json!(1), "eth_gasPrice", json!([])),
        );
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.describe())
        }
    });

    for _ in 0..5 {
        for path in ["/rpc/profile/alpha/ethereum", "/rpc/ethereum"] {
            let r = post(
                lasso.addr(),
                path,
                &rpc(json!(2), "eth_gasPrice", json!([])),
            );
            assert_eq!(r.status, 200, "{path}: {}", r.describe());
        }
    }
    let r = post(
        lasso.addr(),
        "/rpc/profile/beta/ethereum",
        &rpc(json!(3), "eth_getBalance", json!(["0x01", "latest"])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let events = events_until(&mut beta, "eth_getBalance");
    for e in &events {
        assert_eq!(
            e["profile"], "beta",
            "beta's stream carried another profile's event: {e}"
        );
        assert_eq!(e["provider"], "p2", "{e}");
    }
}

/// The value of an unlabelled sample in `/metrics`.
fn metric(lasso: &Lasso, name: &str) -> u64 {
    let r = get(lasso.addr(), "/metrics");
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_flood_of_plain_successes_is_sampled_on_the_stream_and_a_failover_is_always_shown() {
    let (p1, p2) = (MockProvider::start("p1"), MockProvider::start("p2"));
    // A small allowance keeps the bound below the flood however slow the machine is.
    let per_s = 5;
    let cfg = single_chain(&[&p1, &p2]).server("event_stream_successes_per_s", per_s);
    let lasso = Lasso::builder(&cfg.yaml()).workers(1).start();
    let (status, mut stream) = open_stream(&lasso);
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    let flood = 300;
    for _ in 0..flood {
        let r = post(
            lasso.addr(),
            "/rpc/ethereum",
            &rpc(json!(1), "eth_gasPrice", json!([])),
        );
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let took = started.elapsed().as_secs_f64();
    // The first provider fails: the request moves to the second, and that decision is on the stream.
    p1.set_fault(Fault::Status(503));
    let r = post(
        lasso.addr(),
        "/rpc/ethereum",
        &rpc(json!(2), "eth_getBalance", json!(["0x01", "latest"])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let events = events_until(&mut stream, "eth_getBalance");
    let failover = events
        .iter()
        .find(|e| e["method"] == "eth_getBalance")
        .unwrap();
    assert_eq!(failover["provider"], "p2", "{failover}");
    assert_eq!(failover["retries"], 1, "{failover}");
    // Plain successes: a burst of the allowance, then the allowance a second (one worker); the rest only counted.
    let plain = events
        .iter()
        .filter(|e| e["method"] == "eth_gasPrice")
        .count();
    let allowed = per_s + (per_s as f64 * (took + 1.0)) as usize;
    assert!(
        (per_s..=allowed.min(flood - 1)).contains(&plain),
        "{plain} of {flood} plain events in {took:.1} s"
    );
    let sampled_out = metric(&lasso, "lasso_events_sampled_out_total") as usize;
    assert!(
        sampled_out >= flood - plain,
        "{sampled_out} sampled out, {plain} shown"
    );
    assert_eq!(metric(&lasso, "lasso_event_stream_subscribers"), 1);
    assert_eq!(metric(&lasso, "lasso_events_dropped_total"), 0);
}
