"""Normalised images as one array: how preprocess hands pixels to the stages that learn.

``pixels.npz`` holds ``file_names`` (N,) and ``pixels`` (N, H, W, C) uint8, C = 1 when every image
is grey (a third of the bytes to write and read) and 3 otherwise. ``load_pixels`` always returns
(N, H, W, 3). Learning stages read it in one request instead of fetching N objects, and drop to
one channel when every image is grey.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from .storage import Store

PIXELS_NAME = "pixels.npz"


def put_arrays(store: Store, key: str, **arrays: np.ndarray) -> str:
    """Write named arrays as one ``.npz`` object and return its reference."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return store.put(key, buffer.getvalue())


def read_arrays(store: Store, ref: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` object, by name."""
    with np.load(io.BytesIO(store.read_ref(ref))) as data:
        return {name: data[name] for name in data.files}


def stack_pixels(pixels: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Images of one size, each (H, W), (H, W, 1) or (H, W, 3), as one (N, H, W, C) array: one
    channel when all of them have one, else grey ones repeated into RGB. An (N, H, W, C) array is
    already that, and is returned as it is."""
    if isinstance(pixels, np.ndarray) and pixels.ndim == 4:
        return pixels
    if not len(pixels):
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    arrays = [p[:, :, None] if p.ndim == 2 else p for p in pixels]
    if any(a.shape[2] != 1 for a in arrays):
        arrays = [np.broadcast_to(a, (*a.shape[:2], 3)) for a in arrays]
    return np.stack(arrays)


def join_pixels(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Stacked images (each part (N, H, W, C), as ``stack_pixels`` makes them) as one array: one
    channel when every part has one, else grey parts repeated into RGB. Empty parts (a shard with
    no usable image) have no image size, and are left out."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return stack_pixels([])
    if any(p.shape[3] != 1 for p in parts):
        parts = [np.broadcast_to(p, (*p.shape[:3], 3)) for p in parts]
    return np.concatenate(parts)


def save_pixels(store: Store, key: str, file_names: Sequence[str], pixels: Sequence[np.ndarray]) -> str:
    """Write images of one size as ``pixels.npz`` (see ``stack_pixels``) and return its reference."""
    return put_arrays(store, key, file_names=np.asarray(list(file_names), dtype=str), pixels=stack_pixels(pixels))


def load_pixels(store: Store, ref: str) -> tuple[list[str], np.ndarray]:
    """Read ``pixels.npz``: the file names and their (N, H, W, 3) uint8 pixels (a read-only view
    that repeats the one channel when the images were stored grey)."""
    data = read_arrays(store, ref)
    pixels = data["pixels"]
    if pixels.shape[-1] == 1:
        pixels = np.broadcast_to(pixels, (*pixels.shape[:-1], 3))
    return [str(n) for n in data["file_names"]], pixels


def model_input(pixels: np.ndarray, channels: int | None = None) -> np.ndarray:
    """Float32 in [0, 1]; one channel when ``channels == 1`` or every image is grey."""
    if channels is None:
        channels = 1 if is_grey(pixels) else 3
    array = pixels[..., :1] if channels == 1 else pixels
    return array.astype(np.float32) / 255.0


def is_grey(pixels: np.ndarray) -> bool:
    if pixels.strides[-1] == 0:  # one channel seen as three (``load_pixels``)
        return True
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]))


def select(file_names: Sequence[str], pixels: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    """The rows of ``pixels`` for ``wanted`` file names, in that order."""
    position = {name: i for i, name in enumerate(file_names)}
    return pixels[[position[name] for name in wanted]]
