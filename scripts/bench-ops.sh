#!/usr/bin/env bash
# Benchmark imagegate's image operations against libvips, as whole processes with hyperfine.
#
#   scripts/bench-ops.sh            # both modes: one pinned core, then the whole machine
#   BENCH_MODE=pinned scripts/bench-ops.sh
#   BENCH_RUNS=20 BENCH_WARMUP=3 scripts/bench-ops.sh
#   BENCH_NO_BUILD=1 scripts/bench-ops.sh   # use the existing release binary
#
# Cases (24-megapixel photo-like JPEG, generated with vips):
#   thumbnail: vipsthumbnail in.jpg -s 200 -o out.jpg            (vips default Q75)
#          vs  imagegate op resize in.jpg --width 200 --height 200 --quality 75 -o out.jpg
#   webp:      vips copy in.jpg out.webp[Q=80]
#          vs  imagegate op compress in.jpg --format webp --quality 80 -o out.webp
#   (info)     the thumbnail case again with a WebP source (in.jpg converted by vips, Q80)
#   colour:    imagegate's thumbnail of in.jpg vs of the same JPEG with an embedded ICC profile
#              (vips' built-in sRGB profile: converted like any other, so it costs the same as
#              a Display-P3 one); target <= 1.05
#   avif:      scripts/bench-avif.py: our AVIF (rav1e, speed 8, one thread) vs vips heifsave AV1
#              (libaom, effort 1) vs our WebP and JPEG, four qualities each, scored with
#              SSIMULACRA2: bytes at equal quality, wall/CPU time and peak RSS (BENCH_AVIF=0 skips)
#
# Fairness: in "pinned" mode both sides run under `taskset -c 0` with VIPS_CONCURRENCY=1, i.e.
# one thread each on the same core (imagegate's operations are single-threaded per image: the
# server gets its parallelism from running many images at once). In "machine" mode both run
# unrestricted, vips with its default thread pool.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-10}
WARMUP=${BENCH_WARMUP:-2}
MODE=${BENCH_MODE:-both}
WORK=${BENCH_DIR:-target/bench-ops}
mkdir -p "$WORK"
# Absolute: vipsthumbnail resolves a relative -o against the input's directory.
WORK=$(cd "$WORK" && pwd)

