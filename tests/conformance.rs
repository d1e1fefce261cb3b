//! Replays the ethereum/execution-apis `.io` fixtures through Lasso to a replaying provider and
//! checks every answer equals the recorded one (as JSON).

mod support;

use serde_json::Value;
use support::*;

const FIXTURE_FILES: usize = 232;
const CHAIN_ID: &str = "0xc72dd9d5e883e";

fn start() -> (Vec<Fixture>, ReplayProvider, Lasso) {
    let fixtures = load_fixtures();
    assert_eq!(
        fixtures.len(),
        FIXTURE_FILES,
        "fixture files under {}",
        support::fixtures::fixtures_dir().display()
    );
    let replay = MockProvider::replay("hive", &fixtures);
    let cfg = Config::new()
        .chain(Chain::hex_id("hive", CHAIN_ID).provider(Provider::new("replay", &replay.url())));
    let lasso = Lasso::start(&cfg.yaml());
    (fixtures, replay, lasso)
}

fn diff(expected: &Value, got: &Value) -> String {
    let e = expected.to_string();
    let g = got.to_string();
    let common = e.bytes().zip(g.bytes()).take_while(|(a, b)| a == b).count();
    let from = common.saturating_sub(60);
    format!(
        "first difference at byte {common}:\n      expected ...{}\n      got      ...{}",
        support::http::truncate(&e[from..], 200),
        support::http::truncate(g.get(from..).unwrap_or(""), 200)
    )
}

#[test]
fn replay_all_fixtures() {
    let (fixtures, replay, lasso) = start();
    let mut failures = Vec::new();
    let mut pairs = 0;
    let mut conn = Conn::connect(lasso.addr());
    for f in &fixtures {
        for (i, (req, resp)) in f.pairs.iter().enumerate() {
            pairs += 1;
            let label = if f.pairs.len() > 1 {
                format!("{} (pair {})", f.name, i + 1)
            } else {
                f.name.clone()
            };
            let expected: Value = serde_json::from_str(resp).unwrap();
            let r = match conn.try_post("/rpc/hive", req) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{label}: transport error {e}"));
                    conn = Conn::connect(lasso.addr());
                    continue;
                }
            };
            if r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                conn = Conn::connect(lasso.addr());
            }
            match r.try_json() {
                Some(got) if r.status == 200 && got == expected => {}
                Some(got) => failures.push(format!(
                    "{label}: HTTP {}; {}",
                    r.status,
                    diff(&expected, &got)
                )),
                None => failures.push(format!("{label}: {}", r.describe())),
            }
        }
    }
    assert_eq!(
        replay.count("eth_chainId"),
        0,
        "eth_chainId must be answered locally"
    );
    assert!(
        failures.is_empty(),
        "{} of {pairs} fixture exchanges failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} files, {pairs} exchanges replayed", fixtures.len());
}

/// The same exchanges sent as batches of 20 (ids made unique per batch), answers matched by position.
#[test]
fn replay_fixtures_in_batches() {
    let (fixtures, _replay, lasso) = start();
    let all: Vec<(String, Value, Value)> = fixtures
        .iter()
        .flat_map(|f| {
            f.pairs.iter().map(move |(req, resp)| {
                (
                    f.name.clone(),
                    serde_json::from_str::<Value>(req).unwrap(),
                    serde_json::from_str::<Value>(resp).unwrap(),
                )
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut conn = Conn::connect(lasso.addr());
    let mut id = 0u64;
    for group in all.chunks(20) {
        let mut reqs = Vec::new();
        let mut want = Vec::new();
        for (name, req, resp) in group {
            id += 1;
            let mut req = req.clone();
            let mut resp = resp.clone();
            req["id"] = Value::from(id);
            resp["id"] = Value::from(id);
            reqs.push(req);
            want.push((name.clone(), resp));
        }
        let r = match conn.try_post("/rpc/hive", &Value::Array(reqs).to_string()) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("batch ending at id {id}: transport error {e}"));
                conn = Conn::connect(lasso.addr());
                continue;
            }
        };
        if r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            conn = Conn::connect(lasso.addr());
        }
        let got = match r.try_json() {
            Some(Value::Array(items)) if r.status == 200 && items.len() == want.len() => items,
            _ => {
                failures.push(format!("batch ending at id {id}: {}", r.describe()));
                continue;
            }
        };
        for ((name, w), g) in want.iter().zip(&got) {
            if w != g {
                failures.push(format!("{name} (in batch): {}", diff(w, g)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} batched fixture exchanges failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
