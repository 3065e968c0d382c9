//! Fuzz target `request`: any request frame (the bytes after the length prefix), through everything the
//! broker runs on it before a handler touches state (`spate::fuzzing::request`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::request(data);
});
