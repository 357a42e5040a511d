#!/usr/bin/env bash
# What the BFF adds on top of calling compute directly: added latency, throughput, peak RSS.
#
#   scripts/bench-edge.sh                      # what `make bench-edge` runs (~2 minutes)
#   BENCH_SECS=5 scripts/bench-edge.sh         # throughput seconds per side per payload
#   BENCH_N_SMALL=200 BENCH_N_LARGE=50 BENCH_UPLOADS=64 BENCH_UPLOAD_MIB=8 scripts/bench-edge.sh
#   BENCH_ONLY=small scripts/bench-edge.sh     # only the speed phase, for one payload (small
#                                              # or large): a quick before/after
#   BENCH_ONLY=memory scripts/bench-edge.sh    # only the memory and budget phases
#   BENCH_NO_BUILD=1 IMAGEGATE_BIN=... scripts/bench-edge.sh  # no build: the last bench binary
#   BENCH_PROFILE=small scripts/bench-edge.sh  # the same with the BFF under `perf record`; the
#                                              # report by shared object and symbol goes to
#                                              # $BENCH_DIR/profile-<payload>.txt
#
# Builds `imagegate` and the `edge` bench binary (benches/edge.rs) in the release profile,
# starts `imagegate compute` and `imagegate bff` as separate processes on free loopback ports,
# and runs two phases:
#   speed:  the default BFF config; ~1 KB and ~2 MB JPEGs compressed to JPEG Q80 via the BFF
#           (HTTP multipart) and via a direct tonic client, alternating; latency at concurrency
#           1, throughput at concurrency 8.
#   memory: a fresh BFF (so its VmHWM is this phase's alone) with limits that admit 64
#           concurrent 8 MiB uploads; peak RSS against 40 MiB + 1.5 × bytes in flight.
# The tables are printed and written to $BENCH_DIR/results.md (default target/bench-edge).
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-target/bench-edge}
SECS=${BENCH_SECS:-10}
N_SMALL=${BENCH_N_SMALL:-200}
N_LARGE=${BENCH_N_LARGE:-50}
UPLOADS=${BENCH_UPLOADS:-64}
UPLOAD_MIB=${BENCH_UPLOAD_MIB:-8}
mkdir -p "$WORK"
RESULTS=$WORK/results.md

die() { echo "bench-edge: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed (to ask the OS for free ports)"
command -v jq >/dev/null || die "jq is needed (to find the bench binary in cargo's output)"
PROFILE=${BENCH_PROFILE:-}
ONLY=${BENCH_ONLY:-$PROFILE}
case "$ONLY" in
    "" | small | large | memory) ;;
    *) die "BENCH_ONLY takes small, large or memory, BENCH_PROFILE small or large; got '$ONLY'" ;;
esac
if [ -n "$PROFILE" ] && ! command -v perf >/dev/null; then
    echo "installing perf (Debian's linux-perf) for BENCH_PROFILE ..."
    apt-get install -y -qq linux-perf >/dev/null || die "could not install linux-perf"
fi

# --- build: one release profile for the server and the bench binary -------------------------
# BENCH_NO_BUILD=1 reuses the last build (A/B runs of IMAGEGATE_BIN builds while the tree changes).
if [ -n "${BENCH_NO_BUILD:-}" ] && [ -s "$WORK/build.json" ]; then
    echo "reusing the last build (BENCH_NO_BUILD)"
else
    echo "building (release) ..."
    cargo build --release --bin imagegate --bench edge --message-format=json-render-diagnostics \
        >"$WORK/build.json"
fi
# IMAGEGATE_BIN runs another build of the servers (an older commit, for a before/after).
BIN=${IMAGEGATE_BIN:-$PWD/target/release/imagegate}
BENCH=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "edge"
                      and (.target.kind | index("bench"))) | .executable // empty' \
    "$WORK/build.json" | tail -n 1)
[ -x "$BIN" ] || die "no $BIN after the build"
[ -n "$BENCH" ] && [ -x "$BENCH" ] || die "could not find the edge bench binary in cargo's output"

# --- free loopback ports, chosen by the OS (held together so they are distinct) --------------
read -r P_GRPC P_CMETRICS P_BFF P_BFF2 < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
[ -n "${P_BFF2:-}" ] || die "could not get free ports"

# --- process management ----------------------------------------------------------------------
COMPUTE_PID=""
BFF_PID=""

# stop PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench-edge: $pid did not stop in 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop "$BFF_PID"
    stop "$COMPUTE_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_up NAME PID URL LOG: until URL answers 200 (30 s at most), or the process has died.
wait_up() {
    local name=$1 pid=$2 url=$3 log=$4 code=""
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench-edge: $name exited while starting; its log:" >&2
            tail -n 30 "$log" >&2
            exit 1
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    echo "bench-edge: $name did not answer 200 on $url within 30 s (last: ${code:-none}); log:" >&2
    tail -n 30 "$log" >&2
    exit 1
}

# Short drains so that stopping is quick; quiet logs.
export RUST_LOG=${RUST_LOG:-warn}
export IMAGEGATE_BFF__SHUTDOWN_TIMEOUT=5s
export IMAGEGATE_COMPUTE__DRAIN_TIMEOUT=5s
export GRPC_COMPUTE_URL=http://127.0.0.1:$P_GRPC

"$BIN" compute --listen "127.0.0.1:$P_GRPC" --metrics-listen "127.0.0.1:$P_CMETRICS" \
    >"$WORK/compute.log" 2>&1 &
COMPUTE_PID=$!
wait_up compute "$COMPUTE_PID" "http://127.0.0.1:$P_CMETRICS/metrics" "$WORK/compute.log"

