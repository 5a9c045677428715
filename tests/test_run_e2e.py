"""`labelwright run` end to end on real images, as a user runs it, plus `labelwright review apply`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import FAST_PARAMS

pytestmark = pytest.mark.slow

CONTRACT_COLUMNS = {
    "labels.csv": ["file_name", "label", "confidence", "source", "status"],
    "preprocess/rejected.csv": ["file_name", "reason"],
    "preprocess/duplicates.csv": ["file_name", "group_id", "kind"],
    "label/review.csv": ["file_name", "suggested_label", "confidence", "priority"],
    "label/label_issues.csv": ["file_name", "given_label", "suggested_label", "score"],
    "split/train.csv": ["file_name", "label", "source"],
    "split/val.csv": ["file_name", "label", "source"],
    "split/test.csv": ["file_name", "label", "source"],
}
OTHER_FILES = ["preprocess/summary.json", "label/summary.json", "split/summary.json", "train/model.keras",
               "train/history.json", "evaluate/evaluation.json", "evaluate/confusion_matrix.png",
               "evaluate/report.html", "summary.json"]


def labelwright(*args: str) -> subprocess.CompletedProcess:
    params = [f"--param={k}={v}" for k, v in FAST_PARAMS.items() if k not in ("image_size", "epochs")] \
        if args[0] == "run" else []
    return subprocess.run([sys.executable, "-m", "labelwright.core.cli", *args, *params], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})


def _header(path):
    with path.open(newline="") as f:
        return next(csv.reader(f))


def test_run_writes_every_output_and_quarantines_a_corrupt_image(tmp_path, digits_dir):
    source = tmp_path / "in"
    shutil.copytree(digits_dir, source)
    some_png = next((source / "1").iterdir())
    (source / "truncated.png").write_bytes(some_png.read_bytes()[:50])
    out = tmp_path / "out"
    done = labelwright("run", str(source), "--out", str(out), "--image-size", "16", "--epochs", "4")
    assert done.returncode == 0, done.stderr
    assert "test accuracy on human-labelled test items" in done.stderr and "report.html" in done.stderr
    for name, columns in CONTRACT_COLUMNS.items():
        assert _header(out / name) == columns, name
    for name in OTHER_FILES:
        assert (out / name).stat().st_size > 0, name
    rejected = list(csv.DictReader((out / "preprocess/rejected.csv").open()))
    assert [r["file_name"] for r in rejected] == ["truncated.png"] and "truncated" in rejected[0]["reason"]
    labels = list(csv.DictReader((out / "labels.csv").open()))
    assert len(labels) == 300 and "truncated.png" not in {r["file_name"] for r in labels}
    label = json.loads((out / "label/summary.json").read_text())
    queue = list(csv.DictReader((out / "label/review.csv").open()))
    assert len(queue) == label["needs_review"] + label["audit"]["accepted_in_queue"]
    said, audited = " ".join(done.stderr.split()), label["audit"]["accepted_in_queue"]
    assert f"{label['needs_review']} queued for review" in said
    assert (f"(and {audited} auto-accepted images of its random audit sample)" in said) == (audited > 0)
    evaluation = json.loads((out / "evaluate/evaluation.json").read_text())
    assert evaluation["human"]["items"] > 0 and len(evaluation["all"]["confusion_matrix"]) == 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded" and list(summary["stages"]) == [
        "preprocess", "label", "split", "train", "evaluate"]
    assert (out / "evaluate/confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    queued = list(csv.DictReader((out / "label/review.csv").open()))[:5]
    answers = tmp_path / "answers.csv"
    answers.write_text("file_name,label\n" + "".join(f"{r['file_name']},7\n" for r in queued))
    done = labelwright("review", "apply", str(answers), "--out", str(out))
    assert done.returncode == 0, done.stderr
    relabelled = {r["file_name"]: r for r in csv.DictReader((out / "labels.csv").open())}
    for r in queued:
        assert relabelled[r["file_name"]]["label"] == "7" and relabelled[r["file_name"]]["source"] == "review"
    assert json.loads((out / "label/summary.json").read_text())["review_labels"] == 5


def test_until_stops_early_and_bad_input_is_a_clear_error(tmp_path, digits_dir):
    out = tmp_path / "out"
    done = labelwright("run", str(digits_dir), "--out", str(out), "--until", "preprocess")
    assert done.returncode == 0, done.stderr
    assert (out / "preprocess/manifest.csv").exists() and not (out / "labels.csv").exists()
    missing = labelwright("run", str(tmp_path / "nope"), "--out", str(out))
    assert missing.returncode == 1 and "input not found" in missing.stderr
