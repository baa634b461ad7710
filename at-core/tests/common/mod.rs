//! What at-core's integration tests share.

use proptest::test_runner::Config as ProptestConfig;

/// Proptest's usual case count (256, or `PROPTEST_CASES`), but only a few
/// cases under Miri, which runs each one thousands of times slower: there
/// the point is undefined behaviour on real inputs, not input variety.
pub fn proptest_config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { default.cases },
        // No failure files under Miri's isolation.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            default.failure_persistence
        },
        ..default
    }
}
