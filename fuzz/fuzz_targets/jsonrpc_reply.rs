//! Reply inspection and id restoration (single and batch): every located range lies within the body, and a reply
//! with its id restored inspects again with exactly the client's id and the same outcome.
#![no_main]

use lasso::wire::jsonrpc::{ReplyView, inspect_batch_reply, inspect_reply, restore_id};
use libfuzzer_sys::fuzz_target;

const CLIENT_IDS: [&[u8]; 4] = [b"1", b"\"client-a\"", b"null", b"18446744073709551615"];

fn check(body: &[u8], reply: &ReplyView, client_id: &[u8]) {
    assert!(reply.span.end <= body.len());
    assert!(reply.span.start <= reply.id.start && reply.id.end <= reply.span.end);
    let mut out = Vec::new();
    restore_id(body, reply, client_id, &mut out);
    let again = inspect_reply(&out).expect("a restored reply inspects again");
    assert_eq!(&out[again.id.clone()], client_id);
    assert_eq!(again.kind, reply.kind);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let client_id = CLIENT_IDS[selector as usize % CLIENT_IDS.len()];
    if let Ok(reply) = inspect_reply(body) {
        check(body, &reply, client_id);
    }
    if let Ok(replies) = inspect_batch_reply(body) {
        for reply in &replies {
            check(body, reply, client_id);
        }
    }
});
