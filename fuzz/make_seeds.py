#!/usr/bin/env python3
"""Writes the small seed corpora in fuzz/seeds/ (committed; `make fuzz` regenerates nothing).

PNG and GIF are built here with the standard library; JPEG and WebP are re-encoded from the PNG
with the project's own CLI (`imagegate op compress`), so run after `cargo build --release`:

    python3 fuzz/make_seeds.py [path/to/imagegate]
"""
import os
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def png(width, height, alpha=False):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    channels = 4 if alpha else 3
    rows = b""
    for y in range(height):
        rows += b"\0"
        for x in range(width):
            px = [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), 128]
            if alpha:
                px.append(255 if x < width // 2 else 64)
            rows += bytes(px[:channels])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def gif():
    """A 2x2 GIF89a, two colours, one frame; LZW with a clear code before every pixel, so that
    every code stays 3 bits wide."""
    codes = []
    for px in (0, 1, 1, 0):
        codes += [4, px]
    codes.append(5)
    bits = sum(c << (3 * i) for i, c in enumerate(codes))
    lzw = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    return (b"GIF89a" + struct.pack("<HH", 2, 2) + b"\x80\x00\x00"  # 2-entry colour table
            + b"\xff\x00\x00\x00\x00\xff"
            + b"\x2c" + struct.pack("<HHHH", 0, 0, 2, 2) + b"\x00"
            + b"\x02" + bytes([len(lzw)]) + lzw + b"\x00\x3b")


def reencode(cli, data, fmt):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.png"), os.path.join(d, "out." + fmt)
        with open(src, "wb") as f:
            f.write(data)
        subprocess.run([cli, "op", "compress", src, "-o", dst, "--format", fmt,
                        "--quality", "50"], check=True, stdout=subprocess.DEVNULL)
        with open(dst, "rb") as f:
            return f.read()


def multipart(parts, boundary=b"XyZzY"):
    out = b""
    for name, filename, data in parts:
        out += b"--" + boundary + b"\r\n"
        disp = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename:
            disp += b'; filename="' + filename + b'"'
            out += disp + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        else:
            out += disp + b"\r\n\r\n"
        out += data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def header(route, ct_mode=0, cl_mode=1, chunk_mode=0, seed=0, max_file=4096,
           max_request=16384, max_files=4, max_field=64, max_fields=12):
    return (bytes([route, ct_mode, cl_mode, chunk_mode, seed])
            + struct.pack("<HH", max_file, max_request)
            + bytes([max_files, max_field, max_fields]))


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    cli = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "release",
                                                             "imagegate")
    small = png(8, 6)
    images = {
        "png": small,
        "png-alpha": png(5, 4, alpha=True),
        "gif": gif(),
        "jpeg": reencode(cli, small, "jpeg"),
        "webp": reencode(cli, small, "webp"),
    }
    for name, data in images.items():
        write("decode", name, data)
    # Odd last byte: also decoded with a resize box.
    write("decode", "jpeg-resize", images["jpeg"] + b"\x02\x04\x00\x01")

    img = images["png"]
    bodies = {
        "compress": (0, [(b"file", b"a.png", img), (b"quality", None, b"80"),
                         (b"format", None, b"webp")]),
        "resize": (1, [(b"width", None, b"4"), (b"keep_aspect_ratio", None, b"true"),
                       (b"file", b"a.jpg", images["jpeg"])]),
        "watermark": (2, [(b"file", b"a.gif", images["gif"]), (b"text", None, b"hi"),
                          (b"position", None, b"center"), (b"opacity", None, b"0.5")]),
        "watermark-overlay": (2, [(b"file", b"a.png", img),
                                  (b"overlay", b"o.png", images["png-alpha"])]),
        "batch": (3, [(b"operation", None, b"compress"), (b"file", b"1.png", img),
                      (b"file", b"2.webp", images["webp"]), (b"file", b"3.txt", b"not an image!!!!")]),
        "upload": (4, [(b"file", b"a.webp", images["webp"])]),
    }
    for i, (name, (route, parts)) in enumerate(bodies.items()):
        write("multipart", name, header(route, chunk_mode=i % 6, seed=i) + multipart(parts))
    # Boundary from the first line; tight limits; a declared length over the limit.
    write("multipart", "boundary-line",
          header(0, ct_mode=1, chunk_mode=2) + b"b0und\n" + multipart(
              [(b"file", b"a.png", img)], boundary=b"b0und"))
    write("multipart", "tight-limits",
          header(3, chunk_mode=1, max_file=64, max_request=400, max_files=1, max_field=4,
                 max_fields=1) + multipart([(b"operation", None, b"resize"),
                                            (b"width", None, b"10"), (b"file", b"a", img)]))
    write("multipart", "declared-too-large",
          header(0, cl_mode=2) + multipart([(b"file", b"a.png", img)]))

    for name, data in {
        "empty": b"",
        "quality-format": b"\x02\x01\x05\x01\x02\x03\x13",
        "text": b"\x05\x09\x07\x80\x06\x00\x01hello world\x09\x0a",
        "mixed": bytes(range(64)),
    }.items():
        write("params", name, data)


if __name__ == "__main__":
    main()
