//! Logs never hold up requests (src/app/logging.rs): lines go through a byte-bounded queue to a writer thread, so a
//! stdout that stops taking them (a full pipe behind a stalled log shipper) costs dropped lines, counted once stdout
//! moves again, not a worker blocked in `write`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const PATH: &str = "/rpc/ethereum";

#[test]
fn a_stalled_stdout_does_not_stop_requests() {
    let mock = MockProvider::start("p1");
    // Every request logged, ~280 bytes a line: the 64 KiB pipe is full after a few hundred requests, Lasso's 4 MiB
    // log queue (`LOG_QUEUE_MAX_BYTES`) after about 15 000.
    let lasso = Lasso::builder(&single_chain(&[&mock]).yaml())
        .workers(1)
        .env("LOG_SAMPLE_RATE", "1")
        .start();
    lasso.pause_stdout(true);
    let mut c = Conn::connect(lasso.addr());
    c.set_read_timeout(Duration::from_secs(5));
    for i in 0..20_000u64 {
        let params = json!([format!("0x{i:040x}"), "latest"]);
        let r = c
            .try_post(PATH, &rpc(json!(i), "eth_getBalance", params.clone()))
            .unwrap_or_else(|e| panic!("request {i} not answered while stdout is stalled: {e}"));
        assert_eq!(r.status, 200, "{}", r.describe());
        let v = r.json();
        assert_eq!(v["id"], json!(i), "{}", r.describe());
        assert_eq!(v["result"]["params"], params, "{}", r.describe());
    }
    lasso.pause_stdout(false);
    // Polled (not `wait_for_log`, which rescans the whole text at every line while megabytes of lines come in).
    eventually(
        Duration::from_secs(30),
        "a report of the dropped lines once stdout moves again",
        || {
            let logs = lasso.logs();
            match logs.lines().find(|l| l.contains("log lines dropped")) {
                Some(line) => Ok(line.to_string()),
                None => Err(logs
                    .lines()
                    .filter(|l| !l.contains("lasso::access"))
                    .collect::<Vec<_>>()
                    .join("\n")),
            }
        },
    );
}