need_install=()
command -v vips >/dev/null || need_install+=(libvips-tools)
command -v vipsthumbnail >/dev/null || need_install+=(libvips-tools)
command -v hyperfine >/dev/null || need_install+=(hyperfine)
# nasm must exist before mozjpeg-sys is first compiled, or libjpeg-turbo's SIMD is left out.
command -v nasm >/dev/null || need_install+=(nasm)
command -v taskset >/dev/null || need_install+=(util-linux)
if ((${#need_install[@]})); then
    echo "installing: ${need_install[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

# BENCH_NO_BUILD=1 reuses an existing target/release/imagegate.
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bin imagegate
fi
BIN=$PWD/target/release/imagegate

# --- a 6000x4000 photo-like JPEG: smooth colour, luminance texture, hard edges, grain ---
IN=$WORK/in.jpg
if [ ! -s "$IN" ]; then
    echo "generating $IN (6000x4000, Q90)"
    T=$(mktemp -d)
    trap 'rm -rf "$T"' EXIT
    # Colour: per-band low-resolution noise, blurred, scaled up 30x: smooth colour fields
    # (in photos chroma varies slowly; detail is mostly luminance).
    for b in r g b; do
        vips gaussnoise "$T/n_$b.v" 300 200 --mean 0 --sigma 70
        vips gaussblur "$T/n_$b.v" "$T/s_$b.v" 5
        vips linear "$T/s_$b.v" "$T/c_$b.v" 9 120
        vips resize "$T/c_$b.v" "$T/l_$b.v" 20 --kernel cubic
    done
    vips bandjoin "$T/l_r.v $T/l_g.v $T/l_b.v" "$T/colour.v"
    # Texture: mid-scale luminance detail shared by the three bands.
    vips gaussnoise "$T/dn.v" 1500 1000 --mean 0 --sigma 40
    vips gaussblur "$T/dn.v" "$T/ds.v" 2
    vips linear "$T/ds.v" "$T/dc.v" 4 0
    vips resize "$T/dc.v" "$T/detail.v" 4 --kernel cubic
    vips add "$T/colour.v" "$T/detail.v" "$T/smooth.v"
    # Object outlines: a thresholded smooth field gives curved, sharp edges; the regions
    # outside it are shaded to 60 %.
    vips gaussnoise "$T/m.v" 240 160 --mean 128 --sigma 50
    vips gaussblur "$T/m.v" "$T/mb.v" 3
    vips resize "$T/mb.v" "$T/ml.v" 25 --kernel cubic
    vips relational_const "$T/ml.v" "$T/keep.v" lesseq 128
    vips linear "$T/keep.v" "$T/shade.v" 0.00157 0.6
    vips multiply "$T/smooth.v" "$T/shade.v" "$T/edged.v"
    # Sensor-like grain.
    vips gaussnoise "$T/grain.v" 6000 4000 --mean 0 --sigma 6
    vips add "$T/edged.v" "$T/grain.v" "$T/noisy.v"
    vips cast "$T/noisy.v" "$T/u8.v" uchar
    vips jpegsave "$T/u8.v" "$IN" --Q 90
    rm -rf "$T"
    trap - EXIT
fi
echo "input: $IN $(stat -c %s "$IN") bytes, $(vipsheader "$IN")"

size() { stat -c %s "$1"; }

# One markdown row from a hyperfine CSV export (row 1 = vips, row 2 = imagegate; columns:
# command,mean,stddev,median,user,system,min,max) and the two output files.
row() {
    local name=$1 csv=$2 target=$3 out_vips=$4 out_ours=$5
    awk -F, -v name="$name" -v target="$target" -v bv="$(size "$out_vips")" -v bo="$(size "$out_ours")" '
        NR == 2 { vw = $2; vsd = $3; vc = $5 + $6 }
        NR == 3 { ow = $2; osd = $3; oc = $5 + $6 }
        END {
            printf "| %s | %.1f ± %.1f ms | %.1f ± %.1f ms | **%.2f** | %s | %.1f ms | %.1f ms | %.2f | %d | %d | %.3f |\n",
                name, vw * 1000, vsd * 1000, ow * 1000, osd * 1000, ow / vw, target,
                vc * 1000, oc * 1000, oc / vc, bv, bo, bo / bv
        }' "$csv"
}

run_mode() {
    local mode=$1 prefix env_vips
    if [ "$mode" = pinned ]; then
        prefix="taskset -c 0"
        env_vips="VIPS_CONCURRENCY=1"
    else
        prefix=""
        env_vips=""
    fi
    local d=$WORK/$mode
    mkdir -p "$d"

    hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic --export-csv "$d/thumb.csv" \
        -n vipsthumbnail "env $env_vips $prefix vipsthumbnail $IN -s 200 -o $d/thumb-vips.jpg" \
        -n imagegate "$prefix $BIN op resize $IN --width 200 --height 200 --quality 75 -o $d/thumb-ours.jpg"
    hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic --export-csv "$d/webp.csv" \
        -n "vips webp" "env $env_vips $prefix vips copy $IN $d/vips.webp[Q=80]" \
        -n "imagegate webp" "$prefix $BIN op compress $IN --format webp --quality 80 -o $d/ours.webp"
    # Informational (no target): a thumbnail of a WebP source, where libvips shrinks inside
    # libwebp's decoder and we decode fully, then pre-shrink + Lanczos3.
    local in_webp=$WORK/in.webp
    [ -s "$in_webp" ] || vips copy "$IN" "$in_webp[Q=80]"
    hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic --export-csv "$d/thumb-webp.csv" \
        -n "vipsthumbnail webp" "env $env_vips $prefix vipsthumbnail $in_webp -s 200 -o $d/thumbw-vips.jpg" \
        -n "imagegate webp" "$prefix $BIN op resize $in_webp --width 200 --height 200 --quality 75 -o $d/thumbw-ours.jpg"

    # The colour path: the same pixels, with and without an ICC profile to convert from.
    # Both re-encoded the same way from in.jpg, so they differ only in the profile.
    local in_icc=$WORK/in-icc.jpg in_plain=$WORK/in-plain.jpg
    [ -s "$in_icc" ] || vips jpegsave "$IN" "$in_icc" --Q 90 --profile srgb
    [ -s "$in_plain" ] || vips jpegsave "$IN" "$in_plain" --Q 90 --profile none
    hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic --export-csv "$d/colour.csv" \
        -n "imagegate-no-profile" "$prefix $BIN op resize $in_plain --width 200 --height 200 --quality 75 -o $d/thumb-plain.jpg" \
        -n "imagegate-icc-profile" "$prefix $BIN op resize $in_icc --width 200 --height 200 --quality 75 -o $d/thumb-icc.jpg"

    {
        echo
        echo "mode: $mode ($(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1))"
        printf '| case | vips wall | imagegate wall | wall ours/vips | target | vips CPU | imagegate CPU | CPU ours/vips | vips bytes | imagegate bytes | size ours/vips |\n'
        printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
        row "thumbnail 200 px, JPEG Q75 ($(vipsheader "$d/thumb-ours.jpg" | sed 's/^[^:]*: //; s/ .*//'))" \
            "$d/thumb.csv" "<= 1.0" "$d/thumb-vips.jpg" "$d/thumb-ours.jpg"
        row "JPEG to WebP Q80 (6000x4000)" "$d/webp.csv" "<= 1.2" "$d/vips.webp" "$d/ours.webp"
        row "thumbnail 200 px of a 6000x4000 WebP, JPEG Q75" "$d/thumb-webp.csv" "(info)" \
            "$d/thumbw-vips.jpg" "$d/thumbw-ours.jpg"
        echo
        echo "colour path (imagegate only: \"vips\" columns = no profile, \"imagegate\" = with an ICC profile):"
        printf '| case | no profile | with profile | with/without | target | CPU without | CPU with | CPU ratio | bytes without | bytes with | size ratio |\n'
        printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
        row "thumbnail 200 px, 6000x4000 JPEG" "$d/colour.csv" "<= 1.05" "$d/thumb-plain.jpg" "$d/thumb-icc.jpg"
    } | tee "$d/table.md"
}

case "$MODE" in
    pinned | machine) run_mode "$MODE" ;;
    both)
        run_mode pinned
        run_mode machine
        echo
        cat "$WORK/pinned/table.md" "$WORK/machine/table.md"
        ;;
    *) echo "BENCH_MODE must be pinned, machine or both" >&2; exit 2 ;;
esac

# --- AVIF against WebP and JPEG, and against libvips' AVIF (scripts/bench-avif.py) -----------
# SSIMULACRA2 from PyPI, in a venv of its own under target/ (nothing installed by hand).
if [ "${BENCH_AVIF:-1}" != 0 ]; then
    VENV=$WORK/venv
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import ssimulacra2' 2>/dev/null; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check 'ssimulacra2==0.3.0'
    fi
    echo
    echo "AVIF: 20 encodes of the 24 MP photo, each scored (about 4 minutes) ..."
    "$VENV/bin/python" scripts/bench-avif.py --bin "$BIN" --input "$IN" --work "$WORK/avif" \
        | tee "$WORK/avif.md"
fi
