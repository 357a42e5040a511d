#!/usr/bin/env bash
# The heavy lane under 4× overload, failover when compute is SIGKILLed under load, and one of two
# replicas frozen (SIGSTOP) under load.
#
#   scripts/bench-overload.sh                       # what `make bench-overload` runs (~3 minutes)
#   OVERLOAD_CAP=8 OVERLOAD_QUEUE_WAITS=250ms,0ms OVERLOAD_FACTOR=4 OVERLOAD_SECS=20 scripts/bench-overload.sh
#   OVERLOAD_COMPUTE_WORKERS=1 scripts/bench-overload.sh  # compute's CPU workers (default: one per core)
#   OVERLOAD_LANES= scripts/bench-overload.sh   # fixed max_in_flight = OVERLOAD_CAP per queue wait
#                                               # (default: adaptive,fixed,tuned side by side)
#   FAILOVER_RATE=15 FAILOVER_DOWN_SECS=4 scripts/bench-overload.sh
#   OVERLOAD_PHASES=failover scripts/bench-overload.sh   # one phase only
#   IMAGEGATE_BIN=/tmp/old/imagegate scripts/bench-overload.sh  # servers from another build
#   OVERLOAD_PHASES=frozen FROZEN_SECS=20 scripts/bench-overload.sh
#                              # two replicas, one SIGSTOPped for FROZEN_SECS under load, then SIGCONTed
#   OVERLOAD_PHASES=capacity CAPACITY_PHASE_SECS=20 scripts/bench-overload.sh
#                              # compute restarted with half its workers, then all, under one adaptive BFF
#
# Builds `imagegate` and the `overload` bench binary (benches/overload.rs) in the release
# profile; the bench starts `imagegate compute` and `imagegate bff` itself as separate
# processes on free loopback ports (it must SIGKILL and restart compute in the failover phase).
# The tables are printed and written to $BENCH_DIR/results.md (default target/bench-overload).
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-target/bench-overload}
PHASES=${OVERLOAD_PHASES:-overload capacity failover frozen}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results.md

die() { echo "bench-overload: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is needed (to find the bench binary in cargo's output)"

echo "building (release) ..."
cargo build --release --bin imagegate --bench overload --message-format=json-render-diagnostics \
    >"$WORK/build.json"
# IMAGEGATE_BIN runs another build of the servers (an older commit, for a before/after).
BIN=${IMAGEGATE_BIN:-$PWD/target/release/imagegate}
BENCH=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "overload"
                      and (.target.kind | index("bench"))) | .executable // empty' \
    "$WORK/build.json" | tail -n 1)
[ -x "$BIN" ] || die "no $BIN after the build"
[ -n "$BENCH" ] && [ -x "$BENCH" ] || die "could not find the overload bench binary in cargo's output"

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "## bench-overload, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)," \
        "load average at start $(cut -d' ' -f1-3 /proc/loadavg);" \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo
} >"$RESULTS"
cat "$RESULTS"

for phase in $PHASES; do
    case $phase in
    overload)
        timeout --signal=INT 900 "$BENCH" --phase overload --bin "$BIN" --work "$WORK" \
            --cap "${OVERLOAD_CAP:-8}" ${OVERLOAD_MAX_QUEUED:+--max-queued "$OVERLOAD_MAX_QUEUED"} --queue-waits "${OVERLOAD_QUEUE_WAITS:-250ms,0ms}" \
            --lanes "${OVERLOAD_LANES-adaptive,fixed,tuned}" \
            --compute-workers "${OVERLOAD_COMPUTE_WORKERS:-0}" --factor "${OVERLOAD_FACTOR:-4}" --secs "${OVERLOAD_SECS:-20}" \
            --width "${OVERLOAD_WIDTH:-1024}" --grain "${OVERLOAD_GRAIN:-4}" --out "$RESULTS" || die "overload phase failed"
        ;;
    capacity)
        timeout --signal=INT 600 "$BENCH" --phase capacity --bin "$BIN" --work "$WORK" \
            --cap "${OVERLOAD_CAP:-8}" --compute-workers "${OVERLOAD_COMPUTE_WORKERS:-0}" \
            --factor "${OVERLOAD_FACTOR:-4}" --secs "${CAPACITY_PHASE_SECS:-20}" \
            --width "${OVERLOAD_WIDTH:-1024}" --grain "${OVERLOAD_GRAIN:-4}" --out "$RESULTS" || die "capacity phase failed"
        ;;
    failover)
        timeout --signal=INT 300 "$BENCH" --phase failover --bin "$BIN" --work "$WORK" \
            --rate "${FAILOVER_RATE:-15}" --down-secs "${FAILOVER_DOWN_SECS:-4}" \
            --width "${OVERLOAD_WIDTH:-1024}" --grain "${OVERLOAD_GRAIN:-4}" --out "$RESULTS" || die "failover phase failed"
        ;;
    frozen)
        timeout --signal=INT 300 "$BENCH" --phase frozen --bin "$BIN" --work "$WORK" \
            --rate "${FAILOVER_RATE:-15}" --down-secs "${FROZEN_SECS:-20}" \
            --width "${OVERLOAD_WIDTH:-1024}" --grain "${OVERLOAD_GRAIN:-4}" --out "$RESULTS" || die "frozen phase failed"
        ;;
    *) die "unknown phase $phase (overload, capacity, failover, frozen)" ;;
    esac
    echo "load average after $phase: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS"
    echo | tee -a "$RESULTS"
done

echo
echo "results: $RESULTS"
