//! Actions dialect: any text frame → a command or its error frame, never a panic.
//! The checks are in `parlor::fuzzing::actions_frame`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor::fuzzing::actions_frame(data));
