//! cargo-fuzz target `event`: see `at_fuzz::check_event` (fuzz/src/lib.rs)
//! for the input layout and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    at_fuzz::check_event(data);
});
