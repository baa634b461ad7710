//! Tests across the AT crates and languages live in `tests/tests/`; this
//! library only holds helpers they share.
