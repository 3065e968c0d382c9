//! Fuzz target `request_body`: structure-aware: an implemented API and version picked by two bytes, the rest a
//! request body behind a well-formed header (`spate::fuzzing::request_body`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::request_body(data);
});
