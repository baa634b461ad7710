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
if [ $# -gt 0 ]; then
  cargo +nightly miri test -p at-core "$@"
else
  # Miri interprets each test binary on one thread: run two groups of
  # about equal length side by side (one per core). The three heaviest
  # suites in one, everything else (any new suite too) in the other.
  cargo +nightly miri test -p at-core --no-run
  heavy=(properties vectors fuzz_regressions)
  rest=()
  for file in at-core/tests/*.rs; do
    name=$(basename "$file" .rs)
    [[ " ${heavy[*]} " == *" $name "* ]] || rest+=(--test "$name")
  done
  log=$(mktemp)
  cargo +nightly miri test -p at-core $(printf -- '--test %s ' "${heavy[@]}") >"$log" 2>&1 &
  heavy_pid=$!
  rest_status=0
  cargo +nightly miri test -p at-core --lib "${rest[@]}" || rest_status=$?
  cargo +nightly miri test -p at-core --doc || rest_status=$?
  heavy_status=0
  wait "$heavy_pid" || heavy_status=$?
  cat "$log"
  rm -f "$log"
  if [ "$rest_status" -ne 0 ] || [ "$heavy_status" -ne 0 ]; then
    echo "miri.sh: at-core FAILS under Miri" >&2
    exit 1
  fi
fi
echo "miri.sh: at-core passes under Miri ($(($(date +%s) - start)) s)"
