#!/usr/bin/env bash
# at-host serve against the plainest server there is: `at-host bench
# echo-server` (blocking std::net, one thread per connection), each in its
# own process, called by the same raw client (`at-host bench --raw`).
#
# Two layouts: "one" (server and client both on core 0, `taskset -c 0`) and
# "split" (server on core 1, client on core 0). Per layout and scenario, RUNS
# runs of each server, alternating (AT first in odd runs, echo first in
# even ones), each bounded by SECS seconds and CALLS calls. Reported: median
# calls/s and spread (min-max), the server's CPU (user + system, from
# /proc/PID/stat around the run, warm-up calls included in the count) per
# call, and the server's syscalls per call over one short run of 5,000
# calls: counted by `perf stat` on the syscall tracepoints where perf
# works (it does not slow the server down), else by `strace -c -f` (which
# does, and so changes what it counts: a traced server finds the next
# request waiting more often).
#
# With --sealed, AT's own client is measured too, plain and with a key
# (contract section 9) against a server that requires it, in the same
# alternation: the cost of a sealed call.
#
# With --at-server CMD, the AT side is `CMD 127.0.0.1:PORT` instead of
# `at-host serve` (another AT server against the same echo: for example
# at-core's blocking example, `target/release/examples/std_server`).
#
# Usage: scripts/bench-vs-echo.sh [--runs N] [--secs S] [--calls N]
#        [--layouts "one split"] [--scenarios "tcp-sequential ..."]
#        [--sealed] [--no-strace] [--at-server CMD] [--out FILE]
# Env: AT_HOST (a built at-host; default: build target/release/at-host),
#      AT_BENCH_PORT (first of the 3 loopback ports used, default 17400).
set -euo pipefail

RUNS=5
SECS=2
CALLS=200000
LAYOUTS="one split"
SCENARIOS="tcp-sequential tcp-pipelined tcp-connections udp-sequential"
SEALED=0
STRACE=1
OUT=""
AT_SERVER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --secs) SECS=$2; shift 2 ;;
        --calls) CALLS=$2; shift 2 ;;
        --layouts) LAYOUTS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --sealed) SEALED=1; shift ;;
        --no-strace) STRACE=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --at-server) AT_SERVER=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
if [ -z "${AT_HOST:-}" ]; then
    cargo build --release --locked -p at-host >&2
    AT_HOST=target/release/at-host
fi
for tool in taskset python3 timeout; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 3; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "needs 2 cores (the split layout uses core 1)" >&2
    exit 3
fi
COUNTER=none
if [ "$STRACE" = 1 ]; then
    if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -o /dev/null true 2>/dev/null; then
        COUNTER=perf
    elif command -v strace >/dev/null; then
        COUNTER=strace
    else
        echo "neither perf nor strace works here: no syscall counts" >&2
        STRACE=0
    fi
fi

PORT=${AT_BENCH_PORT:-17400}
AT_PORT=$PORT
ECHO_PORT=$((PORT + 1))
SEALED_PORT=$((PORT + 2))
WORK=$(mktemp -d)
RESULTS=$WORK/results
: >"$RESULTS"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
KEY=$("$AT_HOST" keygen bench)
TICKS=$(getconf CLK_TCK)
# A bound on each bench process: its runs, warm-up and connecting.
BOUND=$((SECS * 2 + 30))

# Starts a server in the background on core $1 and waits for its
# `listening on` lines; the server's pid goes in $STARTED.
start() {
    local cpu=$1 log=$2
    shift 2
    taskset -c "$cpu" "$@" >"$log" 2>"$log.err" &
    STARTED=$!
    PIDS+=("$STARTED")
    for _ in $(seq 100); do
        [ "$(grep -c '^listening on' "$log" 2>/dev/null)" -ge 2 ] && return 0
        sleep 0.05
    done
    echo "server did not start: $*" >&2
    cat "$log.err" >&2
    exit 3
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

stop_servers() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

# One measured run: side, layout, scenario, run number.
measure() {
    local side=$1 layout=$2 scenario=$3 run=$4 port pid args=()
    case "$side" in
        at) port=$AT_PORT; pid=$AT_PID; args=(--raw) ;;
        echo) port=$ECHO_PORT; pid=$ECHO_PID; args=(--raw) ;;
        at-client) port=$AT_PORT; pid=$AT_PID ;;
        at-sealed) port=$SEALED_PORT; pid=$SEALED_PID; args=(--key "$KEY") ;;
    esac
    local before after json
    before=$(cpu_ticks "$pid")
    json=$(timeout "$BOUND" taskset -c 0 "$AT_HOST" bench --server "127.0.0.1:$port" \
        "${args[@]}" --scenario "$scenario" --calls "$CALLS" --duration "$SECS" --json)
    after=$(cpu_ticks "$pid")
    python3 - "$side" "$layout" "$scenario" "$run" "$before" "$after" "$TICKS" "$json" >>"$RESULTS" <<'PY'
