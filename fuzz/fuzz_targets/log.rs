//! The udplock crate's log decoders; the contract is tests/decoders/checks.rs's `log`.
#![no_main]

#[path = "../../protocol/tests/decoders/mod.rs"]
mod decoders;

#[path = "../../tests/decoders/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::log(data));
