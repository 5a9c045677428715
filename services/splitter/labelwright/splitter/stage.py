"""The split stage: stratified by label, grouped by duplicate cluster, deterministic for a seed.

Only accepted labels are split (items waiting for review are not ground truth yet). Whole
duplicate clusters are dealt greedily, in the spirit of scikit-learn's ``StratifiedGroupKFold``:
clusters holding a human label go first and fill test, then val; every other cluster goes to the
split whose share of its class is furthest below the asked ratio. A cluster never straddles two
splits, and ``summary.json`` proves it.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict

from labelwright.core.messages import HUMAN_SOURCES, StageResult, Task
from labelwright.core.pipeline import Progress, StageError
from labelwright.core.settings import Settings
from labelwright.core.storage import Store, read_csv_bytes

SPLITS = ("train", "val", "test")
SPLIT_FIELDS = ["file_name", "label", "source"]


def assign_groups(groups: dict[str, list[dict[str, str]]], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """Map each group id to a split."""
    group_label = {g: Counter(r["label"] for r in rows).most_common(1)[0][0] for g, rows in groups.items()}
    class_total = Counter()
    for g, rows in groups.items():
        class_total[group_label[g]] += len(rows)
    target = {(c, s): class_total[c] * ratios[s] for c in class_total for s in SPLITS}
    count: Counter = Counter()

    rng = random.Random(seed)
    ids = sorted(groups)
    rng.shuffle(ids)
    human = [g for g in ids if any(r["source"] in HUMAN_SOURCES for r in groups[g])]
    human_set = set(human)
    model = [g for g in ids if g not in human_set]
    assignment = {}
    for g in human:
        c, size = group_label[g], len(groups[g])
        split = next((s for s in ("test", "val") if count[c, s] + size <= target[c, s] + 0.5), "train")
        assignment[g] = split
        count[c, split] += size
    for g in sorted(model, key=lambda g: -len(groups[g])):
        c, size = group_label[g], len(groups[g])
        split = max(SPLITS, key=lambda s: ((target[c, s] - count[c, s]) / max(target[c, s], 1e-9), s == "train"))
        assignment[g] = split
        count[c, split] += size
    return assignment


def run(task: Task, store: Store, settings: Settings, progress: Progress | None = None) -> StageResult:
    """Write split/train.csv, split/val.csv, split/test.csv and split/summary.json."""
    started = time.perf_counter()
    val_ratio = float(task.params.get("val_ratio", 0.15))
    test_ratio = float(task.params.get("test_ratio", 0.15))
    if not (0 < val_ratio < 1 and 0 < test_ratio < 1 and val_ratio + test_ratio < 1):
        raise StageError(f"val_ratio {val_ratio} and test_ratio {test_ratio} must be in (0, 1) and sum below 1")
    ratios = {"train": 1 - val_ratio - test_ratio, "val": val_ratio, "test": test_ratio}
    seed = int(task.params.get("seed", settings.seed))

    labels = read_csv_bytes(store.read_ref(task.inputs["label.labels"]))
    manifest = read_csv_bytes(store.read_ref(task.inputs["preprocess.manifest"]))
    group_of = {r["file_name"]: r["group_id"] for r in manifest}
    accepted = [r for r in labels if r["status"] == "accepted"]
    if not accepted:
        raise StageError("no accepted labels to split: answer the review queue or lower the target precision")
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in accepted:
        groups[group_of.get(row["file_name"], row["file_name"])].append(row)

    assignment = assign_groups(groups, ratios, seed)
    rows_of: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    split_of_file = {}
    for g, rows in groups.items():
        rows_of[assignment[g]].extend(rows)
        split_of_file.update({r["file_name"]: assignment[g] for r in rows})

    straddling = defaultdict(set)
    for name, split in split_of_file.items():
        straddling[group_of.get(name, name)].add(split)
    leaks = sum(1 for splits in straddling.values() if len(splits) > 1)

    base = f"{task.prefix}split/"
    outputs = {}
    for s in SPLITS:
        rows_of[s].sort(key=lambda r: r["file_name"])
        outputs[s] = store.put_csv(f"{base}{s}.csv", SPLIT_FIELDS, rows_of[s])
    summary = {
        "seed": seed,
        "ratios_asked": ratios,
        "ratios": {s: round(len(rows_of[s]) / len(accepted), 4) for s in SPLITS},
        "items": {s: len(rows_of[s]) for s in SPLITS},
        "classes": {s: dict(sorted(Counter(r["label"] for r in rows_of[s]).items())) for s in SPLITS},
        "sources": {s: dict(sorted(Counter(r["source"] for r in rows_of[s]).items())) for s in SPLITS},
        "excluded_needs_review": len(labels) - len(accepted),
        "groups": len(groups),
        "leakage": {"groups_straddling_splits": leaks},
        "seconds": round(time.perf_counter() - started, 3),
    }
    outputs["summary"] = store.put_json(f"{base}summary.json", summary)
    counts = {"items": len(accepted), **{s: len(rows_of[s]) for s in SPLITS}, "leaks": leaks}
    return StageResult(outputs=outputs, counts=counts)
