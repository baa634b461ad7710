#!/usr/bin/env bash
# User-space instructions a server executes per call, counted exactly by
# valgrind's callgrind (not timed): `at-host serve` and `at-host bench
# echo-server`, each on core 0 (so `serve` runs its one-core runtime), called
# by the raw client (`at-host bench --raw`). Each server is run twice, for
# CALLS and for 3 x CALLS calls; the difference over 2 x CALLS cancels out
# start-up, warm-up and shutdown. Kernel work is not counted.
#
# Usage: scripts/instructions-per-call.sh [--scenario udp-sequential|tcp-sequential]
#        [--calls N] [--servers "serve echo"]
# Env: AT_HOST (a built at-host; default: build target/release/at-host),
#      AT_BENCH_PORT (the loopback port, default 17450).
set -euo pipefail

SCENARIO=udp-sequential
CALLS=5000
SERVERS="serve echo"
while [ $# -gt 0 ]; do
    case "$1" in
        --scenario) SCENARIO=$2; shift 2 ;;
        --calls) CALLS=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
if [ -z "${AT_HOST:-}" ]; then
    cargo build --release --locked -p at-host >&2
    AT_HOST=target/release/at-host
fi
for tool in valgrind callgrind_annotate taskset timeout; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 3; }
done
PORT=${AT_BENCH_PORT:-17450}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Instructions of one server process over `calls` calls (and start-up).
count() {
    local server=$1 calls=$2 args pid signal
    # `serve` stops on SIGINT as on Ctrl-C; the echo has no handler for it,
    # and ends on SIGTERM (callgrind writes its counts either way).
    case "$server" in
        serve) args=(serve --tcp "127.0.0.1:$PORT" --udp "127.0.0.1:$PORT"); signal=INT ;;
        echo) args=(bench echo-server "127.0.0.1:$PORT"); signal=TERM ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$WORK/out" \
        "$AT_HOST" "${args[@]}" >"$WORK/log" 2>"$WORK/err" &
    pid=$!
    for _ in $(seq 300); do
        grep -q '^listening on udp' "$WORK/log" 2>/dev/null && break
        sleep 0.1
    done
    timeout 300 taskset -c 0 "$AT_HOST" bench --server "127.0.0.1:$PORT" --raw \
        --scenario "$SCENARIO" --calls "$calls" --duration 120 --json >/dev/null
    kill "-$signal" "$pid"
    wait "$pid" 2>/dev/null || true
    callgrind_annotate "$WORK/out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}

echo "$SCENARIO, user instructions per call (callgrind, ${CALLS} and $((3 * CALLS)) calls):"
for server in $SERVERS; do
    small=$(count "$server" "$CALLS")
    large=$(count "$server" $((3 * CALLS)))
    echo "  $server: $(((large - small) / (2 * CALLS)))"
done
