//! Fuzz target `request_body`: structure-aware: two bytes pick an implemented API and a version in its
//! range, the rest is a request body behind a well-formed header (`spate::fuzzing::request_body`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::request_body(data);
});
