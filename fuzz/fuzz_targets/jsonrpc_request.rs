//! Request parsing and id rewriting: every located range lies within the body, a call rewritten with an upstream id
//! parses again as one call with that id, the same method and the same params, and the structural scan that reads
//! one element of the params (`array_element`, the block parameter) finds what a JSON parser finds.
#![no_main]

use lasso::wire::jsonrpc::{
    ArrayElement, CallView, RequestBody, array_element, parse_request, parse_upstream_id, with_upstream_id,
};
use libfuzzer_sys::fuzz_target;

fn check(body: &[u8], call: &CallView<'_>, upstream_id: u64) {
    assert!(call.span.end <= body.len());
    for r in [&call.id, &call.params].into_iter().flatten() {
        assert!(call.span.start <= r.start && r.end <= call.span.end);
    }
    let mut out = Vec::new();
    with_upstream_id(body, call, upstream_id, &mut out);
    let Ok(RequestBody::Single(again)) = parse_request(&out) else {
        panic!(
            "rewritten call does not parse: {}",
            String::from_utf8_lossy(&out)
        );
    };
    let id = again.id.clone().expect("rewritten call has an id");
    assert_eq!(parse_upstream_id(&out[id]), Some(upstream_id));
    assert_eq!(again.method, call.method);
    if let Some(params) = call.params.clone().map(|r| &body[r]) {
        for i in 0..4 {
            let parsed = sonic_rs::get_from_slice(params, [i])
                .ok()
                .filter(|_| params.trim_ascii_start().starts_with(b"["))
                .map(|v| v.as_raw_str().as_bytes().to_vec());
            match array_element(params, i) {
                ArrayElement::Found(raw) => assert_eq!(Some(raw.to_vec()), parsed, "element {i}"),
                ArrayElement::Missing => assert_eq!(None, parsed, "element {i}"),
                ArrayElement::NeedsParser => {}
            }
        }
    }
    assert_eq!(
        again.params.map(|r| out[r].to_vec()),
        call.params.clone().map(|r| body[r].to_vec())
    );
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let upstream_id = u64::from_le_bytes(data[..8].try_into().unwrap());
    let body = &data[8..];
    match parse_request(body) {
        Ok(RequestBody::Single(call)) => check(body, &call, upstream_id),
        Ok(RequestBody::Batch(members)) => {
            for call in members.iter().flatten() {
                check(body, call, upstream_id);
            }
        }
        Err(_) => {}
    }
});