import json, sys
side, layout, scenario, run, before, after, ticks, text = sys.argv[1:]
r = json.loads(text)["results"][0]["at"]
cpu_s = (float(after) - float(before)) / float(ticks)
calls = r["calls"] + r["warm_calls"]
print(f"run {layout} {scenario} {side} {run} {r['calls_per_sec']:.1f} {1e6 * cpu_s / calls:.3f}")
PY
}

# Syscalls of the server per call, over one short run under strace.
syscalls() {
    local side=$1 layout=$2 scenario=$3 port pid args=()
    case "$side" in
        at) port=$AT_PORT; pid=$AT_PID; args=(--raw) ;;
        echo) port=$ECHO_PORT; pid=$ECHO_PID; args=(--raw) ;;
        at-client) port=$AT_PORT; pid=$AT_PID ;;
        at-sealed) port=$SEALED_PORT; pid=$SEALED_PID; args=(--key "$KEY") ;;
    esac
    local trace=$WORK/trace.$side tracer json
    if [ "$COUNTER" = perf ]; then
        local events=raw_syscalls:sys_enter name
        for name in read recvfrom recvmsg recvmmsg write sendto sendmsg epoll_wait futex; do
            events="$events,syscalls:sys_enter_$name"
        done
        timeout 120 perf stat -x, -e "$events" -p "$pid" -o "$trace" 2>/dev/null &
    else
        timeout 120 strace -c -f -p "$pid" -o "$trace" 2>/dev/null &
    fi
    tracer=$!
    sleep 0.5
    json=$(timeout "$BOUND" taskset -c 0 "$AT_HOST" bench --server "127.0.0.1:$port" \
        "${args[@]}" --scenario "$scenario" --calls 5000 --duration 20 --json)
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    python3 - "$side" "$layout" "$scenario" "$trace" "$json" >>"$RESULTS" <<'PY'
import json, sys
side, layout, scenario, trace, text = sys.argv[1:]
r = json.loads(text)["results"][0]["at"]
calls = r["calls"] + r["warm_calls"]
total, names = 0, {}
for line in open(trace):
    if ",syscalls:sys_enter_" in line or ",raw_syscalls:sys_enter" in line:
        # perf stat -x, : count,unit,event,...
        f = line.split(",")
        if not f[0].strip().isdigit():
            continue
        if f[2] == "raw_syscalls:sys_enter":
            total = int(f[0])
        elif int(f[0]) > 0:
            names[f[2].replace("syscalls:sys_enter_", "")] = int(f[0])
        continue
    f = line.split()
    if len(f) >= 5 and f[-1] == "total":
        total = int(f[3])
    elif len(f) >= 5 and f[3].isdigit() and not line.startswith("%"):
        names[f[-1]] = int(f[3])
top = ",".join(f"{n}:{c / calls:.2f}" for n, c in sorted(names.items(), key=lambda x: -x[1])[:4])
print(f"sys {layout} {scenario} {side} {total / calls:.2f} {top}")
PY
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1); load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$WORK/header"
SIDES="at echo"
[ "$SEALED" = 1 ] && SIDES="at echo at-client at-sealed"
for layout in $LAYOUTS; do
    case "$layout" in
        one) SERVER_CPU=0 ;;
        split) SERVER_CPU=1 ;;
        *) echo "unknown layout $layout" >&2; exit 2 ;;
    esac
    if [ -n "$AT_SERVER" ]; then
        # Split into words on purpose: a command and its arguments.
        # shellcheck disable=SC2086
        start "$SERVER_CPU" "$WORK/at.log" $AT_SERVER "127.0.0.1:$AT_PORT"
    else
        start "$SERVER_CPU" "$WORK/at.log" "$AT_HOST" serve --tcp "127.0.0.1:$AT_PORT" \
            --udp "127.0.0.1:$AT_PORT" --max-per-address 1024
    fi
    AT_PID=$STARTED
    start "$SERVER_CPU" "$WORK/echo.log" "$AT_HOST" bench echo-server "127.0.0.1:$ECHO_PORT"
    ECHO_PID=$STARTED
    SEALED_PID=
    if [ "$SEALED" = 1 ]; then
        start "$SERVER_CPU" "$WORK/sealed.log" "$AT_HOST" serve --tcp "127.0.0.1:$SEALED_PORT" \
            --udp "127.0.0.1:$SEALED_PORT" --max-per-address 1024 --key "$KEY"
        SEALED_PID=$STARTED
    fi
    for scenario in $SCENARIOS; do
        for run in $(seq "$RUNS"); do
            order=$SIDES
            # Even runs go the other way round, so neither side always
            # follows the other.
            [ $((run % 2)) = 0 ] && order=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' ')
            for side in $order; do
                case "$side" in
                    at-client|at-sealed)
                        case "$scenario" in tcp-sequential|udp-sequential) ;; *) continue ;; esac ;;
                esac
                measure "$side" "$layout" "$scenario" "$run"
            done
        done
        echo "$layout $scenario: done, load $(cut -d' ' -f1 /proc/loadavg)" >&2
        if [ "$STRACE" = 1 ]; then
            for side in $SIDES; do
                case "$side" in
                    at-client|at-sealed)
                        case "$scenario" in tcp-sequential|udp-sequential) ;; *) continue ;; esac ;;
                esac
                syscalls "$side" "$layout" "$scenario"
            done
        fi
    done
    stop_servers
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/header"

