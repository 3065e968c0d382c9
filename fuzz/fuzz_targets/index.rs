//! Fuzz target `index`: a segment's .index, .timeindex and .log bytes, through index decoding and the
//! recovery walk (`spate::fuzzing::segment`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::segment(data);
});
