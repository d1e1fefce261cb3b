//! Chunked decoding: the decoded length never exceeds the limit, consumed bytes stay within the input and the raw
//! bound, and feeding the same bytes in two pieces gives the same outcome as feeding them at once.
#![no_main]

use lasso::wire::http::chunked::{ChunkedDecoder, raw_limit};
use libfuzzer_sys::fuzz_target;

fn feed(limit: usize, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), ()> {
    let mut dec = ChunkedDecoder::new(limit);
    let mut out = Vec::new();
    let mut fed = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        fed.extend_from_slice(piece);
        let n = dec.decode(&fed[consumed..], &mut out).map_err(|_| ())?;
        assert!(n <= fed.len() - consumed);
        consumed += n;
        assert!(out.len() <= limit, "decoded past the limit");
        assert!(consumed <= raw_limit(limit), "consumed past the raw bound");
    }
    Ok((out, dec.is_done(), consumed))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = u16::from_le_bytes([data[0], data[1]]) as usize;
    let input = &data[3..];
    let split = (data[2] as usize).min(input.len());
    let whole = feed(limit, &[input]);
    let pieces = feed(limit, &[&input[..split], &input[split..]]);
    // A body that finished in one piece finishes the same way in two (errors may come earlier or later).
    if let Ok((out, true, consumed)) = &whole {
        assert_eq!(pieces.as_ref().ok(), Some(&(out.clone(), true, *consumed)));
    }
});
