"""Real data for the benchmarks: scikit-learn's digits and Fashion-MNIST (Debian package
dataset-fashion-mnist), written out in labelwright's input layout with known true labels."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0 * 255.0).round().astype(np.uint8), data.target.astype(int)


def fashion_all() -> np.ndarray:
    """The 60,000 images of the Fashion-MNIST train split."""
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"Fashion-MNIST not found in {FASHION}: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)


def fashion(limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random sample of the Fashion-MNIST train split."""
    images = fashion_all()
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(int)
    pick = np.random.default_rng(seed).permutation(len(images))[:limit]
    return images[pick], labels[pick]


def choose_seeds(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.nonzero(labels == c)[0])[:per_class]
                                   for c in np.unique(labels)]))


def flip(labels: np.ndarray, seeds: np.ndarray, fraction: float, seed: int = 0) -> dict[int, int]:
    """Give a wrong label to ``fraction`` of the seeds: index -> wrong label."""
    rng = np.random.default_rng(seed + 1)
    chosen = rng.choice(seeds, size=int(round(fraction * len(seeds))), replace=False)
    n_classes = labels.max() + 1
    return {int(i): int((labels[i] + rng.integers(1, n_classes)) % n_classes) for i in chosen}


def write_image_folder(out: Path, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray,
                       flipped: dict[int, int] | None = None) -> dict[str, int]:
    """Seeds in class folders (with flipped labels where given), the rest in the root; returns
    file name -> true label."""
    flipped = flipped or {}
    seed_set = set(int(i) for i in seeds)
    truth = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = f"c{flipped.get(i, label)}/" if i in seed_set else ""
        name = f"{folder}img_{i:05d}.png"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(out / name)
        truth[name] = int(label)
    return truth
