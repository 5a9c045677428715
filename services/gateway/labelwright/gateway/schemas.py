"""API models, kept apart from the job store's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from labelwright.core.messages import JobParams
from pydantic import BaseModel, Field


class DatasetPublic(BaseModel):
    id: str
    source: str
    files: int = Field(description="files that will be preprocessed")
    labelled: int = Field(description="files that carry a seed label")
    skipped: int = Field(description="archive members refused (unsafe path, link, nested archive, too large)")
    created: datetime


class DatasetFromS3(BaseModel):
    uri: str = Field(description="s3://bucket/prefix holding images in the input layout", examples=["s3://labelwright/raw/cats"])


class JobCreate(BaseModel):
    dataset_id: str
    params: JobParams = Field(default_factory=JobParams, examples=[{"target_precision": 0.98, "epochs": 20}])


class StagePublic(BaseModel):
    stage: str
    status: str
    shards: int
    shards_done: int
    progress: float
    attempts: int
    seconds: float
    counts: dict[str, int]
    error: str | None
    outputs: dict[str, str]


class JobPublic(BaseModel):
    id: str
    dataset_id: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    params: dict[str, Any]
    progress: float
    error: str | None
    created: datetime
    updated: datetime
    stages: list[StagePublic]
    links: dict[str, str]


class ReviewItem(BaseModel):
    file_name: str
    suggested_label: str
    confidence: float
    priority: int


class ReviewAnswer(BaseModel):
    file_name: str
    label: str = Field(min_length=1)


class ReviewAnswers(BaseModel):
    answers: list[ReviewAnswer] = Field(min_length=1)
