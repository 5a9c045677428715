"""Decode one untrusted file into a normalised Pillow image, or say precisely why not."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class Rejected(Exception):
    """The file is quarantined; ``str(exc)`` is the reason written to ``rejected.csv``."""


@dataclass(frozen=True)
class Decoded:
    image: Image.Image
    """Normalised: orientation fixed, mode ``L`` or ``RGB``, canonical size."""
    source_format: str
    source_mode: str
    width: int
    """Width as displayed (after the EXIF orientation), before resizing; likewise height."""
    height: int
    pixel_hash: str
    """Hash of the decoded full-size pixels: equal for the same picture in any container."""
    original: Image.Image | None = None
    """The image before resizing (orientation fixed, mode ``L`` or ``RGB``)."""


def pixel_array(image: Image.Image) -> np.ndarray:
    """An ``L`` or ``RGB`` image as ``(H, W, channels)`` uint8 (from its bytes: a third of the time
    ``np.asarray`` takes on a small image)."""
    return np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width, len(image.getbands()))


def _sniff(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith(b"<?xml") and b"<svg" in data[:4096].lower() or head.startswith(b"<svg"):
        return "unsupported format: SVG"
    if head.startswith((b"<!doctype html", b"<html")):
        return "not an image: HTML"
    if data[:4] == b"\x7fELF" or data[:2] == b"MZ":
        return "not an image: executable"
    if data[:4] == b"%PDF":
        return "unsupported format: PDF"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "not an image: unknown binary data"
    return "not an image: text"


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8-bit by the value range the mode can hold."""
    array = np.asarray(image)
    if image.mode == "F":
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = (array - lo) / (hi - lo or 1.0) * 255.0
    else:
        scaled = array.astype(np.float64) / (65535.0 if array.max() > 255 else 255.0) * 255.0
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def _flatten(image: Image.Image) -> Image.Image:
    """Any mode to ``L`` or ``RGB``; transparency is composited on white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(background, rgba)
        return flat.convert("L" if image.mode in ("LA", "La") else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("RGB")


def decode(data: bytes, size: int, max_pixels: int) -> Decoded:
    """Decode, orient, flatten and resize one file; raise ``Rejected`` with a reason otherwise."""
    if not data:
        raise Rejected("empty file")
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise Rejected(_sniff(data)) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Rejected(f"decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise Rejected(f"corrupt header: {exc}") from None
        fmt = image.format or "unknown"
        if fmt not in SUPPORTED_FORMATS:
            raise Rejected(f"unsupported format: {fmt}")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise Rejected("corrupt header: zero-sized image")
        if width * height > max_pixels:
            raise Rejected(f"decompression bomb: {width}x{height} exceeds {max_pixels} pixels")
        source_mode = image.mode
        try:
            orientation = image.getexif().get(0x0112)
            displayed = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            if fmt == "JPEG" and min(width, height) > 4 * size:
                image.draft("RGB" if image.mode not in ("L", "1") else "L", (2 * size, 2 * size))
            image.load()
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                image = ImageOps.exif_transpose(image)
            image = _flatten(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Rejected(f"decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise Rejected(f"truncated or corrupt: {exc}") from None
        except MemoryError:
            raise Rejected("decompression bomb: decoding ran out of memory") from None
    digest = hashlib.blake2b(image.mode.encode() + repr(image.size).encode() + image.tobytes(), digest_size=16)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return Decoded(resized, fmt, source_mode, *displayed, digest.hexdigest(), image)
