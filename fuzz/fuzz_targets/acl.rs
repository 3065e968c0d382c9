//! Fuzz target `acl`: ACL bindings and filters as CreateAcls, DescribeAcls and DeleteAcls carry
//! them, and `ssl_principal_mapping_rules` with the subjects they name (`spate::fuzzing::acl`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spate::fuzzing::acl(data);
});
