"""Grouped, stratified, deterministic splits with human labels in val and test first."""

from __future__ import annotations

from collections import Counter

from labelwright.core.messages import Task
from labelwright.core.settings import Settings
from labelwright.core.storage import FileStore
from labelwright.splitter.stage import run


def _inputs(store, n=600):
    labels, manifest = [], []
    for i in range(n):
        label = "abc"[i % 3]
        source = "human" if i % 10 == 0 else "model"
        labels.append({"file_name": f"f{i}", "label": label, "confidence": "0.99", "source": source,
                       "status": "needs_review" if i % 17 == 0 else "accepted"})
        manifest.append({"file_name": f"f{i}", "group_id": f"g{i // 4 if i < 200 else i}"})
    store.put_csv("label/labels.csv", ["file_name", "label", "confidence", "source", "status"], labels)
    store.put_csv("preprocess/manifest.csv", ["file_name", "group_id"], manifest)
    return {"label.labels": store.ref("label/labels.csv"), "preprocess.manifest": store.ref("preprocess/manifest.csv")}


def _split(tmp_path, seed=0):
    store = FileStore(tmp_path)
    task = Task(job_id="j", stage="split", prefix="", inputs=_inputs(store), params={"seed": seed})
    run(task, store, Settings())
    return store, {s: store.get_csv(f"split/{s}.csv") for s in ("train", "val", "test")}


def test_no_group_straddles_two_splits_and_ratios_hold(tmp_path):
    store, splits = _split(tmp_path)
    group = {f"f{i}": f"g{i // 4 if i < 200 else i}" for i in range(600)}
    seen = {}
    for name, rows in splits.items():
        for r in rows:
            assert seen.setdefault(group[r["file_name"]], name) == name
    summary = store.get_json("split/summary.json")
    assert summary["leakage"]["groups_straddling_splits"] == 0
    total = sum(summary["items"].values())
    assert abs(summary["items"]["test"] / total - 0.15) <= 0.01
    assert abs(summary["items"]["val"] / total - 0.15) <= 0.01
    for rows in splits.values():
        counts = Counter(r["label"] for r in rows)
        assert max(counts.values()) - min(counts.values()) <= max(3, 0.1 * len(rows))
    assert all(r["file_name"] not in {f"f{i}" for i in range(0, 600, 17)} for rows in splits.values() for r in rows)


def test_human_labels_go_to_test_and_val_first(tmp_path):
    _, splits = _split(tmp_path)
    human = {s: sum(r["source"] == "human" for r in rows) for s, rows in splits.items()}
    assert human["train"] == 0, "60 human labels fit in the test quota (~85 items)"
    assert human["test"] > human["val"]


def test_same_seed_same_split(tmp_path):
    assert _split(tmp_path / "a")[1] == _split(tmp_path / "b")[1]
    assert _split(tmp_path / "c", seed=1)[1] != _split(tmp_path / "d")[1]
