//! What `#[at_host::service]` and typed functions refuse at compile time:
//! a function named `rpc.*`, a parameter type that cannot travel, a
//! function that is not `async`, a typed function with a parameter that
//! is not an argument type. The expected compiler messages are in
//! `tests/ui/*.stderr` (regenerate with `TRYBUILD=overwrite`).

#[test]
fn refused_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
