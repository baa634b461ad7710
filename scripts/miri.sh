#!/usr/bin/env bash
# Runs at-core's tests under Miri (undefined behaviour, out-of-bounds and
# arithmetic-overflow checks in the interpreter), on the nightly toolchain.
#
#   scripts/miri.sh [extra cargo test arguments]
#
# Isolation is off because tests/vectors.rs reads ../tests/vectors/frames.json.
# Under Miri the proptest suites run 4 cases each (tests/properties.rs), the
# random loops in src/float.rs 20 iterations instead of 10,000 and more, and
# the one 64 KiB vector is left out: the interpreter is thousands of times
# slower than native code. Plain `cargo test` runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup +nightly component add miri rust-src
fi

export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
start=$(date +%s)
cargo +nightly miri test -p at-core "$@"
echo "miri.sh: at-core passes under Miri ($(($(date +%s) - start)) s)"
