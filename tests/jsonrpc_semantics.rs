//! JSON-RPC semantics of the data plane: the responses table, batches, ids, params, routing
//! (docs/CONTRACT.md, "Routes" and "Responses").

mod support;

use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// Providers and the Lasso in front of them.
///
/// * `ethereum` (id 1, alias `eth`, default strategy `cheapest`): `p1` (priority 1, cost 5) and
///   `p2` (priority 2, cost 0): `/rpc/ethereum` goes to p2, `/rpc/priority/ethereum` to p1.
/// * `polygon` (id 137): provider `poly`; `hexchain` (id "0x2a"): provider `hex`.
/// * `restricted` (id 5): provider `r1` allowing only `eth_*` and denying `eth_sign*`.
/// * `dead` (id 7): provider `dead1`, which refuses connections.
/// * profile `premium`: `ethereum` (id 1) on provider `prem`.
struct World {
    p1: MockProvider,
    p2: MockProvider,
    poly: MockProvider,
    hex: MockProvider,
    r1: MockProvider,
    dead1: MockProvider,
    prem: MockProvider,
    lasso: Lasso,
}

fn world() -> World {
    let p1 = MockProvider::start("p1");
    let p2 = MockProvider::start("p2");
    let poly = MockProvider::start("poly");
    let hex = MockProvider::start("hex");
    let r1 = MockProvider::start("r1");
    let dead1 = MockProvider::start("dead1");
    dead1.set_fault(Fault::Refuse);
    let prem = MockProvider::start("prem");
    // Health probes check eth_chainId: answer like real nodes of those chains.
    for (m, id) in [
        (&p1, "0x1"),
        (&p2, "0x1"),
        (&prem, "0x1"),
        (&poly, "0x89"),
        (&hex, "0x2a"),
        (&r1, "0x5"),
    ] {
        m.set_chain_id(id);
    }
    let cfg = Config::new()
        .server("max_batch_size", 8)
        .server("max_body_bytes", 65536)
        .upstream("connect_timeout_ms", 500)
        .upstream("request_timeout_ms", 2000)
        .chain(
            Chain::new("ethereum", 1)
                .alias("eth")
                .alias("mainnet")
                .strategy("cheapest")
                .provider(Provider::new("p1", &p1.url()).priority(1).cost(5.0))
                .provider(Provider::new("p2", &p2.url()).priority(2).cost(0.0)),
        )
        .chain(Chain::new("polygon", 137).provider(Provider::new("poly", &poly.url())))
        .chain(Chain::hex_id("hexchain", "0x2a").provider(Provider::new("hex", &hex.url())))
        .chain(
            Chain::new("restricted", 5).provider(
                Provider::new("r1", &r1.url())
                    .allow(&["eth_*"])
                    .deny(&["eth_sign*"]),
            ),
        )
        .chain(Chain::new("dead", 7).provider(Provider::new("dead1", &dead1.url())))
        .profile(
            "premium",
            vec![Chain::new("ethereum", 1).provider(Provider::new("prem", &prem.url()))],
        );
    let lasso = Lasso::start(&cfg.yaml());
    World {
        p1,
        p2,
        poly,
        hex,
        r1,
        dead1,
        prem,
        lasso,
    }
}

