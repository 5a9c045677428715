"""Write a corpus of odd and hostile inputs, made from real images (scikit-learn's sample photos
and digits), with what preprocess must do with each: ``ok`` (normalised) or the start of the
reason it is quarantined with. Also a zip of it with hostile archive members added.

    python scripts/hostile_corpus.py OUT
"""

from __future__ import annotations

import argparse
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_image


def _photo(size: int = 160) -> Image.Image:
    return Image.fromarray(load_sample_image("flower.jpg")).resize((size, int(size * 0.7)))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims absurd dimensions."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def corpus() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, expectation)."""
    digits = load_digits()
    digit = [Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8), mode="L") for i in range(40)]
    photo = _photo()
    jpeg, png = _encode(photo, "JPEG", quality=90), _encode(photo, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [photo.convert("P"), photo.rotate(180).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tiff = io.BytesIO()
    photo.save(tiff, format="TIFF", save_all=True, append_images=[photo.rotate(90)])
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 96))
    files = {f"{'ab'[i % 2]}/seed_{i:02d}.png": (_encode(d, "PNG"), "ok") for i, d in enumerate(digit[:20])}
    files.update({f"unlabelled_{i:02d}.png": (_encode(d, "PNG"), "ok") for i, d in enumerate(digit[20:])})
    files.update({
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "truncated.png": (png[: len(png) // 2], "truncated or corrupt"),
        "zero-bytes.png": (b"", "empty file"),
        "text.jpg": (b"This is a plain text file with a .jpg name.\n" * 20, "not an image: text"),
        "page.jpg": (b"<!DOCTYPE html><html><body><img src=x></body></html>", "not an image: HTML"),
        "program.jpg": (b"\x7fELF\x02\x01\x01\x00" + bytes(256), "not an image: executable"),
        "bomb.png": (_encode(Image.new("1", (30000, 30000)), "PNG", optimize=True), "decompression bomb"),
        "absurd-header.png": (_png_claiming(1_000_000, 1_000_000), "decompression bomb"),
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect/></svg>',
                        "unsupported format: SVG"),
        "palette.png": (_encode(photo.convert("P"), "PNG"), "ok"),
        "transparent.png": (_encode(rgba, "PNG"), "ok"),
        "sixteen-bit.png": (_encode(Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257),
                                    "PNG"), "ok"),
        "one-bit.png": (_encode(photo.convert("1"), "PNG"), "ok"),
        "cmyk.jpg": (_encode(photo.convert("CMYK"), "JPEG"), "ok"),
        "exif-rotated.jpg": (_encode(photo, "JPEG", exif=exif.tobytes()), "ok"),
        "animated.gif": (gif.getvalue(), "ok"),
        "multi-page.tif": (tiff.getvalue(), "ok"),
        "photo.webp": (_encode(photo, "WEBP"), "ok"),
        "photo.bmp": (_encode(photo, "BMP"), "ok"),
        "ünï côde name.png": (_encode(digit[0], "PNG"), "ok"),
        "a/same name.png": (_encode(digit[1], "PNG"), "ok"),
        "b/same name.png": (_encode(digit[2], "PNG"), "ok"),
    })
    return files


ARCHIVE_ONLY = {
    "../escape.png": "unsafe path: escapes the archive",
    "/absolute.png": "unsafe path: absolute",
    "link.png": "symlink (not followed)",
    "nested.zip": "nested archive (not extracted)",
}
"""Hostile members that only an archive can carry, by the file name preprocess reports."""


def write(out: Path) -> dict[str, str]:
    """Write the corpus as a folder; returns file name -> expectation."""
    expected = {}
    for name, (data, expectation) in corpus().items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        expected[name] = expectation
    return expected


def write_zip(path: Path) -> dict[str, str]:
    """The corpus as a zip with hostile members added; returns file name -> expectation."""
    expected = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (data, expectation) in corpus().items():
            # Stored, not deflated: a deflated pixel bomb is refused by the archive's ratio cap
            # before preprocess ever sees it, and this corpus wants preprocess to see it.
            stored = zipfile.ZIP_STORED if expectation == "decompression bomb" else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=stored)
            expected[name] = expectation
        png = corpus()["a/seed_00.png"][0]
        archive.writestr("../escape.png", png)
        archive.writestr("/absolute.png", png)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("nested.zip", _encode(Image.new("L", (4, 4)), "PNG"))
    expected.update(ARCHIVE_ONLY)
    return expected


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"{len(write(args.out))} files in {args.out}; zip: {len(write_zip(args.out.with_suffix('.zip')))} members")
