//! Fuzz target `offsets_record`: a `__consumer_offsets` key and value, through decode_record, its
//! re-encoding and the consumer-protocol decoders (`spate::fuzzing::offsets_record`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::offsets_record(data);
});
