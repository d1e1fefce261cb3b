//! WebSocket frame decoding and reassembly: a decoded frame uses no more bytes than given and respects the payload
//! bound; re-encoding it and decoding again gives the same frame; reassembled messages respect the message bound.
#![no_main]

use lasso::wire::ws_frame::{Assembler, Message, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut buf)) = data.split_first() else {
        return;
    };
    let expect_masked = flags & 1 != 0;
    let max_payload = 1usize << (flags >> 4);
    let mut assembler = Assembler::new(max_payload * 2);
    while let Ok(Some((frame, used))) = decode(buf, max_payload, expect_masked) {
        assert!(used <= buf.len() && used > 0);
        assert!(frame.payload.len() <= max_payload);
        if frame.fin {
            let mut encoded = Vec::new();
            encode(
                &mut encoded,
                frame.opcode,
                &frame.payload,
                expect_masked.then_some([1, 2, 3, 4]),
            );
            let (again, again_used) = decode(&encoded, max_payload, expect_masked)
                .expect("re-encoded frame decodes")
                .expect("re-encoded frame is complete");
            assert_eq!((again, again_used), (frame.clone(), encoded.len()));
        }
        buf = &buf[used..];
        match assembler.push(frame) {
            Ok(Some(Message::Text(m) | Message::Binary(m))) => assert!(m.len() <= max_payload * 2),
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