python3 - "$RESULTS" "$RUNS" "$SECS" "$WORK/header" "$COUNTER" <<'PY' | tee ${OUT:+"$OUT"}
import statistics, sys
from collections import defaultdict
path, runs, secs, header, counter = sys.argv[1:]
rates, cpus, sys_calls = defaultdict(list), defaultdict(list), {}
for line in open(path):
    f = line.split()
    if f[0] == "run":
        key = (f[1], f[2], f[3])
        rates[key].append(float(f[5]))
        cpus[key].append(float(f[6]))
    elif f[0] == "sys":
        sys_calls[(f[1], f[2], f[3])] = (float(f[4]), f[5] if len(f) > 5 else "")
print(open(header).read().strip())
print(f"runs: {runs} per side, {secs} s each; medians, spread min-max\n")
med = statistics.median
def spread(v):
    return f"{min(v):,.0f}-{max(v):,.0f}"
def sysc(key):
    s = sys_calls.get(key)
    return f"{s[0]:.2f}" if s else "-"
print("| layout | scenario | AT calls/s (spread) | echo calls/s (spread) | AT/echo | AT CPU us/call | echo CPU us/call | CPU AT/echo | syscalls/call AT / echo |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
layouts = sorted({k[0] for k in rates}, key=lambda l: ["one", "split"].index(l))
scenarios = ["tcp-sequential", "tcp-pipelined", "tcp-connections", "udp-sequential"]
for layout in layouts:
    for sc in scenarios:
        a, e = (layout, sc, "at"), (layout, sc, "echo")
        if a not in rates or e not in rates:
            continue
        ra, re_ = med(rates[a]), med(rates[e])
        ca, ce = med(cpus[a]), med(cpus[e])
        print(f"| {layout} | {sc} | {ra:,.0f} ({spread(rates[a])}) | {re_:,.0f} ({spread(rates[e])}) | "
              f"**{ra / re_:.2f}x** | {ca:.2f} | {ce:.2f} | **{ca / ce:.2f}x** | {sysc(a)} / {sysc(e)} |")
sealed = [(l, sc) for l in layouts for sc in scenarios if (l, sc, "at-sealed") in rates]
if sealed:
    print("\n| layout | scenario | AT client calls/s (spread) | sealed calls/s (spread) | sealed/plain | CPU us/call plain | sealed | sealed extra us | syscalls/call plain / sealed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for l, sc in sealed:
        p, s = (l, sc, "at-client"), (l, sc, "at-sealed")
        rp, rs = med(rates[p]), med(rates[s])
        cp, cs = med(cpus[p]), med(cpus[s])
        print(f"| {l} | {sc} | {rp:,.0f} ({spread(rates[p])}) | {rs:,.0f} ({spread(rates[s])}) | "
              f"**{rs / rp:.2f}x** | {cp:.2f} | {cs:.2f} | {cs - cp:+.2f} | {sysc(p)} / {sysc(s)} |")
if sys_calls:
    print(f"\nserver syscalls per call (one run of 5,000 calls + warm-up, counted by {counter}):")
    for k in sorted(sys_calls):
        print(f"  {k[0]:5} {k[1]:16} {k[2]:9} {sys_calls[k][1]}")
PY
