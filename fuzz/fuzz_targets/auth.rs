//! cargo-fuzz target `auth`: see `at_fuzz::check_auth` (fuzz/src/lib.rs)
//! for the input layout and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    at_fuzz::check_auth(data);
});
