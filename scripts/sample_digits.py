"""Write scikit-learn's digits as PNG files in the input layout: N seed labels per class in class
folders, every other image unlabelled in the root. Real data, bundled with scikit-learn."""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write(out: Path, seeds_per_class: int = 10, limit: int | None = None, seed: int = 0) -> dict[str, int]:
    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))[:limit]
    taken: dict[int, int] = {}
    for i in order:
        label = int(digits.target[i])
        if taken.get(label, 0) < seeds_per_class:
            taken[label] = taken.get(label, 0) + 1
            folder = out / str(label)
        else:
            folder = out
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], mode="L").save(folder / f"digit_{i:04d}.png")
    return {"images": len(order), "seeds": sum(taken.values())}


@cache
def _targets() -> np.ndarray:
    return load_digits().target


def true_label(file_name: str) -> int:
    """The true digit of an image ``write`` wrote (its file name holds its index in the set)."""
    return int(_targets()[int(Path(file_name).stem.rsplit("_", 1)[1])])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds-per-class", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    print(write(args.out, args.seeds_per_class, args.limit))
