#!/usr/bin/env bash
# Head-of-line blocking benchmark (issue 5): shared (one HTTP/2 connection) vs bulkhead (two
# lanes) across an emulated slow, lossy link. Needs root (network namespaces, tc, nftables).
#
#   make bench-hol                      # or: scripts/bench-hol.sh
#   HOL_LOAD_SECS=30 HOL_LOSS_PERMILLE=10 scripts/bench-hol.sh
#
# Topology:  [ns hol-bff-PID: load generator -> BFF (127.0.0.1:8080)] --veth 10.203.0.1
#            <== tbf 100 Mbit/s, ~50 ms queue, 0.5 % random loss, each direction ==>
#            10.203.0.2 [ns hol-cmp-PID: compute :50051, TCP echo :7007]
#
# Each direction is shaped with tbf (rate, queue). By default the shaper sits at the receiving
# end (the veth end's ingress redirected through an IFB device), so the link's queue is out in
# "the network", as with a real bottleneck, and never in the sending host's own qdisc (where
# Linux's TCP small queues and autocorking would react to it); HOL_SHAPE_AT=egress puts it on
# the sender's veth instead. Packets are dropped at random by an nftables rule on the receiving
# end's ingress, after the shaper (as on a real lossy link): BFF->compute by default, both ways
# with HOL_LOSS_DIR=both. GSO/TSO/GRO are off on the pair, so tbf and the drop rule see
# wire-sized packets. netem adds delay only if this kernel has it (these machines' don't).
#
# Parameters (environment):
#   HOL_RATE=100mbit  HOL_QUEUE=50ms  HOL_BURST=15k  HOL_LOSS_PERMILLE=5
#   HOL_LOSS_DIR=up|both (up: BFF->compute only, the uploads' direction; both: each way)
#   HOL_SHAPE_AT=ingress|egress (where each direction's tbf sits: receiver via IFB, or sender)
#   HOL_DELAY=10ms (only with netem; 0 disables)
#   HOL_CLIENTS=8  HOL_IMAGE_MB=8  HOL_QUALITY=75  HOL_PROBE_HZ=20  HOL_DEADLINE_MS=1000
#   HOL_IDLE_SECS=10  HOL_WARMUP_SECS=3  HOL_LOAD_SECS=25  HOL_MODES="shared bulkhead yield"
#   HOL_OUT=target/bench-hol  HOL_PLOT=docs/img/hol-latency.png
#   HOL_COMPUTE_WORKERS=0 (compute CPU threads; 0 = one per core)
#   HOL_BFF_ENV="IMAGEGATE_LANES__HEAVY__CONNECTIONS=8 ..." (extra BFF settings, every mode)
#   HOL_YIELD_ENV="IMAGEGATE_LANES__HEAVY__YIELD_DELAY_TARGET=2ms" (extra BFF settings, yield mode)
#   HOL_YIELD_COMPUTE_ENV="IMAGEGATE_COMPUTE__YIELD_ANSWERS=false" (extra compute settings, yield mode)
#   HOL_CC=reno|bbr|... (TCP congestion control in both namespaces, among those the host
#                 allows there; default: the host's)
#   HOL_SYSCTL="net.ipv4.tcp_autocorking=0 ..." (sysctls set inside both namespaces; default none)
#   HOL_NICE=-10 (priority of every process of the benchmark: the machine is shared, and other
#                 work on it should not decide the latencies; the same for both modes)
#   HOL_PIN=yes|no (default yes with 2+ CPUs: compute on the last CPU, the BFF, the load
#                 generator and the echo server on the others, as if on two hosts; else shared)
#   HOL_BIN=... HOL_BENCH_BIN=... (use these binaries instead of building)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

