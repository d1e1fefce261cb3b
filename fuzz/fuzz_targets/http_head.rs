//! Request head parsing: never panics; a parsed head's length is within the input, and framing is never both
//! chunked and a length; a chunked head is HTTP/1.1.
#![no_main]

use lasso::wire::http::request::{BodyFraming, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = parse_head(data) {
        assert!(head.head_len <= data.len());
        if head.framing == BodyFraming::Chunked {
            assert_eq!(head.version, 1);
        }
        // Parsing only the head again gives the same head.
        assert_eq!(parse_head(&data[..head.head_len]), Ok(Some(head)));
    }
});
