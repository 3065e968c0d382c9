//! Fuzz target `sasl`: SASL/PLAIN and SCRAM client messages through `protocol::sasl`, with an honest
//! client's exchange checked end to end (`spate::fuzzing::sasl`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::sasl(data);
});