RATE=${HOL_RATE:-100mbit}
QUEUE=${HOL_QUEUE:-50ms}
BURST=${HOL_BURST:-15k}
LOSS=${HOL_LOSS_PERMILLE:-5}
LOSS_DIR=${HOL_LOSS_DIR:-up}
SHAPE_AT=${HOL_SHAPE_AT:-ingress}
DELAY=${HOL_DELAY:-10ms}
CLIENTS=${HOL_CLIENTS:-8}
IMAGE_MB=${HOL_IMAGE_MB:-8}
QUALITY=${HOL_QUALITY:-75}
PROBE_HZ=${HOL_PROBE_HZ:-20}
DEADLINE_MS=${HOL_DEADLINE_MS:-1000}
IDLE_SECS=${HOL_IDLE_SECS:-10}
WARMUP_SECS=${HOL_WARMUP_SECS:-3}
LOAD_SECS=${HOL_LOAD_SECS:-25}
MODES=${HOL_MODES:-shared bulkhead yield}
OUT=${HOL_OUT:-target/bench-hol}
PLOT=${HOL_PLOT:-docs/img/hol-latency.png}
COMPUTE_WORKERS=${HOL_COMPUTE_WORKERS:-0}
BFF_ENV=${HOL_BFF_ENV:-}
YIELD_ENV=${HOL_YIELD_ENV:-}
YIELD_COMPUTE_ENV=${HOL_YIELD_COMPUTE_ENV:-}
NICE=${HOL_NICE:--10}
NCPU=$(nproc)
PIN=${HOL_PIN:-$([ "$NCPU" -ge 2 ] && echo yes || echo no)}
if [ "$PIN" = yes ] && [ "$NCPU" -ge 2 ]; then
    COMPUTE_CPUS=$((NCPU - 1))
    BFF_CPUS=$([ "$NCPU" -eq 2 ] && echo 0 || echo "0-$((NCPU - 2))")
else
    PIN=no
    COMPUTE_CPUS=0-$((NCPU - 1))
    BFF_CPUS=$COMPUTE_CPUS
fi

case "$SHAPE_AT" in ingress | egress) ;; *) echo "HOL_SHAPE_AT must be ingress or egress" >&2; exit 2 ;; esac
case "$LOSS_DIR" in both | up) ;; *) echo "HOL_LOSS_DIR must be both or up" >&2; exit 2 ;; esac
for m in $MODES; do
    case "$m" in shared | bulkhead | yield) ;; *) echo "HOL_MODES: unknown mode $m" >&2; exit 2 ;; esac
done

# --- root, tools -----------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-hol needs root: it creates network namespaces, a veth pair, tc qdiscs and" >&2
    echo "nftables rules. Run it as root (e.g. sudo make bench-hol)." >&2
    exit 1