/// What a row expects.
enum Expect {
    /// A single JSON-RPC error object with this code (and `id` equal to the request's or null).
    Error(i64),
    /// Error with code and `data` containing these fields.
    ErrorData(i64, Value),
    /// Error whose message contains this text.
    ErrorMessage(i64, &'static str),
    /// Exactly this JSON answer.
    Exact(Value),
    /// Empty body.
    Empty,
}

struct Row {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    expect: Expect,
}

fn row(
    name: &'static str,
    path: &'static str,
    body: impl Into<String>,
    status: u16,
    expect: Expect,
) -> Row {
    Row {
        name,
        method: "POST",
        path,
        headers: vec![("Content-Type", "application/json".to_string())],
        body: body.into(),
        status,
        expect,
    }
}

fn check_row(addr: std::net::SocketAddr, r: &Row) -> Result<(), String> {
    let hs: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Conn::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.try_send(&request_bytes(r.method, r.path, &hs, r.body.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let resp = c.try_read_response().map_err(|e| format!("read: {e}"))?;
    if resp.status != r.status {
        return Err(format!("want HTTP {}, got {}", r.status, resp.describe()));
    }
    let req_id: Option<Value> = serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("id").cloned());
    let check_error = |want: i64| -> Result<Value, String> {
        let v = resp
            .try_json()
            .ok_or_else(|| format!("body is not JSON: {}", resp.describe()))?;
        if !v.is_object() {
            return Err(format!(
                "want a single error object, got {}",
                resp.describe()
            ));
        }
        if v.get("jsonrpc") != Some(&json!("2.0")) {
            return Err(format!("missing jsonrpc 2.0: {}", resp.describe()));
        }
        match v.get("id") {
            Some(Value::Null) => {}
            Some(id) if Some(id) == req_id.as_ref() => {}
            other => return Err(format!("bad id {other:?}: {}", resp.describe())),
        }
        if error_code(&v) != Some(want) {
            return Err(format!(
                "want JSON-RPC code {want}, got {}",
                resp.describe()
            ));
        }
        if v.get("result").is_some() {
            return Err(format!("both result and error: {}", resp.describe()));
        }
        Ok(v)
    };
    match &r.expect {
        Expect::Error(code) => {
            check_error(*code)?;
        }
        Expect::ErrorData(code, want) => {
            let v = check_error(*code)?;
            let data = &v["error"]["data"];
            for (k, val) in want.as_object().unwrap() {
                if data.get(k) != Some(val) {
                    return Err(format!(
                        "error.data.{k}: want {val}, got {}",
                        resp.describe()
                    ));
                }
            }
        }
        Expect::ErrorMessage(code, needle) => {
            let v = check_error(*code)?;
            let msg = v["error"]["message"].as_str().unwrap_or("");
            if !msg.contains(needle) {
                return Err(format!(
                    "message should mention {needle:?}: {}",
                    resp.describe()
                ));
            }
        }
        Expect::Exact(want) => {
            let v = resp
                .try_json()
                .ok_or_else(|| format!("body is not JSON: {}", resp.describe()))?;
            if &v != want {
                return Err(format!("want {want}, got {}", resp.describe()));
            }
        }
        Expect::Empty => {
            if !resp.body.is_empty() {
                return Err(format!("want an empty body, got {}", resp.describe()));
            }
        }
    }
    Ok(())
}

fn run_rows(addr: std::net::SocketAddr, rows: &[Row]) {
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            check_row(addr, r).err().map(|e| {
                format!(
                    "[{}] {} {} {}\n    -> {e}",
                    r.name,
                    r.method,
                    r.path,
                    short(&r.body)
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn short(s: &str) -> String {
    support::http::truncate(s, 160)
}

#[test]
fn responses_table() {
    let w = world();
    let big_body = {
        let pad = "0".repeat(70_000);
        rpc(json!(1), "eth_getBalance", json!([pad, "latest"]))
    };
    let ok = |m: &str| rpc(json!(1), m, json!([]));
    let batch9: String = Value::Array(
        (0..9)
            .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_blockNumber"}))
            .collect(),
    )
    .to_string();
    let mut rows = vec![
        row(
            "invalid JSON",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":1,"#,
            400,
            Expect::Error(-32700),
        ),
        row(
            "invalid JSON (garbage)",
            "/rpc/ethereum",
            "not json at all",
            400,
            Expect::Error(-32700),
        ),
        row(
            "empty body",
            "/rpc/ethereum",
            "",
            400,
            Expect::Error(-32700),
        ),
        row(
            "number body",
            "/rpc/ethereum",
            "42",
            400,
            Expect::Error(-32600),
        ),
        row(
            "string body",
            "/rpc/ethereum",
            r#""hello""#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "null body",
            "/rpc/ethereum",
            "null",
            400,
            Expect::Error(-32600),
        ),
        row(
            "bool body",
            "/rpc/ethereum",
            "true",
            400,
            Expect::Error(-32600),
        ),
        row(
            "jsonrpc 1.0",
            "/rpc/ethereum",
            r#"{"jsonrpc":"1.0","id":1,"method":"eth_blockNumber"}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "jsonrpc missing",
            "/rpc/ethereum",
            r#"{"id":1,"method":"eth_blockNumber"}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "jsonrpc number",
            "/rpc/ethereum",
            r#"{"jsonrpc":2.0,"id":1,"method":"eth_blockNumber"}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "method missing",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":1}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "method number",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "method null",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "id object",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"eth_blockNumber"}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "id array",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":[1],"method":"eth_blockNumber"}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "id bool",
            "/rpc/ethereum",
            r#"{"jsonrpc":"2.0","id":true,"method":"eth_blockNumber"}"#,
            400,
            Expect::Error(-32600),
        ),
        row(
            "empty batch",
            "/rpc/ethereum",
            "[]",
            400,
            Expect::Error(-32600),
        ),
        row(
            "batch over max_batch_size (9 > 8)",
            "/rpc/ethereum",
            batch9,
            400,
            Expect::Error(-32600),
        ),
        row(
            "body over max_body_bytes",
            "/rpc/ethereum",
            big_body,
            413,
            Expect::Error(-32600),
        ),
        row(
            "unknown chain",
            "/rpc/nochain",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"chain","name":"nochain"})),
        ),
        row(
            "unknown chain with strategy",
            "/rpc/priority/nochain",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"chain","name":"nochain"})),
        ),
        row(
            "unknown chain id",
            "/rpc/999999",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"chain","name":"999999"})),
        ),
        row(
            "chain missing from profile",
            "/rpc/profile/premium/polygon",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"chain","name":"polygon"})),
        ),
        row(
            "unknown profile",
            "/rpc/profile/nope/ethereum",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"profile","name":"nope"})),
        ),
        row(
            "unknown provider",
            "/rpc/provider/nope/ethereum",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"provider","name":"nope"})),
        ),
        row(
            "provider of another chain",
            "/rpc/provider/poly/ethereum",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"provider","name":"poly"})),
        ),
        row(
            "provider of another profile",
            "/rpc/provider/prem/ethereum",
            ok("eth_blockNumber"),
            404,
            Expect::ErrorData(-32001, json!({"kind":"provider","name":"prem"})),
        ),
        row(
            "unknown strategy",
            "/rpc/bogus/ethereum",
            ok("eth_blockNumber"),
            400,
            Expect::Error(-32600),
        ),
        row(
            "unknown strategy in profile",
            "/rpc/profile/premium/bogus/ethereum",
            ok("eth_blockNumber"),
            400,
            Expect::Error(-32600),
        ),
        row(
            "unknown path",
            "/nope",
            ok("eth_blockNumber"),
            404,
            Expect::Error(-32601),
        ),
        row(
            "unknown path under /rpc",
            "/rpc/ethereum/extra/segments/here",
            ok("eth_blockNumber"),
            404,
            Expect::Error(-32601),
        ),
        row(
            "eth_subscribe over HTTP",
            "/rpc/ethereum",
            rpc(json!(1), "eth_subscribe", json!(["newHeads"])),
            200,
            Expect::ErrorMessage(-32601, "/ws/rpc/"),
        ),
        row(
            "eth_unsubscribe over HTTP",
            "/rpc/ethereum",
            rpc(json!(1), "eth_unsubscribe", json!(["0x1"])),
            200,
            Expect::ErrorMessage(-32601, "/ws/rpc/"),
        ),
        row(
            "eth_chainId answered locally",
            "/rpc/ethereum",
            rpc(json!(7), "eth_chainId", json!([])),
            200,
            Expect::Exact(json!({"jsonrpc":"2.0","id":7,"result":"0x1"})),
        ),
        row(
            "eth_chainId decimal config",
            "/rpc/polygon",
            rpc(json!("c"), "eth_chainId", json!([])),
            200,
            Expect::Exact(json!({"jsonrpc":"2.0","id":"c","result":"0x89"})),
        ),
        row(
            "eth_chainId hex config",
            "/rpc/hexchain",
            rpc(json!(8), "eth_chainId", json!([])),
            200,
            Expect::Exact(json!({"jsonrpc":"2.0","id":8,"result":"0x2a"})),
        ),
        row(
            "eth_chainId premium profile",
            "/rpc/profile/premium/ethereum",
            rpc(json!(9), "eth_chainId", json!([])),
            200,
            Expect::Exact(json!({"jsonrpc":"2.0","id":9,"result":"0x1"})),
        ),
        row(
            "method outside allow list",
            "/rpc/restricted",
            rpc(json!(1), "debug_traceTransaction", json!(["0x01"])),
            200,
            Expect::Error(-32004),
        ),
        row(
            "method on deny list",
            "/rpc/restricted",
            rpc(json!(1), "eth_signTransaction", json!([{}])),
            200,
            Expect::Error(-32004),
        ),
        row(
            "every provider failed",
            "/rpc/dead",
            rpc(json!(1), "eth_getBalance", json!(["0x1", "latest"])),
            502,
            Expect::Error(-32010),
        ),
        row(
            "notification",
            "/rpc/polygon",
            notification("eth_getBalance", json!(["0xn0"])),
            204,
            Expect::Empty,
        ),
        row(
            "batch of only notifications",
            "/rpc/polygon",
            json!([{"jsonrpc":"2.0","method":"eth_getBalance","params":["0xn1"]},
                   {"jsonrpc":"2.0","method":"eth_getBalance","params":["0xn2"]}])
            .to_string(),
            204,
            Expect::Empty,
        ),
        row(
            "id null is not a notification",
            "/rpc/polygon",
            r#"{"jsonrpc":"2.0","id":null,"method":"eth_getBalance","params":["0xnull"]}"#,
            200,
            Expect::Exact(
                json!({"jsonrpc":"2.0","id":null,"result":{"provider":"poly","method":"eth_getBalance","params":["0xnull"]}}),
            ),
        ),
    ];
    for m in ["GET", "PUT", "DELETE", "PATCH"] {
        let mut r = row(
            "wrong HTTP method",
            "/rpc/ethereum",
            "",
            405,
            Expect::Error(-32600),
        );
        r.method = m;
        r.headers.clear();
        rows.push(r);
    }
    let mut r = row(
        "headers over max_header_bytes",
        "/rpc/ethereum",
        ok("eth_blockNumber"),
        431,
        Expect::Error(-32600),
    );
    r.headers.push(("X-Pad", "p".repeat(20 * 1024)));
    rows.push(r);
    run_rows(w.lasso.addr(), &rows);

    // eth_chainId never went upstream; the denied methods never reached r1.
    for m in [&w.p1, &w.p2, &w.poly, &w.hex, &w.prem] {
        assert_eq!(
            m.count("eth_chainId"),
            0,
            "{} received eth_chainId",
            m.name()
        );
        assert_eq!(
            m.count("eth_subscribe"),
            0,
            "{} received eth_subscribe",
            m.name()
        );
    }
    assert_eq!(w.r1.count("debug_traceTransaction"), 0);
    assert_eq!(w.r1.count("eth_signTransaction"), 0);
    assert_eq!(
        w.p1.count("eth_getBalance") + w.p2.count("eth_getBalance"),
        0,
        "rejected requests were forwarded"
    );
    // Notifications are still forwarded.
    for p in ["0xn0", "0xn1", "0xn2"] {
        assert!(
            wait_for_call(
                &w.poly,
                "eth_getBalance",
                &json!([p]),
                Duration::from_secs(5)
            ),
            "notification with params [{p}] never reached the provider; calls: {:?}",
            w.poly.calls()
        );
    }
    drop(w.dead1);
}

