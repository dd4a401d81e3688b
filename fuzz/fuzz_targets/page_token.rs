//! Page tokens: nothing forged verifies; every token round-trips; a one-character change is refused.
//! The checks are in `parlor::fuzzing::page_token`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor::fuzzing::page_token(data));
