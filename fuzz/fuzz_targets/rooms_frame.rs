//! Rooms dialect: any text as the auth frame, as a send, and as each REST body → a value or a clear refusal.
//! The checks are in `parlor::fuzzing::rooms_frame`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor::fuzzing::rooms_frame(data));
