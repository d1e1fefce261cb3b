//! Memory bounds under connection churn (hardening issue, item 5): a connection that closed leaves nothing behind.
//! Before the fix, every connection that waited for its next request left its waker (and so its whole task) in the
//! worker's drain notifier: RSS grew about 3.7 KB per closed connection, linearly.

mod support;

use support::*;

/// Opens a connection, asks `/api/health` and closes it.
fn one_connection(lasso: &Lasso) {
    let mut c = Conn::connect(lasso.addr());
    c.send(&request_bytes(
        "GET",
        "/api/health",
        &[("Host", "lasso"), ("Connection", "keep-alive")],
        b"",
    ));
    let r = c.try_read_response().expect("health answer");
    assert_eq!(r.status, 200, "{}", r.describe());
    // Dropped here: the client closes while Lasso waits for its next request.
}

/// Average RSS growth per closed connection stays under this many bytes (the bound).
const MAX_GROWTH_PER_CONNECTION: u64 = 512;
const WARM_UP: usize = 2_000;
const MEASURED: usize = 20_000;

#[test]
fn closed_connections_return_their_memory() {
    let mock = MockProvider::start("p1");
    let lasso = Lasso::builder(&single_chain(&[&mock]).yaml())
        .workers(1)
        .start();
    for _ in 0..WARM_UP {
        one_connection(&lasso);
    }
    let before = rss_bytes(lasso.pid());
    for _ in 0..MEASURED {
        one_connection(&lasso);
    }
    let after = rss_bytes(lasso.pid());
    let per_connection = after.saturating_sub(before) / MEASURED as u64;
    assert!(
        per_connection < MAX_GROWTH_PER_CONNECTION,
        "RSS grew {} bytes over {MEASURED} closed connections ({per_connection} B each; bound \
         {MAX_GROWTH_PER_CONNECTION} B): {before} -> {after}",
        after.saturating_sub(before)
    );
}
