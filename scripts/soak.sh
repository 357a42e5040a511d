#!/usr/bin/env bash
# Soak: mixed load against real compute + BFF, sampling RSS and open fds of both.
#
#   scripts/soak.sh                                  # what `make soak` runs (30 minutes)
#   SOAK_SECS=1800 SOAK_WARMUP=120 SOAK_RATE=20 SOAK_SAMPLE_SECS=2 scripts/soak.sh
#
# Builds `imagegate` and the `soak` bench binary (benches/soak.rs) in the release profile; the
# bench starts `imagegate compute` and `imagegate bff` itself on free loopback ports. The
# summary is printed and written as a markdown snippet to $SOAK_DIR/results.md (default
# target/soak), the samples to $SOAK_DIR/soak-samples.csv.
set -euo pipefail

cd "$(dirname "$0")/.."
WORK=${SOAK_DIR:-target/soak}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results.md
SECS=${SOAK_SECS:-1800}

die() { echo "soak: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is needed (to find the bench binary in cargo's output)"

echo "building (release) ..."
cargo build --release --bin imagegate --bench soak --message-format=json-render-diagnostics \
    >"$WORK/build.json"
BIN=$PWD/target/release/imagegate
BENCH=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "soak"
                      and (.target.kind | index("bench"))) | .executable // empty' \
    "$WORK/build.json" | tail -n 1)
[ -x "$BIN" ] || die "no $BIN after the build"
[ -n "$BENCH" ] && [ -x "$BENCH" ] || die "could not find the soak bench binary in cargo's output"

# A fresh upload store for each run.
rm -rf "$WORK/uploads"
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "## soak, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)," \
        "load average at start $(cut -d' ' -f1-3 /proc/loadavg);" \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo
} >"$RESULTS"
cat "$RESULTS"

# Bounded: the soak's own length plus 10 minutes.
timeout --signal=INT $((${SECS%.*} + 600)) "$BENCH" --bin "$BIN" --work "$WORK" --secs "$SECS" \
    --warmup "${SOAK_WARMUP:-120}" --rate "${SOAK_RATE:-20}" \
    --sample-secs "${SOAK_SAMPLE_SECS:-2}" --clk-tck "$(getconf CLK_TCK)" --out "$RESULTS" || die "soak failed"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS"

echo
echo "results: $RESULTS (samples: $WORK/soak-samples.csv)"
