//! Fuzz target `record_batch`: a flags byte and a record set, through split, scan, patch and every record
//! reader, checking they agree (`spate::fuzzing::record_batch`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::record_batch(data);
});
