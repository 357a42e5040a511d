#!/usr/bin/env python3
"""AVIF against WebP and JPEG, and our AVIF encoder against libvips' (libheif + libaom).

Run by scripts/bench-ops.sh (the AVIF section of `make bench-ops`) with the 24 MP input it
made and our release binary:

    bench-avif.py --bin target/release/imagegate --input target/bench-ops/in.jpg --work DIR

For every encoder it encodes the whole 6000x4000 photo at four qualities, one process at a
time, timed by GNU time (wall, CPU = user + sys, peak RSS). Each output is decoded by vips and
scored with SSIMULACRA2 (the `ssimulacra2` package from PyPI) against the input on the same
centre crop (1536x1536: the metric in Python on all 24 MP would take minutes per image). Bytes
are then compared at equal quality: each encoder's bytes at the same SSIMULACRA2 score,
interpolated (log bytes, linear in score) between its two nearest qualities.

The encoders:
- imagegate AVIF at speed 8, one thread, as compute runs it, and at speed 10 (rav1e's fastest,
  the default `compute.avif_speed`);
- vips heifsave AV1 at effort 1: libaom's cpu-used 8, the same nominal speed as rav1e's 8 (libheif
  maps effort e to cpu-used 9 - e); libaom uses several threads, so CPU time is the fair
  comparison and wall time is shown too;
- imagegate WebP (method 4) and JPEG (mozjpeg), for bytes at equal quality.
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

CROP = (2232, 1232, 1536, 1536)  # left, top, width, height of the scored region
SCORE = 70.0  # SSIMULACRA2 "high quality" (70 ~ JPEG q80-90 on photos)


def timed(cmd):
    """Runs cmd under GNU time; (wall s, CPU s, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        subprocess.run(
            ["/usr/bin/time", "-o", t.name, "-f", "%e %U %S %M"] + cmd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall, user, sys_, rss = t.read().split()[-4:]
    return float(wall), float(user) + float(sys_), int(rss) / 1024


def crop(src, dst):
    left, top, w, h = CROP
    subprocess.run(
        ["vips", "crop", src, dst, str(left), str(top), str(w), str(h)], check=True
    )


def score(ref_png, out, work):
    from ssimulacra2 import compute_ssimulacra2

    png = os.path.join(work, "scored.png")
    crop(out, png)
    return compute_ssimulacra2(ref_png, png)


def bytes_at(points, target):
    """log-bytes interpolated at score `target` from (score, bytes) points; None if outside."""
    pts = sorted(points)
    for (s0, b0), (s1, b1) in zip(pts, pts[1:]):
        if s0 <= target <= s1 and s1 > s0:
            f = (target - s0) / (s1 - s0)
            return math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    ref = os.path.join(args.work, "ref.png")
    crop(args.input, ref)

    def ours(fmt, q, speed=8):
        out = os.path.join(args.work, f"ours-{fmt}-s{speed}-q{q}.{fmt if fmt != 'jpeg' else 'jpg'}")
        cmd = [args.bin, "op", "compress", args.input, "--format", fmt, "--quality", str(q)]
        if fmt == "avif":
            cmd += ["--avif-speed", str(speed)]
        return out, cmd + ["-o", out]

    def vips_avif(q):
        out = os.path.join(args.work, f"vips-avif-q{q}.avif")
        return out, ["vips", "heifsave", args.input, out, "--Q", str(q),
                     "--compression", "av1", "--effort", "1"]

    encoders = {
        "imagegate AVIF, speed 10 (default), 1 thread": [ours("avif", q, 10) for q in (50, 65, 72, 80)],
        "imagegate AVIF, speed 8, 1 thread": [ours("avif", q) for q in (35, 50, 65, 80)],
        "vips heifsave AV1 (libaom), effort 1": [vips_avif(q) for q in (35, 50, 65, 80)],
        "imagegate WebP (method 4)": [ours("webp", q) for q in (50, 70, 85, 95)],
        "imagegate JPEG (mozjpeg)": [ours("jpeg", q) for q in (50, 70, 85, 95)],
    }
    rows = []
    curves = {}
    for name, runs in encoders.items():
        curves[name] = []
        for out, cmd in runs:
            wall, cpu, rss = timed(cmd)
            size = os.path.getsize(out)
            s = score(ref, out, args.work)
            q = re.search(r"q(\d+)\.", out).group(1)
            curves[name].append((s, size))
            rows.append((name, q, size, s, wall, cpu, rss))
            print(f"{name} q{q}: {size} B, SSIMULACRA2 {s:.1f}, {wall:.2f} s wall, "
                  f"{cpu:.2f} s CPU, {rss:.0f} MiB", file=sys.stderr)

    print("\n#### AVIF, WebP and JPEG of the 24 MP photo: bytes, quality, time, memory\n")
    print(f"SSIMULACRA2 against the input on its centre {CROP[2]}x{CROP[3]} crop "
          "(higher is better; 90 ~ visually lossless, 70 ~ high quality). One run each.\n")
    print("| encoder | quality | bytes | SSIMULACRA2 | wall | CPU | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for name, q, size, s, wall, cpu, rss in rows:
        print(f"| {name} | {q} | {size} | {s:.1f} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB |")

    print(f"\n#### Bytes at equal quality (SSIMULACRA2 = {SCORE:.0f}, interpolated)\n")
    jpeg = bytes_at(curves["imagegate JPEG (mozjpeg)"], SCORE)
    print("| encoder | bytes at equal quality | vs our JPEG |")
    print("|---|---|---|")
    for name, pts in curves.items():
        b = bytes_at(pts, SCORE)
        if b is None:
            print(f"| {name} | outside its four qualities | |")
        else:
            ratio = f"{b / jpeg:.2f}" if jpeg else "?"
            print(f"| {name} | {b:.0f} | {ratio} |")

    def at(name, q):
        return next(r for r in rows if r[0] == name and r[1] == q)

    vips65 = at("vips heifsave AV1 (libaom), effort 1", "65")
    for speed in (8, 10):
        name = next(n for n in curves if n.startswith(f"imagegate AVIF, speed {speed}"))
        o = at(name, "65")
        print(f"\nAVIF encode at quality 65, ours at speed {speed} / vips at effort 1: "
              f"wall {o[4] / vips65[4]:.2f}x, CPU {o[5] / vips65[5]:.2f}x, "
              f"peak RSS {o[6] / vips65[6]:.2f}x")
    print("\n(The quality scales differ between encoders: compare bytes at equal SSIMULACRA2.)")


if __name__ == "__main__":
    main()