fi

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v ethtool >/dev/null || need+=(ethtool)
command -v taskset >/dev/null || need+=(util-linux)
command -v /usr/bin/python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A Python with matplotlib for the plot (Debian's package first, pip as a fallback).
PY=""
for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import matplotlib' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
    echo "installing python3-matplotlib (for the plot)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null; } ||
        python3 -m pip install -q matplotlib || true
    for p in /usr/bin/python3 python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import matplotlib' 2>/dev/null; then PY=$p; break; fi
    done
    [ -n "$PY" ] || echo "warning: no matplotlib; the plot will be skipped" >&2
fi

# --- build once ------------------------------------------------------------------------------
if [ -n "${HOL_BIN:-}" ] && [ -n "${HOL_BENCH_BIN:-}" ]; then
    BIN=$HOL_BIN
    BENCH=$HOL_BENCH_BIN
else
    echo "building (release): imagegate and the hol bench"
    cargo build --release --bin imagegate --bench hol
    BIN=$ROOT/target/release/imagegate
    # The bench binary's hashed name, from cargo itself (a no-op build by now).
    BENCH=$(cargo build --release --bench hol --message-format=json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "hol" \
            and m.get("executable"):
        print(m["executable"])
' | tail -1)
fi
if [ ! -x "$BIN" ] || [ -z "$BENCH" ] || [ ! -x "$BENCH" ]; then
    echo "cannot find the built binaries" >&2
    exit 1
fi

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.txt "$OUT"/summary.md
OUT=$(cd "$OUT" && pwd)

# --- namespaces, link, shaping (always cleaned up) -----------------------------------------
ID=$$
NSB=hol-bff-$ID
NSC=hol-cmp-$ID
VB=holb$ID
VC=holc$ID
IPB=10.203.0.1
IPC=10.203.0.2
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in "$NSB" "$NSC"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    done
    for _ in $(seq 20); do
        local left=""
        for ns in "$NSB" "$NSC"; do left+=$(ip netns pids "$ns" 2>/dev/null || true); done
        [ -z "$left" ] && break
        sleep 0.1
    done
    for ns in "$NSB" "$NSC"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        # Deleting the namespace removes its veth end, qdiscs and nftables tables with it.
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$VB" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted; cleaning up" >&2; exit 130' INT TERM

if ! ip netns add "$NSB" 2>"$OUT/netns.err" || ! ip netns add "$NSC" 2>>"$OUT/netns.err"; then
    echo "cannot create a network namespace: $(cat "$OUT/netns.err")" >&2
    echo "bench-hol needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root on the host, not in a restricted container)." >&2
    exit 1
fi
ip link add "$VB" netns "$NSB" type veth peer name "$VC" netns "$NSC"
ip -n "$NSB" addr add "$IPB/30" dev "$VB"
ip -n "$NSC" addr add "$IPC/30" dev "$VC"
for pair in "$NSB $VB" "$NSC $VC"; do
    read -r ns dev <<<"$pair"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$dev" up
    ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null 2>&1 || true
done

NETEM=no
if [ "$DELAY" != 0 ] && ip netns exec "$NSB" tc qdisc add dev "$VB" root netem delay 1ms 2>/dev/null; then
    ip netns exec "$NSB" tc qdisc del dev "$VB" root
    NETEM=yes
fi

shape() { # namespace device
    if [ "$NETEM" = yes ]; then
        ip netns exec "$1" tc qdisc add dev "$2" root handle 1: netem delay "$DELAY"
        ip netns exec "$1" tc qdisc add dev "$2" parent 1:1 handle 10: tbf rate "$RATE" burst "$BURST" latency "$QUEUE"
    else
        ip netns exec "$1" tc qdisc add dev "$2" root handle 1: tbf rate "$RATE" burst "$BURST" latency "$QUEUE"
    fi
}
drop() { # namespace device: random loss of what arrives on device, after the shaper
    # At the IP layer (prerouting): an IFB re-injects packets past the netdev ingress hook.
    ip netns exec "$1" nft -f - <<EOF
table inet hol {
    chain prerouting {
        type filter hook prerouting priority -300; policy accept;
        iifname "$2" numgen random mod 1000 < $LOSS counter drop
    }
}
EOF
}
if [ "$SHAPE_AT" = ingress ]; then
    # Each direction is shaped where it arrives: the receiving veth end's ingress is redirected
    # through an IFB device whose tbf is the link's queue. The senders' own qdiscs stay empty,
    # as with a bottleneck out in the network.
    to_ifb() { # namespace veth ifb
        ip -n "$1" link add "$3" type ifb || {
            echo "this kernel has no IFB device: run with HOL_SHAPE_AT=egress" >&2
            exit 1
        }
        ip -n "$1" link set "$3" up
        ip netns exec "$1" tc qdisc add dev "$2" handle ffff: ingress
        ip netns exec "$1" tc filter add dev "$2" parent ffff: protocol all u32 match u32 0 0 \
            action mirred egress redirect dev "$3"
    }
    UP_NS=$NSC UP_DEV=holu$ID DOWN_NS=$NSB DOWN_DEV=hold$ID
    to_ifb "$NSC" "$VC" "$UP_DEV"
    to_ifb "$NSB" "$VB" "$DOWN_DEV"
else
    # Each direction is shaped on the sender's veth end: the link's queue is the sending
    # host's own qdisc (as with an egress shaper on the host itself).
    UP_NS=$NSB UP_DEV=$VB DOWN_NS=$NSC DOWN_DEV=$VC
fi
shape "$UP_NS" "$UP_DEV"
shape "$DOWN_NS" "$DOWN_DEV"
# Loss after the bottleneck: on the receiving end's ingress (after the IFB, when there is one).
drop "$NSC" "$VC" # BFF -> compute
[ "$LOSS_DIR" = both ] && drop "$NSB" "$VB" # compute -> BFF

if [ -n "${HOL_CC:-}" ]; then
    for ns in "$NSB" "$NSC"; do ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$HOL_CC"; done
fi
for kv in ${HOL_SYSCTL:-}; do
    for ns in "$NSB" "$NSC"; do ip netns exec "$ns" sysctl -qw "$kv"; done
done
CC=$(ip netns exec "$NSB" sysctl -n net.ipv4.tcp_congestion_control)
{
    echo "date: $(date -u +%FT%TZ)"
    echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "link: tbf rate $RATE burst $BURST latency $QUEUE each direction, $([ "$SHAPE_AT" = ingress ] && echo "at the receiver's ingress (IFB)" || echo "at the sender's egress"); loss $LOSS/1000 ($LOSS_DIR); netem delay: $([ "$NETEM" = yes ] && echo "$DELAY each way" || echo "not available, none")"
    echo "sysctls in the namespaces: ${HOL_SYSCTL:-host defaults}"
    echo "tcp: congestion control $CC, tcp_wmem $(ip netns exec "$NSB" sysctl -n net.ipv4.tcp_wmem | tr '\t' ' '), GSO/TSO/GRO off on the veth pair"
    echo "compute workers: $COMPUTE_WORKERS (0 = one per core); extra BFF env: ${BFF_ENV:-none}; nice $NICE"
    echo "CPUs: $([ "$PIN" = yes ] && echo "compute on CPU $COMPUTE_CPUS; BFF, load generator and echo server on CPU $BFF_CPUS" || echo "not pinned ($NCPU shared)")"
} | tee "$OUT/setup.txt"

# --- image, compute, echo --------------------------------------------------------------------
IMAGE=$ROOT/target/bench-hol-image-${IMAGE_MB}mb.jpg
"$BENCH" image --out "$IMAGE" --mb "$IMAGE_MB"

start_compute() { # mode [extra env...]: compute for one mode (its own log)
    local mode=$1
    shift
    # shellcheck disable=SC2068 # extra env words
    taskset -c "$COMPUTE_CPUS" nice -n "$NICE" ip netns exec "$NSC" env RUST_LOG=warn IMAGEGATE_COMPUTE__WORKERS="$COMPUTE_WORKERS" $@ \
        "$BIN" compute --listen "$IPC:50051" --metrics-listen "127.0.0.1:9464" >"$OUT/compute-$mode.log" 2>&1 &
    COMPUTE_PID=$!
    PIDS+=("$COMPUTE_PID")
    for _ in $(seq 50); do
        ip netns exec "$NSC" bash -c "exec 3<>/dev/tcp/$IPC/50051" 2>/dev/null && return 0
        sleep 0.1
    done
}
taskset -c "$BFF_CPUS" nice -n "$NICE" ip netns exec "$NSC" "$BENCH" echo-server --listen "$IPC:7007" --max-secs 900 >"$OUT/echo.log" 2>&1 &
PIDS+=("$!")

# Link queue sampler: tbf backlog on each side every 100 ms while the loaded window is open
# (`hol run` keeps the file MODE.window in place during it); bounded by count.
RATE_BYTES_PER_MS=$(awk -v r="$RATE" 'BEGIN {
    n = r + 0; u = tolower(r); sub(/^[0-9.]+/, "", u)
    m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : (u == "bit") ? 1 : 0
    printf "%.3f", (m ? n * m / 8 / 1000 : 12500) }')
sample_queues() { # mode count
    local mode=$1 ns dev dir
    for _ in $(seq "$2"); do
        if [ ! -e "$OUT/$mode.window" ]; then sleep 0.1; continue; fi
        for side in "$UP_NS $UP_DEV up" "$DOWN_NS $DOWN_DEV down"; do
            read -r ns dev dir <<<"$side"
            ip netns exec "$ns" tc -s qdisc show dev "$dev" 2>/dev/null |
                awk -v d="$dir" '/backlog/ && !done {
                    v = $2; m = 1
                    if (v ~ /Mb$/) m = 1048576; else if (v ~ /Kb$/) m = 1024
                    print d, (v + 0) * m; done = 1 }'
        done
        sleep 0.1
    done >"$OUT/queue-$mode.txt"
}
queue_summary() { # mode
    for d in up down; do
        awk -v d="$d" '$1 == d { print $2 }' "$OUT/queue-$1.txt" | sort -n | awk -v d="$d" -v r="$RATE_BYTES_PER_MS" -v m="$1" '
            { v[NR] = $1 } END { if (!NR) exit
              p50 = v[int(NR * 0.5) > 0 ? int(NR * 0.5) : 1]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
              printf "%s: tbf backlog %s: p50 %.0f KB (%.1f ms), p99 %.0f KB (%.1f ms), max %.0f KB (%.1f ms), %d samples\n",
                  m, (d == "up" ? "BFF->compute" : "compute->BFF"), p50/1000, p50/r, p99/1000, p99/r, v[NR]/1000, v[NR]/r, NR }'
    done
}

# --- one BFF per mode, measured back to back -------------------------------------------------
# Long steps run in the background and are waited for, so that an interrupt is handled at once.
in_background() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}
RUN_LIMIT=$(awk -v a="$IDLE_SECS" -v b="$WARMUP_SECS" -v c="$LOAD_SECS" 'BEGIN { printf "%d", a + b + c + 90 }')
for mode in $MODES; do
    echo "== mode $mode"
    # `yield` is the bulkhead with the heavy lane yielding to the realtime lane and compute
    # pacing its answers; each mode gets a compute of its own.
    MODE_ENV="IMAGEGATE_MODE=$mode"
    COMPUTE_ENV=""
    if [ "$mode" = yield ]; then
        MODE_ENV="IMAGEGATE_MODE=bulkhead IMAGEGATE_LANES__HEAVY__YIELD_TO=realtime $YIELD_ENV"
        COMPUTE_ENV="IMAGEGATE_COMPUTE__YIELD_ANSWERS=true $YIELD_COMPUTE_ENV"
    fi
    # shellcheck disable=SC2086 # a list of VAR=value words
    start_compute "$mode" $COMPUTE_ENV
    # shellcheck disable=SC2086 # BFF_ENV is a list of VAR=value words
    taskset -c "$BFF_CPUS" nice -n "$NICE" ip netns exec "$NSB" env RUST_LOG=warn $MODE_ENV GRPC_COMPUTE_URL="http://$IPC:50051" \
        $BFF_ENV "$BIN" bff --listen 127.0.0.1:8080 >"$OUT/bff-$mode.log" 2>&1 &
    BFF_PID=$!
    PIDS+=("$BFF_PID")
    SAMPLES=$(awk -v a="$IDLE_SECS" -v b="$WARMUP_SECS" -v c="$LOAD_SECS" 'BEGIN { printf "%d", (a + b + c + 5) * 10 }')
    sample_queues "$mode" "$SAMPLES" &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
    in_background timeout "$RUN_LIMIT" taskset -c "$BFF_CPUS" nice -n "$NICE" ip netns exec "$NSB" "$BENCH" run --label "$mode" \
        --bff http://127.0.0.1:8080 --echo "$IPC:7007" --image "$IMAGE" \
        --clients "$CLIENTS" --quality "$QUALITY" --probe-hz "$PROBE_HZ" --deadline-ms "$DEADLINE_MS" \
        --idle-secs "$IDLE_SECS" --warmup-secs "$WARMUP_SECS" --load-secs "$LOAD_SECS" \
        --iface "$VB" --bff-pid "$BFF_PID" --compute-pid "$COMPUTE_PID" --out "$OUT"
    kill "$BFF_PID" "$SAMPLER" 2>/dev/null || true
    wait "$BFF_PID" "$SAMPLER" 2>/dev/null || true
    # Let the link drain (compute finishes or drops the cancelled uploads).
    sleep 2
    kill "$COMPUTE_PID" 2>/dev/null || true
    wait "$COMPUTE_PID" 2>/dev/null || true
done

{
    for mode in $MODES; do queue_summary "$mode"; done
    echo "tc, BFF->compute ($UP_DEV):"; ip netns exec "$UP_NS" tc -s qdisc show dev "$UP_DEV"
    echo "tc, compute->BFF ($DOWN_DEV):"; ip netns exec "$DOWN_NS" tc -s qdisc show dev "$DOWN_DEV"
    echo "nft drops (compute side, BFF->compute):"; ip netns exec "$NSC" nft list table inet hol | grep counter
    [ "$LOSS_DIR" = both ] && { echo "nft drops (BFF side, compute->BFF):"; ip netns exec "$NSB" nft list table inet hol | grep counter; }
    true
} >"$OUT/link.txt"

echo
# shellcheck disable=SC2086
"$BENCH" report --dir "$OUT" --labels $MODES
echo
cat "$OUT/link.txt"
if [ -n "$PY" ]; then
    mkdir -p "$(dirname "$PLOT")"
    # shellcheck disable=SC2086 # MODES is a list of words
    "$PY" scripts/hol-plot.py "$OUT" "$PLOT" $MODES && echo "plot: $PLOT"
fi
echo "results: $OUT (setup.txt, summary.md, one JSON per mode, logs)"
