#!/usr/bin/env bash
# Fuzzes at-core with cargo-fuzz (libFuzzer): seeds the corpora from
# tests/vectors/frames.json and section10.json, then runs each target for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS]
#
# Exits non-zero if any target finds a crash (the input is saved under
# fuzz/artifacts/<target>/; reproduce with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-...`).
# Environment:
#   FUZZ_TARGETS   targets to run (default "decoder body respond auth event")
#   FUZZ_ARGS      extra cargo-fuzz arguments, e.g. "--features small-float"
#                  or "--no-default-features" (integers-only at-core)
# Building the three targets takes about 1.5 minutes the first time on
# 2 cores (nightly, ASan, release); later runs reuse fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-60}
targets=${FUZZ_TARGETS:-decoder body respond auth event}
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: no nightly toolchain; trying rustup toolchain install nightly" >&2
  rustup toolchain install nightly --profile minimal || {
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain, and none could be installed" >&2
    exit 3
  }
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (about 2 minutes)" >&2
  cargo install cargo-fuzz --locked
fi

python3 fuzz/seed.py

start=$(date +%s)
cargo +nightly fuzz build "${extra[@]}"
echo "fuzz.sh: build took $(($(date +%s) - start)) s"

max_len() {
  case $1 in
    body | event) echo 4096 ;;
    *) echo 70000 ;;
  esac
}

mkdir -p fuzz/logs
failed=()
for target in $targets; do
  log=fuzz/logs/$target.log
  echo "==> fuzz $target for ${budget} s"
  set +e
  cargo +nightly fuzz run "${extra[@]}" "$target" -- \
    -max_total_time="$budget" -max_len="$(max_len "$target")" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # The last status line (coverage, corpus) and the final statistics.
  grep -E '^#[0-9]+' "$log" | tail -n 1 || true
  grep -E 'stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    echo "fuzz.sh: $target FAILED (exit $rc); log: $log" >&2
    grep -E 'panicked at|assertion|ERROR: libFuzzer|Test unit written to' "$log" | head -n 20 >&2 || true
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crashes in $targets (${budget} s each)"
