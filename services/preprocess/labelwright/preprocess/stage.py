"""The preprocess stage: every input file is either normalised or quarantined with a reason.

A task with a ``shard`` processes every ``count``-th item of the sorted index and writes a shard
part; a task with ``merge_shards`` merges the parts; a plain task does both in one go. Duplicate
clusters are always computed at the merge, so they span shards.

Outputs (under ``<prefix>preprocess/``): ``images/<file_name>.png``, ``manifest.csv``,
``pixels.npz`` (every normalised image in one array, for the stages that learn),
``rejected.csv``, ``duplicates.csv``, ``summary.json``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from labelwright.core.images import PIXELS_NAME, join_pixels, put_arrays, read_arrays, save_pixels, stack_pixels
from labelwright.core.messages import StageResult, Task
from labelwright.core.pipeline import Progress, StageError
from labelwright.core.settings import Settings
from labelwright.core.storage import BatchWriter, Store, StoreError, read_csv_bytes

from .decode import Rejected, decode, pixel_array
from .dedup import (
    DEFAULT_THRESHOLD,
    boxed_thumbnails,
    cluster,
    grey_frames,
    join_canvases,
    native_canvas,
    native_grey,
    phashes,
)
from .png import encode_png

RECORD_FIELDS = ["file_name", "label", "image", "width", "height", "format", "mode", "pixel_hash", "phash"]
MANIFEST_FIELDS = [*RECORD_FIELDS, "group_id", "duplicate"]
REJECTED_FIELDS = ["file_name", "reason"]
DUPLICATE_FIELDS = ["file_name", "group_id", "kind"]
WRITE_BATCH = 256
"""Normalised images written per ``Store.put_many``."""


@dataclass
class Part:
    records: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    pixels: list[np.ndarray] | np.ndarray = field(default_factory=list)
    """One array per image while decoding; one (N, H, W, C) array from ``add_features`` on."""
    frames: np.ndarray | None = None
    """Grey 32x32 frames and boxed thumbnails for the duplicate search, made where the images
    are (in the shards, in parallel), so the merge only searches."""
    boxed: np.ndarray | None = None
    natives: list[np.ndarray | None] = field(default_factory=list)
    """Small images in grey at their own size (None for larger ones), to compare crops pixel for
    pixel; at ``add_features`` they become ``canvas`` and ``shapes`` (see ``dedup.native_canvas``)."""
    canvas: np.ndarray | None = None
    shapes: np.ndarray | None = None

    def add_features(self) -> None:
        self.pixels = stack_pixels(self.pixels)
        self.frames = grey_frames(self.pixels)
        self.boxed = boxed_thumbnails(self.frames)
        self.canvas, self.shapes = native_canvas(self.natives)
        self.natives = []
        for record, phash in zip(self.records, phashes(self.frames), strict=True):
            record["phash"] = phash


def _reason_category(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def _process(task: Task, store: Store, settings: Settings, progress: Progress | None) -> Part:
    index = read_csv_bytes(store.read_ref(task.inputs["dataset.index"]))
    index.sort(key=lambda r: r["file_name"])
    if task.shard is not None:
        index = index[task.shard.index :: task.shard.count]
    part = Part()
    # on S3, reads run ahead and writes go out in batches in the background (concurrent
    # requests): waiting for a request per file was a third of the time small images took. A file
    # store reads and writes in this thread (see ``FileStore.write_behind``).
    contents = store.read_many(row["ref"] for row in index if not row.get("reason"))
    with BatchWriter(store, WRITE_BATCH) as writer:
        _decode_all(task, settings, index, contents, writer, part, progress)
    part.add_features()
    return part


def _decode_all(task: Task, settings: Settings, index: list[dict[str, str]], contents: Iterator[bytes | StoreError],
                writer: BatchWriter, part: Part, progress: Progress | None) -> None:
    """Decode each file of ``index`` (its bytes in ``contents``, in order) into ``part``, and hand
    its normalised PNG to ``writer``."""
    size = int(task.params.get("image_size", settings.image_size))
    images_prefix = f"{task.prefix}preprocess/images/"
    for n, row in enumerate(index, 1):
        name = row["file_name"]
        try:
            if row.get("reason"):
                raise Rejected(row["reason"])
            data = next(contents)
            if isinstance(data, StoreError):
                raise data
            if len(data) > settings.max_file_bytes:
                raise Rejected(f"file too large ({len(data)} bytes; limit {settings.max_file_bytes})")
            decoded = decode(data, size, settings.max_image_pixels)
        except Rejected as exc:
            part.rejected.append({"file_name": name, "reason": str(exc)})
            continue
        except StoreError as exc:
            part.rejected.append({"file_name": name, "reason": f"unreadable: {exc}"})
            continue
        array = pixel_array(decoded.image)
        image_key = f"{images_prefix}{name}.png"
        writer.put(image_key, encode_png(array), "image/png")
        part.pixels.append(array)
        part.natives.append(native_grey(decoded.original))
        part.records.append({
            "file_name": name,
            "label": row.get("label", ""),
            "image": image_key,
            "width": str(decoded.width),
            "height": str(decoded.height),
            "format": decoded.source_format,
            "mode": decoded.source_mode,
            "pixel_hash": decoded.pixel_hash,
        })
        if progress and n % 200 == 0:
            progress(n / len(index), f"{n}/{len(index)} files")


def _write_part(task: Task, store: Store, part: Part) -> StageResult:
    base = f"{task.prefix}preprocess/shards/{task.shard.index}/"
    outputs = {
        "records": store.put_csv(f"{base}records.csv", RECORD_FIELDS, part.records),
        "rejected": store.put_csv(f"{base}rejected.csv", REJECTED_FIELDS, part.rejected),
        "pixels": save_pixels(store, f"{base}{PIXELS_NAME}", [r["file_name"] for r in part.records], part.pixels),
        "features": put_arrays(store, f"{base}features.npz", frames=part.frames, boxed=part.boxed,
                               canvas=part.canvas, shapes=part.shapes),
    }
    counts = {"items": len(part.records) + len(part.rejected), "accepted": len(part.records),
              "rejected": len(part.rejected)}
    return StageResult(outputs=outputs, counts=counts)


def _read_parts(task: Task, store: Store) -> Part:
    merged, pixels, frames, boxed, natives = Part(), [], [], [], []
    for i in range(int(task.params["merge_shards"])):
        merged.records += store.get_csv(store.key(task.inputs[f"shards.{i}.records"]))
        merged.rejected += store.get_csv(store.key(task.inputs[f"shards.{i}.rejected"]))
        pixels.append(read_arrays(store, task.inputs[f"shards.{i}.pixels"])["pixels"])  # as stored: 1 or 3 channels
        features = read_arrays(store, task.inputs[f"shards.{i}.features"])
        frames.append(features["frames"])
        boxed.append(features["boxed"])
        natives.append((features["canvas"], features["shapes"]))
    merged.pixels, merged.frames, merged.boxed = join_pixels(pixels), np.concatenate(frames), np.concatenate(boxed)
    merged.canvas, merged.shapes = join_canvases(natives)
    return merged


def _merge(task: Task, store: Store, settings: Settings, part: Part, started: float) -> StageResult:
    order = sorted(range(len(part.records)), key=lambda i: part.records[i]["file_name"])
    records = [part.records[i] for i in order]
    pixels = part.pixels[order]
    frames, boxed = part.frames[order], part.boxed[order]
    natives = (part.canvas[order], part.shapes[order])
    rejected = sorted(part.rejected, key=lambda r: r["file_name"])
    if not records:
        raise StageError(f"no usable image among {len(rejected)} files (see preprocess/rejected.csv)")

    threshold = task.params.get("near_duplicate_threshold", DEFAULT_THRESHOLD)
    searching = time.perf_counter()
    clusters = cluster([r["pixel_hash"] for r in records], frames, threshold if threshold <= 1 else None, boxed,
                       natives)
    search_seconds = time.perf_counter() - searching
    duplicates, labels_in_group = [], defaultdict(set)
    for record, (group, kind) in zip(records, clusters, strict=True):
        record["group_id"] = f"g{group:06d}"
        record["duplicate"] = kind
        if kind:
            duplicates.append({"file_name": record["file_name"], "group_id": record["group_id"], "kind": kind})
            if record["label"]:
                labels_in_group[record["group_id"]].add(record["label"])
    conflicts = {g: sorted(labels) for g, labels in labels_in_group.items() if len(labels) > 1}

    base = f"{task.prefix}preprocess/"
    reasons = Counter(_reason_category(r["reason"]) for r in rejected)
    summary = {
        "files": len(records) + len(rejected),
        "accepted": len(records),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "seed_labels": sum(1 for r in records if r["label"]),
        "classes": dict(sorted(Counter(r["label"] for r in records if r["label"]).items())),
        "duplicate_groups": len({d["group_id"] for d in duplicates}),
        "duplicate_files": len(duplicates),
        "exact_duplicate_files": sum(1 for d in duplicates if d["kind"] == "exact"),
        "near_duplicate_files": sum(1 for d in duplicates if d["kind"] == "near"),
        "near_duplicate_threshold": threshold,
        "seed_label_conflicts": [{"group_id": g, "labels": labels} for g, labels in sorted(conflicts.items())],
        "image_size": int(task.params.get("image_size", settings.image_size)),
        "shards": int(task.params.get("merge_shards", 1)),
        "seconds": round(time.perf_counter() - started, 3),
        "duplicate_search_seconds": round(search_seconds, 3),
    }
    outputs = {
        "manifest": store.put_csv(f"{base}manifest.csv", MANIFEST_FIELDS, records),
        "pixels": save_pixels(store, f"{base}{PIXELS_NAME}", [r["file_name"] for r in records], pixels),
        "rejected": store.put_csv(f"{base}rejected.csv", REJECTED_FIELDS, rejected),
        "duplicates": store.put_csv(f"{base}duplicates.csv", DUPLICATE_FIELDS, duplicates),
        "summary": store.put_json(f"{base}summary.json", summary),
    }
    counts = {"items": summary["files"], "accepted": len(records), "rejected": len(rejected),
              "duplicates": len(duplicates), **{f"rejected.{k}": v for k, v in reasons.items()}}
    return StageResult(outputs=outputs, counts=counts)


def run(task: Task, store: Store, settings: Settings, progress: Progress | None = None) -> StageResult:
    """Preprocess a dataset (or one shard of it, or merge the shards)."""
    started = time.perf_counter()
    if task.params.get("merge_shards"):
        return _merge(task, store, settings, _read_parts(task, store), started)
    part = _process(task, store, settings, progress)
    if task.shard is not None:
        return _write_part(task, store, part)
    return _merge(task, store, settings, part, started)
