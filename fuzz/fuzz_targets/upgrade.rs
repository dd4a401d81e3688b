//! WebSocket handshake: any method and headers → Sec-WebSocket-Accept or a refusal with its reason.
//! The checks are in `parlor::fuzzing::upgrade`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor::fuzzing::upgrade(data));
