"""Near-duplicate benchmark: precision and recall of duplicate pairs on generated near duplicates
of real images, mixed with many distinct real images of the same kind.

    python benchmarks/bench_duplicates.py [--families 1000] [--distinct 9000] [--tune] [--scale 100000]

Families: a Fashion-MNIST item plus 1-3 copies, each re-encoded as JPEG (quality 90/70/50),
resized (x0.75, x1.5, x2), slightly cropped (up to 1, 2 or 3 of 28 pixels per side) or
brightness-shifted (+-20, +-40). Distinct: other Fashion-MNIST items (which hold look-alikes
and a few true duplicates of their own). Truth: every pair inside a family. Predicted: every
pair inside a cluster of ``preprocess/duplicates.csv`` written by the real preprocess stage.

Beside ours, in the same run: a plain pHash (imagehash) with one Hamming threshold. ``--tune``
sweeps our threshold on a separate sample (other Fashion-MNIST items, other random copies), the
way the default was chosen; ``--scale`` times the duplicate search on that many images.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import fashion_all  # noqa: E402
from labelwright.core.runner import LocalRun  # noqa: E402
from labelwright.core.settings import Settings  # noqa: E402
from labelwright.preprocess import dedup  # noqa: E402

KINDS = ["jpeg90", "jpeg70", "jpeg50", "resize0.75", "resize1.5", "resize2", "crop1", "crop2", "crop3",
         "bright-40", "bright-20", "bright+20", "bright+40"]


def copy_of(image: np.ndarray, kind: str, rng: np.random.Generator) -> Image.Image:
    original = Image.fromarray(image, mode="L")
    value = kind.lstrip("jpegrsizcobht")
    if kind.startswith("jpeg"):
        buffer = io.BytesIO()
        original.save(buffer, "JPEG", quality=int(value))
        copy = Image.open(io.BytesIO(buffer.getvalue()))
        copy.load()
        copy.info["encoded"] = buffer.getvalue()
        return copy
    if kind.startswith("resize"):
        side = round(image.shape[0] * float(value))
        return original.resize((side, side), Image.Resampling.BICUBIC)
    if kind.startswith("crop"):
        left, top, right, bottom = rng.integers(0, int(value) + 1, size=4)
        return original.crop((left, top, image.shape[1] - right, image.shape[0] - bottom))
    shifted = np.clip(image.astype(int) + int(value), 0, 255).astype(np.uint8)
    return Image.fromarray(shifted, mode="L")


def make_set(families: int, distinct: int, seed: int) -> tuple[list[tuple[str, Image.Image]], dict[str, int]]:
    """Files (name, image) and each file's family (distinct items are families of one)."""
    images = fashion_all()
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(images))[: families + distinct]
    files, family = [], {}
    for f, index in enumerate(pick):
        name = f"i{f:05d}.png"
        files.append((name, Image.fromarray(images[index], mode="L")))
        family[name] = f
        if f < families:
            for c, kind in enumerate(rng.choice(KINDS, size=int(rng.integers(1, 4)), replace=False)):
                copy = copy_of(images[index], str(kind), rng)
                name = f"i{f:05d}_{c}_{kind}.{'jpg' if kind.startswith('jpeg') else 'png'}"
                files.append((name, copy))
                family[name] = f
    return files, family


def pairs_of(n: int) -> int:
    return n * (n - 1) // 2


def scores(family: dict[str, int], names: list[str], edges: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    """For the linked pairs themselves and for every pair inside the clusters they make (union-find,
    as ``duplicates.csv`` reports them): (true pairs, predicted pairs, predicted pairs that are true)."""
    hits = sum(family[names[a]] == family[names[b]] for a, b in edges)
    groups = dedup.UnionFind(len(names))
    for a, b in edges:
        groups.union(int(a), int(b))
    members: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        members.setdefault(groups.find(i), []).append(name)
    in_clusters = cluster_scores([m for m in members.values() if len(m) > 1], family)
    return (in_clusters[0], len(edges), hits), in_clusters


def cluster_scores(clusters: list[list[str]], family: dict[str, int]) -> tuple[int, int, int]:
    true = sum(pairs_of(n) for n in Counter(family.values()).values())
    predicted = sum(pairs_of(len(c)) for c in clusters)
    hits = sum(pairs_of(n) for c in clusters for n in Counter(family[name] for name in c).values())
    return true, predicted, hits


def cells(true: int, predicted: int, hits: int) -> str:
    precision, recall = hits / max(predicted, 1), hits / max(true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return f"{predicted} | {precision:.3f} | {recall:.3f} | {f1:.3f}"


def write(files: list[tuple[str, Image.Image]], folder: Path) -> None:
    """PNG as is; a JPEG copy as the very bytes it was encoded to."""
    folder.mkdir(parents=True)
    for name, image in files:
        if name.endswith(".jpg"):
            (folder / name).write_bytes(image.info["encoded"])
        else:
            image.save(folder / name)


def stage(folder: Path, out: Path, threshold: float) -> tuple[list[list[str]], float]:
    """Clusters from the real preprocess stage's ``duplicates.csv``, and the stage's wall time."""
    run = LocalRun(out, Settings(), {"image_size": 32, "until": "preprocess", "near_duplicate_threshold": threshold})
    run.ingest(folder)
    started = time.perf_counter()
    run.run(("preprocess",))
    seconds = time.perf_counter() - started
    groups: dict[str, list[str]] = {}
    for item in run.store.get_csv("preprocess/duplicates.csv"):
        groups.setdefault(item["group_id"], []).append(item["file_name"])
    return list(groups.values()), seconds


def phash_edges(files: list[tuple[str, Image.Image]], distance: int) -> np.ndarray:
    """Every pair whose imagehash.phash (of the normalised image) differs in <= ``distance`` bits."""
    import imagehash

    hashes = np.array([int(str(imagehash.phash(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR))), 16)
                       for _, img in files], dtype=np.uint64)
    edges = []
    for i in range(len(files) - 1):
        xor = hashes[i + 1:] ^ hashes[i]
        bits = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        edges += [(i, i + 1 + int(j)) for j in np.nonzero(bits <= distance)[0]]
    return np.array(edges, dtype=np.int64).reshape(-1, 2)


def frames_of(files: list[tuple[str, Image.Image]]) -> np.ndarray:
    """The grey frames the stage compares (normalised to 32 px first, as with image_size 32)."""
    return dedup.grey_frames([np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR))
                              for _, img in files])


