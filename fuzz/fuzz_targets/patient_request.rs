//! Patient dialect: method, path, query and JSON body → decoded, or a 400 — never a panic.
//! The checks are in `parlor::fuzzing::patient_request`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor::fuzzing::patient_request(data));