/// Waits until `mock` has received a `method` call with exactly `params`.
fn wait_for_call(mock: &MockProvider, method: &str, params: &Value, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let seen = mock.count(method);
        if mock
            .calls()
            .iter()
            .any(|c| c["method"] == method && &c["params"] == params)
        {
            return true;
        }
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            return false;
        }
        // Block until the next call of that method arrives (an event, not a sleep).
        mock.wait_for_count(method, seen + 1, remaining);
    }
}

#[test]
fn upstream_result_and_error_pass_through_untouched() {
    let w = world();
    let revert = json!({"code":3,"message":"execution reverted","data":"0x08c379a00000000000000000000000000000000000000000000000000000000000000020000000000000000000000000000000000000000000000000000000000000000b6e6f7420616c6c6f776564000000000000000000000000000000000000000000"});
    for m in [&w.p1, &w.p2] {
        m.set_result("eth_blockNumber", json!("0x10"));
        m.set_error("eth_call", revert.clone());
        m.set_error(
            "eth_getBlockByNumber",
            json!({"code":-32602,"message":"invalid argument 0: hex number with leading zero digits"}),
        );
    }
    // A capability error ("cannot serve this") is not the answer while another provider can serve it.
    w.p1.set_error(
        "eth_getProof",
        json!({"code":-32601,"message":"the method eth_getProof does not exist/is not available"}),
    );
    w.p2.set_result("eth_getProof", json!({"accountProof":[]}));
    let addr = w.lasso.addr();
    let r = post(
        addr,
        "/rpc/ethereum",
        &rpc(json!(1), "eth_blockNumber", json!([])),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json(), json!({"jsonrpc":"2.0","id":1,"result":"0x10"}));

    let call = rpc(
        json!("call-1"),
        "eth_call",
        json!([{"to":"0x00000000000000000000000000000000deadbeef","data":"0x"}, "latest"]),
    );
    let r = post(addr, "/rpc/ethereum", &call);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json(),
        json!({"jsonrpc":"2.0","id":"call-1","error":revert}),
        "{}",
        r.describe()
    );

    let r = post(
        addr,
        "/rpc/priority/ethereum",
        &rpc(
            json!(2),
            "eth_getBlockByNumber",
            json!(["0x0ffffff", false]),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json(),
        json!({"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"invalid argument 0: hex number with leading zero digits"}}),
        "{}",
        r.describe()
    );
    let r = post(
        addr,
        "/rpc/priority/ethereum",
        &rpc(
            json!(3),
            "eth_getProof",
            json!(["0x00000000000000000000000000000000deadbeef", [], "latest"]),
        ),
    );
    assert_eq!(
        r.json(),
        json!({"jsonrpc":"2.0","id":3,"result":{"accountProof":[]}}),
        "{}",
        r.describe()
    );
    assert_eq!(
        (w.p1.count("eth_getProof"), w.p2.count("eth_getProof")),
        (1, 1)
    );
    // A deterministic JSON-RPC error (revert, invalid params) is the answer: no other provider is asked.
    let counts = |m: &str| (w.p1.count(m), w.p2.count(m));
    let mut retried = Vec::new();
    if counts("eth_call") != (0, 1) {
        retried.push(format!(
            "eth_call revert (code 3): (p1, p2) calls = {:?}, want (0, 1)",
            counts("eth_call")
        ));
    }
    if counts("eth_getBlockByNumber") != (1, 0) {
        retried.push(format!(
            "eth_getBlockByNumber -32602 invalid params via /rpc/priority: (p1, p2) calls = {:?}, want (1, 0)",
            counts("eth_getBlockByNumber")
        ));
    }
    assert!(
        retried.is_empty(),
        "JSON-RPC error answers were retried elsewhere:\n{}",
        retried.join("\n")
    );
}

#[test]
fn batch_order_and_mixed_members() {
    let w = world();
    w.p1.set_result("eth_blockNumber", json!("0x10"));
    w.p2.set_result("eth_blockNumber", json!("0x10"));
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xa","latest"]},
        {"jsonrpc":"2.0","method":"eth_getBalance","params":["0xnotif"]},
        42,
        {"jsonrpc":"2.0","id":"x","method":5},
        {"jsonrpc":"2.0","id":"two","method":"eth_chainId"},
        {"jsonrpc":"2.0","id":3,"method":"eth_subscribe","params":["newHeads"]},
        {"jsonrpc":"2.0","id":4,"method":"eth_blockNumber","params":[]}
    ]);
    let r = post(w.lasso.addr(), "/rpc/priority/ethereum", &batch.to_string());
    assert_eq!(r.status, 200, "{}", r.describe());
    let v = r.json();
    let items = v
        .as_array()
        .unwrap_or_else(|| panic!("batch answer is not an array: {}", r.describe()));
    assert_eq!(
        items.len(),
        6,
        "notifications omitted, everything else answered: {}",
        r.describe()
    );
    assert_eq!(
        items[0],
        json!({"jsonrpc":"2.0","id":1,"result":{"provider":"p1","method":"eth_getBalance","params":["0xa","latest"]}})
    );
    assert_eq!(
        error_code(&items[1]),
        Some(-32600),
        "member `42`: {}",
        items[1]
    );
    assert_eq!(items[1]["id"], Value::Null, "member `42`: {}", items[1]);
    assert_eq!(
        error_code(&items[2]),
        Some(-32600),
        "member with method 5: {}",
        items[2]
    );
    assert!(
        items[2]["id"] == json!("x") || items[2]["id"].is_null(),
        "member with method 5: {}",
        items[2]
    );
    assert_eq!(items[3], json!({"jsonrpc":"2.0","id":"two","result":"0x1"}));
    assert_eq!(
        error_code(&items[4]),
        Some(-32601),
        "eth_subscribe member: {}",
        items[4]
    );
    assert_eq!(items[4]["id"], json!(3));
    assert_eq!(items[5], json!({"jsonrpc":"2.0","id":4,"result":"0x10"}));
    assert!(
        wait_for_call(
            &w.p1,
            "eth_getBalance",
            &json!(["0xnotif"]),
            Duration::from_secs(5)
        ),
        "batch notification never forwarded; p1 calls {:?}",
        w.p1.calls()
    );
    assert_eq!(w.p1.count("eth_chainId"), 0);
}

