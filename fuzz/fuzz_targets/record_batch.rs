//! Fuzz target `record_batch`: a flags byte and a record set, through split, scan and every record reader
//! (`spate::fuzzing::record_batch`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::record_batch(data);
});
