"""Messages exchanged between the gateway and the workers.

Every message is a pydantic model carrying ``schema_version``; images never travel in a
message, only artifact references (``s3://bucket/key`` or ``file:///path``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .settings import Effort, Precision

SCHEMA_VERSION = 1

Acceptance = Literal["overall", "per_class"]
"""The label stage's target holds for all auto-accepted labels together, or for each class."""

ArtifactRef = str
"""A reference to one object: ``s3://bucket/key`` or ``file:///absolute/path``."""


JOB_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
"""Every status a job can have: the words ``GET /v1/jobs/{id}`` and ``labelwright status`` print."""
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses a job never leaves."""
HUMAN_SOURCES: frozenset[str] = frozenset({"human", "review"})
"""Values of ``labels.csv``'s ``source`` column that mean a person gave the label."""


def new_id(prefix: str) -> str:
    """A short unique id such as ``job_3f9c2a1b0d4e``."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class JobParams(BaseModel):
    """The parameters a job accepts (all optional; stages fall back to the settings)."""

    model_config = ConfigDict(extra="forbid")

    target_precision: float | None = Field(default=None, gt=0, lt=1)
    seed: int | None = None
    image_size: int | None = Field(default=None, ge=8, le=1024)
    epochs: int | None = Field(default=None, ge=1, le=1000)
    until: Literal["preprocess", "label", "split", "train", "evaluate"] | None = None
    val_ratio: float | None = Field(default=None, gt=0, lt=1)
    test_ratio: float | None = Field(default=None, gt=0, lt=1)
    near_duplicate_threshold: float | None = Field(default=None, ge=0, le=2)
    backbone: Literal["small", "mobilenetv3small", "efficientnetb0"] | None = None
    weights: str | None = None
    flip: bool | None = None
    folds: int | None = Field(default=None, ge=2, le=10)
    label_steps: int | None = Field(default=None, ge=1)
    student_steps: int | None = Field(default=None, ge=0)
    neighbours: int | None = Field(default=None, ge=1, le=100)
    acceptance: Acceptance | None = None
    precision: Precision | None = None
    label_workers: int | None = Field(default=None, ge=0)
    label_effort: Effort | None = None
    label_time_budget: float | None = Field(default=None, gt=0)
    teacher_cnns: int | None = Field(default=None, ge=1, le=10)
    review_audit_share: float | None = Field(default=None, ge=0, lt=1)
    batch_size: int | None = Field(default=None, ge=1)
    patience: int | None = Field(default=None, ge=1)
    shard_size: int | None = Field(default=None, ge=1)


class Shard(BaseModel):
    """One slice of a sharded stage: items ``index, index + count, …`` of the sorted input."""

    index: int = Field(ge=0)
    count: int = Field(ge=1)


class Task(BaseModel):
    """Work for one stage of one job.

    ``inputs`` maps output names of earlier stages (``"preprocess.manifest"``) to references;
    ``prefix`` is where the job's outputs live in the store (``jobs/<job_id>/``);
    ``shard`` is set when a sharded stage was fanned out; ``params`` carries job parameters.
    """

    schema_version: int = SCHEMA_VERSION
    task_id: str = Field(default_factory=lambda: new_id("task"))
    job_id: str
    stage: str
    prefix: str
    shard: Shard | None = None
    inputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1


class TaskStatus(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    retrying = "retrying"
    progress = "progress"


class TaskEvent(BaseModel):
    """What a worker reports about a task: progress, success (with outputs) or failure."""

    schema_version: int = SCHEMA_VERSION
    task_id: str
    job_id: str
    stage: str
    shard: Shard | None = None
    status: TaskStatus
    attempt: int = 1
    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    progress: float = 0.0
    seconds: float = 0.0
    error: str | None = None
    worker: str | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class StageResult(BaseModel):
    """What a stage function returns: named output references and item counts."""

    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
