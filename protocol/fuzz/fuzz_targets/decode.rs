//! Feeds arbitrary bytes to every decoder. The contract (protocol/src/lib.rs): no panic, and
//! whatever decodes re-encodes to the same bytes (canonical form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use udplock_protocol::header::HeaderIds;
use udplock_protocol::{Reply, Request, DATAGRAM_LEN_MAX};

fuzz_target!(|data: &[u8]| {
    let _ = HeaderIds::peek(data);
    if let Ok(req) = Request::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode_padded(&mut out, data.len()).expect("a decoded request encodes");
        assert_eq!(&out[..n], data, "decoded request is not canonical");
    }
    if let Ok(reply) = Reply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).expect("a decoded reply encodes");
        assert_eq!(&out[..n], &data[..n], "decoded reply is not canonical");
        assert!(data[n..].iter().all(|&b| b == 0));
    }
});
