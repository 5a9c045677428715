"""PNG encoding of small 8-bit images, without Pillow's per-call overhead.

Pillow spends about 100 us in Python around each ``save`` (plugin lookup, encoder setup, tiles,
chunks), several times what zlib takes to compress a 32x32 image; for the normalised images of a
20,000-item dataset that was a fifth of the preprocess stage. This writes the same PNG (8-bit
greyscale or RGB, no interlace, filter type 0 on every row) with ``zlib`` and ``struct``, per
the PNG specification (ISO/IEC 15948, sections 5 and 11).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (greyscale, truecolour)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """A PNG of ``pixels``: uint8, ``(H, W)`` or ``(H, W, 1)`` grey, or ``(H, W, 3)`` RGB."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 pixels, not {pixels.dtype}")
    array = pixels[:, :, None] if pixels.ndim == 2 else pixels
    height, width, channels = array.shape
    if channels not in COLOUR_TYPES:
        raise ValueError(f"encode_png takes 1 or 3 channels, not {channels}")
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # a leading 0 per row: no filter
    rows[:, 1:] = array.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPES[channels], 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))