def natives_of(files: list[tuple[str, Image.Image]]) -> tuple[np.ndarray, np.ndarray]:
    """The small images at their own size, as the stage keeps them (``dedup.native_canvas``)."""
    return dedup.native_canvas([dedup.native_grey(img.convert("L")) for _, img in files])


TABLE = ("| method | linked pairs | precision | recall | F1 | pairs in clusters | precision | recall | F1 | s |\n"
         "|---|---|---|---|---|---|---|---|---|---|")


def sweep(files, family, thresholds, native_thresholds, label: str) -> None:
    """Our thresholds on one set, scored as ``dedup.near_pairs`` does: a candidate pair of the
    resized frames is accepted by either comparison; a candidate by the central window at the
    images' own size (small images) only by the comparison at their own size."""
    names = [name for name, _ in files]
    started = time.perf_counter()
    frames = frames_of(files)
    pairs = dedup.candidate_pairs(dedup.thumbnails(frames), (dedup.WHOLE_NEIGHBOURS, dedup.NEIGHBOURS))
    found = dedup.Aligner(frames).score(pairs)
    matcher = dedup.NativeMatcher(*natives_of(files))
    more = matcher.candidates()
    native, more_native = matcher.score(pairs), matcher.score(more)
    seconds = time.perf_counter() - started
    print(f"\n{label}: {len(files)} files, {len(pairs)} candidate pairs in the resized frames and {len(more)} by "
          f"the central window, {sum(family[names[a]] == family[names[b]] for a, b in pairs)} and "
          f"{sum(family[names[a]] == family[names[b]] for a, b in more)} of them true\n\n{TABLE}")
    for threshold in thresholds:
        for native_threshold in native_thresholds:
            accepted = np.unique(np.concatenate([pairs[(found >= threshold) | (native >= native_threshold)],
                                                 more[more_native >= native_threshold]]), axis=0)
            edge, clusters = scores(family, names, accepted)
            print(f"| labelwright, threshold {threshold:.3f}, own size {native_threshold:.2f} | {cells(*edge)} | "
                  f"{cells(*clusters)} | {seconds:.1f} |")
        edge, clusters = scores(family, names, pairs[found >= threshold])
        print(f"| labelwright, threshold {threshold:.3f}, resized frames only | {cells(*edge)} | "
              f"{cells(*clusters)} | |")
    for distance in (4, 8, 12):
        started = time.perf_counter()
        edges = phash_edges(files, distance)
        edge, clusters = scores(family, names, edges)
        print(f"| plain pHash, distance <= {distance} | {cells(*edge)} | {cells(*clusters)} | "
              f"{time.perf_counter() - started:.1f} |")


def scale(n: int) -> None:
    images = fashion_all()
    rng = np.random.default_rng(5)
    files = [("", Image.fromarray(images[i % len(images)][:, :: 1 - 2 * (i // len(images) % 2)]))
             for i in rng.permutation(n)]
    frames, natives = frames_of(files), natives_of(files)
    for label, own_size in (("resized frames only", None), ("with the comparison at their own size", natives)):
        started = time.perf_counter()
        dedup.cluster([str(i) for i in range(n)], frames, natives=own_size)
        print(f"\nduplicate search over {n} images (exact + near), {label}: {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=9000)
    parser.add_argument("--threshold", type=float, default=dedup.DEFAULT_THRESHOLD)
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--scale", type=int, default=0)
    args = parser.parse_args()
    if args.tune:
        files, family = make_set(args.families, args.distinct, seed=101)
        sweep(files, family, (0.978, 0.98, 0.982, 0.984, 0.986), (0.94, 0.95, 0.96, 0.97, 0.98), "tuning set")
    files, family = make_set(args.families, args.distinct, seed=7)
    sweep(files, family, (args.threshold,), (dedup.NATIVE_THRESHOLD,), "benchmark set")
    with tempfile.TemporaryDirectory() as tmp:
        write(files, Path(tmp) / "in")
        clusters, seconds = stage(Path(tmp) / "in", Path(tmp) / "out", args.threshold)
    print(f"| preprocess stage end to end (duplicates.csv), threshold {args.threshold:.3f} | | | | | "
          f"{cells(*cluster_scores(clusters, family))} | {seconds:.1f} |")
    if args.scale:
        scale(args.scale)


if __name__ == "__main__":
    main()
