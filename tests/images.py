"""Small real test images (scikit-learn's sample photos and digits), in odd and hostile forms."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_image


def photo(size: int = 96) -> Image.Image:
    """A real photo (scikit-learn's china.jpg), scaled down."""
    return Image.fromarray(load_sample_image("china.jpg")).resize((size, int(size * 0.7)))


def digit(i: int = 0) -> Image.Image:
    return Image.fromarray((load_digits().images[i] / 16 * 255).astype(np.uint8), mode="L")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A landscape photo stored with EXIF orientation 6 (display rotated 90° clockwise)."""
    image = photo()
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif.tobytes())


def png_bomb(side: int = 30000) -> bytes:
    """A side×side 1-bit PNG: a few kilobytes that decode to 900 megapixels."""
    return encode(Image.new("1", (side, side)), "PNG", optimize=True)