# The heavy lane's limit is fixed (at max_in_flight: 32 by default) on every BFF here: this bench
# measures what the edge costs per answer, and the adaptive limit (the default) would shed the
# c=8 load that the direct side queues inside compute, so the two sides would not do the same
# work. The overload bench (make bench-overload) measures the adaptive limit.
export IMAGEGATE_LANES__HEAVY__CONCURRENCY=fixed
"$BIN" bff --listen "127.0.0.1:$P_BFF" >"$WORK/bff.log" 2>&1 &
BFF_PID=$!
wait_up bff "$BFF_PID" "http://127.0.0.1:$P_BFF/health" "$WORK/bff.log"

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "## bench-edge, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo);" \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo
} >"$RESULTS"
cat "$RESULTS"

# --- phase 1: added latency and throughput (default config) ---------------------------------
if [ "$ONLY" = memory ]; then
    echo "BENCH_ONLY=memory: the speed phase is skipped"
elif [ -n "$ONLY" ]; then
    # One payload's speed phase; with BENCH_PROFILE, the BFF's CPU by where it goes.
    if [ -n "$PROFILE" ]; then
        perf record -e cpu-clock -F 2000 ${BENCH_PERF_CALLS:--g} -p "$BFF_PID" -o "$WORK/perf-$PROFILE.data" \
            2>"$WORK/perf.log" &
        PERF_PID=$!
        sleep 1
    fi
    timeout --signal=INT 300 "$BENCH" --phase speed --payloads "$ONLY" \
        --bff "http://127.0.0.1:$P_BFF" --compute "http://127.0.0.1:$P_GRPC" \
        --bff-pid "$BFF_PID" --compute-pid "$COMPUTE_PID" --clk-tck "$(getconf CLK_TCK)" \
        --secs "$SECS" --n-small "$N_SMALL" --n-large "$N_LARGE" --out "$RESULTS" \
        || die "speed phase failed"
    [ -n "$PROFILE" ] || exit 0
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
    perf report -i "$WORK/perf-$PROFILE.data" --no-children --sort dso,sym --stdio 2>/dev/null \
        | grep -v '^$' | grep -E '^ +[0-9]' | head -n 80 >"$WORK/profile-$PROFILE.txt"
    echo "profile (self time by shared object and symbol): $WORK/profile-$PROFILE.txt"
    exit 0
else
    timeout --signal=INT 300 "$BENCH" --phase speed \
        --bff "http://127.0.0.1:$P_BFF" --compute "http://127.0.0.1:$P_GRPC" \
        --bff-pid "$BFF_PID" --compute-pid "$COMPUTE_PID" --clk-tck "$(getconf CLK_TCK)" \
        --secs "$SECS" --n-small "$N_SMALL" --n-large "$N_LARGE" --out "$RESULTS" \
        || die "speed phase failed"
fi

# --- phase 2: peak RSS, on a fresh BFF configured to admit the uploads -----------------------
# upload_bff NAME [VAR=VALUE ...]: a fresh BFF on P_BFF2 whose limits admit every upload of the
# memory phases (plus the given settings); its log is $WORK/bff-NAME.log.
upload_bff() {
    local name=$1
    shift
    stop "$BFF_PID"
    BFF_PID=""
    env IMAGEGATE_LANES__HEAVY__MAX_IN_FLIGHT="$UPLOADS" \
        IMAGEGATE_LANES__HEAVY__QUEUE_WAIT=60s \
        IMAGEGATE_LANES__HEAVY__DEADLINE=120s \
        IMAGEGATE_BFF__MAX_FILE_SIZE=$((UPLOAD_MIB + 2))MiB \
        IMAGEGATE_BFF__MAX_REQUEST_SIZE=$((UPLOAD_MIB + 4))MiB \
        "$@" "$BIN" bff --listen "127.0.0.1:$P_BFF2" >"$WORK/bff-$name.log" 2>&1 &
    BFF_PID=$!
    wait_up "bff ($name phase)" "$BFF_PID" "http://127.0.0.1:$P_BFF2/health" "$WORK/bff-$name.log"
}
upload_bff memory
{
    echo "memory-phase BFF: lanes.heavy.max_in_flight=$UPLOADS, queue_wait=60s, deadline=120s," \
        "bff.max_file_size=$((UPLOAD_MIB + 2))MiB, bff.max_request_size=$((UPLOAD_MIB + 4))MiB;" \
        "compute defaults (workers = CPUs, queue_capacity = 64)"
    echo
} | tee -a "$RESULTS"
timeout --signal=INT 300 "$BENCH" --phase memory \
    --bff "http://127.0.0.1:$P_BFF2" --bff-pid "$BFF_PID" \
    --uploads "$UPLOADS" --upload-mib "$UPLOAD_MIB" --out "$RESULTS" \
    || die "memory phase failed"

# --- phase 3: the same load against a body budget below it ----------------------------------
# bff.max_buffered_bytes must bound what is really resident: uploads past it are shed (503),
# and the peak RSS stays under the baseline + the budget.
BUDGET_MIB=${BENCH_BUDGET_MIB:-128}
upload_bff budget IMAGEGATE_BFF__MAX_BUFFERED_BYTES="${BUDGET_MIB}MiB"
echo "budget-phase BFF: as the memory phase, and bff.max_buffered_bytes=${BUDGET_MIB}MiB" | tee -a "$RESULTS"
echo | tee -a "$RESULTS"
timeout --signal=INT 300 "$BENCH" --phase memory \
    --bff "http://127.0.0.1:$P_BFF2" --bff-pid "$BFF_PID" \
    --uploads "$UPLOADS" --upload-mib "$UPLOAD_MIB" --budget-mib "$BUDGET_MIB" --out "$RESULTS" \
    || die "budget phase failed"

echo
echo "results: $RESULTS"
