"""The in-process runner: every stage, in order, in this process, over a local folder store.

It is the embedded twin of the gateway: the same stage functions, the same task wiring
(``pipeline.build_task``), the same output layout, with ``--out DIR`` as the job's prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .datasets import DatasetIndex, Limits, ingest
from .messages import StageResult
from .pipeline import StageError, build_task, job_summary, load_stage, stages_until
from .settings import Settings
from .storage import FileStore, Store, read_csv_bytes
from .topology import STAGES

LOCAL_JOB = "local"
REVIEW_ANSWERS = "review/answers.csv"

StageStarted = Callable[[str], None]
StageProgress = Callable[[str, float, str], None]
StageFinished = Callable[[str, StageResult, float], None]


def limits_from(settings: Settings) -> Limits:
    return Limits(max_total_bytes=settings.max_upload_bytes, max_member_bytes=settings.max_file_bytes,
                  max_ratio=settings.max_archive_ratio)


class LocalRun:
    """One embedded run whose outputs live in ``out``; hooks let a UI follow it."""

    def __init__(self, out: Path, settings: Settings, params: Mapping[str, Any] | None = None,
                 on_start: StageStarted | None = None, on_progress: StageProgress | None = None,
                 on_finish: StageFinished | None = None) -> None:
        self.store: Store = FileStore(out)
        self.settings = settings
        self.params = dict(params or {})
        self.on_start, self.on_progress, self.on_finish = on_start, on_progress, on_finish
        self.outputs: dict[str, dict[str, str]] = {}
        self.stages: dict[str, dict[str, Any]] = {}
        self.dataset_ref = ""

    def ingest(self, source: Path, labels_csv: Path | None = None) -> DatasetIndex:
        index = ingest(source, self.store, "dataset/", limits_from(self.settings), labels_csv)
        self.dataset_ref = index.ref
        return index

    def resume(self) -> None:
        """Load a finished run's outputs from its ``summary.json`` so later stages can be re-run."""
        summary = self.store.get_json("summary.json")
        self.params = {**summary["params"], **self.params}
        self.dataset_ref = summary["dataset"]
        for stage, record in summary["stages"].items():
            self.outputs[stage] = record.get("outputs", {})
            self.stages[stage] = record

    def run(self, stages: tuple[str, ...], extra_inputs: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Run ``stages`` in order; write and return the run's ``summary.json``."""
        error = None
        try:
            for stage in stages:
                self._run_stage(stage, extra_inputs or {})
        except StageError as exc:
            error = str(exc)
            raise
        finally:
            status = "failed" if error else "succeeded"
            summary = job_summary(LOCAL_JOB, status, {s: self.stages[s] for s in STAGES if s in self.stages},
                                  self.params, error)
            summary["dataset"] = self.dataset_ref
            self.store.put_json("summary.json", summary)
        return summary

    def _run_stage(self, stage: str, extra_inputs: Mapping[str, str]) -> None:
        self.store.delete_prefix(f"{stage}/")
        task = build_task(LOCAL_JOB, stage, "", self.outputs, self.params, dataset=self.dataset_ref)
        task.inputs.update(extra_inputs)
        if self.on_start:
            self.on_start(stage)
        started = time.perf_counter()
        try:
            result = load_stage(stage)(task, self.store, self.settings,
                                       progress=lambda f, m: self.on_progress and self.on_progress(stage, f, m))
        except StageError as exc:
            self.stages[stage] = {"status": "failed", "seconds": round(time.perf_counter() - started, 3),
                                  "error": str(exc)}
            raise
        seconds = time.perf_counter() - started
        self.outputs[stage] = result.outputs
        self.stages[stage] = {"status": "succeeded", "seconds": round(seconds, 3), "counts": result.counts,
                              "outputs": result.outputs}
        if self.on_finish:
            self.on_finish(stage, result, seconds)


def run_local(source: Path, out: Path, settings: Settings, until: str | None = None,
              params: Mapping[str, Any] | None = None, labels_csv: Path | None = None,
              **hooks: Any) -> dict[str, Any]:
    """Ingest ``source`` and run the pipeline up to ``until`` with outputs in ``out``."""
    run = LocalRun(out, settings, params, **hooks)
    run.ingest(source, labels_csv)
    return run.run(stages_until(until))


def apply_review(answers: Path, out: Path, settings: Settings, **hooks: Any) -> dict[str, Any]:
    """Merge review answers (``file_name,label``) into the run in ``out`` and re-run from label on."""
    run = LocalRun(out, settings, **hooks)
    run.resume()
    merged = {}
    if run.store.exists(REVIEW_ANSWERS):
        merged = {r["file_name"]: r["label"] for r in run.store.get_csv(REVIEW_ANSWERS)}
    new = read_csv_bytes(answers.read_bytes())
    if new and not {"file_name", "label"} <= set(new[0]):
        raise StageError(f"{answers} needs the columns file_name,label")
    merged.update({r["file_name"]: r["label"].strip() for r in new if r["label"].strip()})
    ref = run.store.put_csv(REVIEW_ANSWERS, ["file_name", "label"],
                            [{"file_name": k, "label": v} for k, v in sorted(merged.items())])
    done = tuple(s for s in STAGES if s in run.stages)
    return run.run(done[done.index("label"):] if "label" in done else ("label",), {"review.answers": ref})
