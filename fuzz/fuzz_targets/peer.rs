//! Every peer decoder of the codec; the contract is protocol/tests/decoders/mod.rs's `peer`.
#![no_main]

#[path = "../../protocol/tests/decoders/mod.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::peer(data));
