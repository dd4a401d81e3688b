//! Typed dialect: any text frame → a request or a BAD_REQUEST naming its type, never a panic.
//! The checks are in `parlor::fuzzing::typed_frame`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor::fuzzing::typed_frame(data));