#[test]
fn batch_members_fail_individually_with_http_200() {
    let w = world();
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xb1","latest"]},
        {"jsonrpc":"2.0","id":2,"method":"eth_chainId"}
    ]);
    let r = post(w.lasso.addr(), "/rpc/dead", &batch.to_string());
    assert_eq!(r.status, 200, "a batch is always 200: {}", r.describe());
    let v = r.json();
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), 2, "{}", r.describe());
    assert_eq!(items[0]["id"], json!(1));
    assert_eq!(error_code(&items[0]), Some(-32010), "{}", r.describe());
    assert_eq!(items[1], json!({"jsonrpc":"2.0","id":2,"result":"0x7"}));
}

#[test]
fn ids_are_restored_exactly() {
    let w = world();
    let addr = w.lasso.addr();
    // Raw JSON text of each id, sent verbatim.
    let ids = [
        r#""abc""#,
        r#""""#,
        r#""with \"quotes\", \\backslashes\\ and \/slash""#,
        r#""ünïcødé 🚀 \u00e9\ud83d\ude80""#,
        r#""\u0000\u001f control""#,
        r#""{\"nested\":[1,{\"id\":2}],\"jsonrpc\":\"2.0\"}""#,
        r#""1""#,
        "0",
        "-1",
        "9007199254740993",
        "18446744073709551615",
        "-9223372036854775808",
        "123456789012345678901234567890",
        "1.5",
        "-0.25",
        "1e3",
    ];
    let mut failures = Vec::new();
    let mut c = Conn::connect(addr);
    for raw in ids {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{raw},"method":"eth_getBalance","params":["0x1","latest"]}}"#
        );
        let r = c.post("/rpc/ethereum", &body);
        let want: Value = serde_json::from_str(raw).unwrap();
        let got = r.try_json();
        if r.status != 200 || got.as_ref().map(|v| &v["id"]) != Some(&want) {
            failures.push(format!("id {raw}: {}", r.describe()));
            continue;
        }
        // Integers beyond f64/u64 precision compare lossily as JSON values: check the text too.
        if raw.len() > 15
            && raw.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && !r.text().contains(raw)
        {
            failures.push(format!(
                "id {raw} not restored digit for digit: {}",
                r.describe()
            ));
        }
        if got.map(|v| v.get("result").is_none()).unwrap_or(true) {
            failures.push(format!("id {raw}: no result: {}", r.describe()));
        }
    }
    // The same ids inside one batch.
    let batch = format!(
        "[{}]",
        ids.iter()
            .take(5)
            .map(|raw| format!(
                r#"{{"jsonrpc":"2.0","id":{raw},"method":"eth_getBalance","params":["0x2"]}}"#
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = c.post("/rpc/ethereum", &batch);
    match r.try_json() {
        Some(Value::Array(items)) if items.len() == 5 => {
            for (item, raw) in items.iter().zip(ids) {
                let want: Value = serde_json::from_str(raw).unwrap();
                if item["id"] != want {
                    failures.push(format!("batch id {raw}: got {item}"));
                }
            }
        }
        _ => failures.push(format!("batch of 5 ids: {}", r.describe())),
    }
    assert!(
        failures.is_empty(),
        "ids not restored:\n{}",
        failures.join("\n")
    );
}

#[test]
fn same_client_ids_from_concurrent_clients_are_not_mixed_up() {
    let w = world();
    let addr = w.lasso.addr();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let mut bad = Vec::new();
                for i in 0..15u64 {
                    let params = json!([format!("0x{t:x}{i:04x}"), "latest"]);
                    let r = c.post(
                        "/rpc/ethereum",
                        &rpc(json!(1), "eth_getBalance", params.clone()),
                    );
                    let v = r.try_json().unwrap_or(Value::Null);
                    if r.status != 200 || v["id"] != json!(1) || v["result"]["params"] != params {
                        bad.push(format!(
                            "thread {t} req {i}: sent params {params}, got {}",
                            r.describe()
                        ));
                    }
                }
                bad
            })
        })
        .collect();
    let bad: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn params_pass_through_unchanged() {
    let w = world();
    let addr = w.lasso.addr();
    let cases: Vec<(&str, String)> = vec![
        ("positional", r#"["0x407d73d8a49eeb85d32cf465507dd71d507100c1","latest"]"#.into()),
        ("named object", r#"{"address":"0xabc","blockHash":"0x00","topics":[null,["0x01","0x02"]]}"#.into()),
        ("empty array", "[]".into()),
        ("empty object", "{}".into()),
        ("nulls and bools", "[null,true,false,{\"k\":null}]".into()),
        ("numbers", "[0,-0,1.5,-2.25e-7,1e300,18446744073709551615,-9223372036854775808]".into()),
        ("strings with escapes", r#"["line\nbreak","tab\t","quote\"","back\\slash","\u00e9\u4e2d\ud83d\ude80","\u0000"]"#.into()),
        ("unicode raw", r#"["ünïcødé","中文","🚀"]"#.into()),
        ("whitespace", "[ 1 ,\n\t{ \"a\" : [ ] } ]".into()),
        ("long string", format!("[\"0x{}\"]", "ab".repeat(20_000))),
    ];
    let mut failures = Vec::new();
    for (i, (name, raw)) in cases.iter().enumerate() {
        let id = 1000 + i as u64;
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_call","params":{raw}}}"#);
        let r = match try_post(addr, "/rpc/priority/ethereum", &body) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: transport error {e}"));
                continue;
            }
        };
        let want: Value = serde_json::from_str(raw).unwrap();
        let v = r.try_json().unwrap_or(Value::Null);
        if r.status != 200 || v["id"] != json!(id) || v["result"]["params"] != want {
            failures.push(format!("{name}: {}", r.describe()));
            continue;
        }
        let received = w.p1.calls().into_iter().find(|c| c["params"] == want);
        if received.is_none() {
            failures.push(format!("{name}: provider never received params {raw}"));
        }
    }
    // A number beyond f64 precision must reach the provider digit for digit.
    let raw_big = "123456789012345678901234567890123";
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{raw_big}]}}"#);
    match try_post(addr, "/rpc/priority/ethereum", &body) {
        Ok(r) if r.status == 200 => {}
        Ok(r) => failures.push(format!("big number: {}", r.describe())),
        Err(e) => failures.push(format!("big number: transport error {e}")),
    }
    if !w
        .p1
        .recorded()
        .iter()
        .any(|rec| String::from_utf8_lossy(&rec.raw).contains(raw_big))
    {
        failures.push(format!(
            "big number {raw_big} did not reach the provider verbatim"
        ));
    }
    // Absent params stay absent.
    match try_post(
        addr,
        "/rpc/priority/ethereum",
        r#"{"jsonrpc":"2.0","id":"noparams","method":"eth_gasPrice"}"#,
    ) {
        Ok(r) if r.status == 200 => {}
        Ok(r) => failures.push(format!("no params: {}", r.describe())),
        Err(e) => failures.push(format!("no params: transport error {e}")),
    }
    let gp: Vec<Value> =
        w.p1.calls()
            .into_iter()
            .filter(|c| c["method"] == "eth_gasPrice")
            .collect();
    if gp.len() != 1 || gp[0].get("params").is_some() {
        failures.push(format!("request without params arrived as {gp:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deeply nested JSON (a few hundred bytes) must be answered (passed through, or rejected with
/// 400 -32600/-32700), never take the process down.
#[test]
fn deeply_nested_json_does_not_kill_the_proxy() {
    let w = world();
    let addr = w.lasso.addr();
    let mut failures = Vec::new();
    for depth in [16usize, 32, 64, 128, 512] {
        let objects = (0..depth).fold(json!("bottom"), |acc, i| json!({ format!("l{i}"): [acc] }));
        let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for (shape, params) in [("objects+arrays", objects.to_string()), ("arrays", arrays)] {
            let body =
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":{params}}}"#);
            match try_post(addr, "/rpc/priority/ethereum", &body) {
                Ok(r) if r.status == 200 => {
                    let want: Value = serde_json::from_str(&params).unwrap();
                    if r.try_json().map(|v| v["result"]["params"].clone()) != Some(want) {
                        failures.push(format!("depth {depth} {shape}: altered: {}", r.describe()));
                    }
                }
                Ok(r) if r.status == 400 && matches!(r.rpc_code(), Some(-32600 | -32700)) => {}
                Ok(r) => failures.push(format!("depth {depth} {shape}: {}", r.describe())),
                Err(e) => failures.push(format!("depth {depth} {shape}: transport error {e}")),
            }
        }
    }
    let alive = try_post(
        addr,
        "/rpc/ethereum",
        &rpc(json!(1), "eth_chainId", json!([])),
    );
    if !matches!(&alive, Ok(r) if r.status == 200) {
        failures.push(format!("proxy dead afterwards ({alive:?})"));
    }
    assert!(
        failures.is_empty(),
        "{}\n--- lasso logs (tail) ---\n{}",
        failures.join("\n"),
        support::lasso::tail(&w.lasso.logs(), 10)
    );
}

#[test]
fn eth_chain_id_is_local() {
    let w = world();
    let before: Vec<usize> = [&w.p1, &w.p2, &w.poly, &w.hex, &w.prem]
        .iter()
        .map(|m| m.count("eth_chainId"))
        .collect();
    let mut c = Conn::connect(w.lasso.addr());
    for (path, want) in [
        ("/rpc/ethereum", "0x1"),
        ("/rpc/eth", "0x1"),
        ("/rpc/1", "0x1"),
        ("/rpc/priority/ethereum", "0x1"),
        ("/rpc/provider/p1/ethereum", "0x1"),
        ("/rpc/polygon", "0x89"),
        ("/rpc/137", "0x89"),
        ("/rpc/hexchain", "0x2a"),
        ("/rpc/42", "0x2a"),
        ("/rpc/profile/premium/ethereum", "0x1"),
    ] {
        let r = c.post(path, &rpc(json!(5), "eth_chainId", json!([])));
        assert_eq!(r.status, 200, "{path}: {}", r.describe());
        assert_eq!(
            r.json(),
            json!({"jsonrpc":"2.0","id":5,"result":want}),
            "{path}"
        );
    }
    let after: Vec<usize> = [&w.p1, &w.p2, &w.poly, &w.hex, &w.prem]
        .iter()
        .map(|m| m.count("eth_chainId"))
        .collect();
    assert_eq!(before, after, "eth_chainId reached a provider");
}

fn served(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    let r = post(
        addr,
        path,
        &rpc(json!(1), "eth_getBalance", json!(["0x5", "latest"])),
    );
    if r.status != 200 {
        return Err(r.describe());
    }
    served_by(&r.json()).ok_or_else(|| r.describe())
}

#[test]
fn routing() {
    let w = world();
    let addr = w.lasso.addr();
    let cases: &[(&str, &[&str])] = &[
        ("/rpc/ethereum", &["p2"]), // cheapest
        ("/rpc/eth", &["p2"]),
        ("/rpc/mainnet", &["p2"]),
        ("/rpc/1", &["p2"]),
        ("/rpc/priority/ethereum", &["p1"]),
        ("/rpc/priority/eth", &["p1"]),
        ("/rpc/priority/1", &["p1"]),
        ("/rpc/cheapest/ethereum", &["p2"]),
        ("/rpc/fastest/ethereum", &["p1", "p2"]),
        ("/rpc/load-balanced/ethereum", &["p1", "p2"]),
        ("/rpc/round-robin/ethereum", &["p1", "p2"]),
        ("/rpc/latency-weighted/ethereum", &["p1", "p2"]),
        ("/rpc/provider/p1/ethereum", &["p1"]),
        ("/rpc/provider/p2/eth", &["p2"]),
        ("/rpc/provider/p1/1", &["p1"]),
        ("/rpc/polygon", &["poly"]),
        ("/rpc/137", &["poly"]),
        ("/rpc/42", &["hex"]),
        ("/rpc/profile/premium/ethereum", &["prem"]),
        ("/rpc/profile/premium/1", &["prem"]),
        ("/rpc/profile/premium/priority/ethereum", &["prem"]),
        ("/rpc/profile/premium/provider/prem/ethereum", &["prem"]),
        ("/rpc/profile/default/ethereum", &["p2"]),
        ("/rpc/profile/default/provider/p1/ethereum", &["p1"]),
    ];
    let mut failures = Vec::new();
    for (path, allowed) in cases {
        for _ in 0..3 {
            match served(addr, path) {
                Ok(p) if allowed.contains(&p.as_str()) => {}
                Ok(p) => {
                    failures.push(format!("{path}: served by {p}, want one of {allowed:?}"));
                    break;
                }
                Err(e) => {
                    failures.push(format!("{path}: {e}"));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn profile_from_a_file() {
    let main = MockProvider::start("main");
    let other = MockProvider::start("other");
    main.set_chain_id("0x1");
    other.set_chain_id("0x64");
    let cfg = Config::new()
        .chain(Chain::new("ethereum", 1).provider(Provider::new("main", &main.url())))
        .profile_file("side", "profiles/side.yml");
    let side = Config::chains_yaml(&[Chain::new("gnosis", 100)
        .alias("xdai")
        .provider(Provider::new("other", &other.url()))]);
    let lasso = Lasso::builder(&cfg.yaml())
        .file("profiles/side.yml", &side)
        .start();
    let addr = lasso.addr();
    assert_eq!(served(addr, "/rpc/ethereum").as_deref(), Ok("main"));
    assert_eq!(
        served(addr, "/rpc/profile/side/gnosis").as_deref(),
        Ok("other")
    );
    assert_eq!(
        served(addr, "/rpc/profile/side/xdai").as_deref(),
        Ok("other")
    );
    assert_eq!(
        served(addr, "/rpc/profile/side/100").as_deref(),
        Ok("other")
    );
    let r = post(
        addr,
        "/rpc/gnosis",
        &rpc(json!(1), "eth_blockNumber", json!([])),
    );
    assert_eq!(
        r.status,
        404,
        "gnosis is only in profile `side`: {}",
        r.describe()
    );
    assert_eq!(r.rpc_code(), Some(-32001));
    let r = post(
        addr,
        "/rpc/profile/side/gnosis",
        &rpc(json!(1), "eth_chainId", json!([])),
    );
    assert_eq!(r.json(), json!({"jsonrpc":"2.0","id":1,"result":"0x64"}));
}

#[test]
fn node_control_and_key_methods_are_refused_unless_a_provider_allows_them_by_name() {
    let open = MockProvider::start("open");
    let named = MockProvider::start("named");
    open.set_chain_id("0x1");
    named.set_chain_id("0x89");
    let config = Config::new()
        .chain(Chain::new("ethereum", 1).provider(Provider::new("open", &open.url()).allow(&["*"])))
        .chain(
            Chain::new("polygon", 137).provider(
                Provider::new("named", &named.url()).allow(&["admin_peers", "personal_*"]),
            ),
        );
    let lasso = Lasso::start(&config.yaml());
    for method in [
        "admin_addPeer",
        "debug_setHead",
        "personal_unlockAccount",
        "miner_stop",
        "engine_forkchoiceUpdatedV3",
        "eth_sign",
        "eth_accounts",
        "eth_sendTransaction",
    ] {
        let r = post(
            lasso.addr(),
            "/rpc/ethereum",
            &rpc(json!(1), method, json!([])),
        );
        assert_eq!(r.rpc_code(), Some(-32004), "{method}: {}", r.describe());
        assert_eq!(open.count(method), 0, "{method} reached the node");
    }
    // An allow entry naming the method, or the very pattern that denies it, opens it; nothing else does.
    for (method, forwarded) in [
        ("admin_peers", true),
        ("personal_listAccounts", true),
        ("admin_addPeer", false),
    ] {
        let r = post(
            lasso.addr(),
            "/rpc/polygon",
            &rpc(json!(1), method, json!([])),
        );
        assert_eq!(
            named.count(method) == 1,
            forwarded,
            "{method}: {}",
            r.describe()
        );
    }
}
