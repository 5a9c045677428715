"""Datasets: an uploaded archive (streamed, size-capped) or objects already under an S3 prefix."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlparse

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from labelwright.core.datasets import DatasetError, DatasetIndex, index_prefix, ingest
from labelwright.core.messages import new_id
from labelwright.core.runner import limits_from

from ...db import Dataset
from ...schemas import DatasetFromS3, DatasetPublic
from ..deps import ApiKey, SessionDep, SettingsDep, StoreDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
ARCHIVE_TYPES = ("application/zip", "application/x-zip-compressed", "application/gzip", "application/x-gzip",
                 "application/x-tar", "application/octet-stream")


def _public(dataset: Dataset) -> DatasetPublic:
    return DatasetPublic.model_validate(dataset, from_attributes=True)


def _record(session, dataset_id: str, source: str, index: DatasetIndex) -> Dataset:
    dataset = Dataset(id=dataset_id, source=source, index_ref=index.ref, files=len(index.rows),
                      labelled=index.labelled, skipped=len(index.rows) - len(index.usable))
    session.add(dataset)
    session.commit()
    return dataset


@router.post("", status_code=201, dependencies=[ApiKey], response_model=DatasetPublic,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}},
                 "application/gzip": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep) -> DatasetPublic:
    """Upload a ``.zip`` or ``.tar.gz`` in the input layout as the raw request body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in ARCHIVE_TYPES:
        raise HTTPException(415, f"send the archive as the body with Content-Type application/zip or "
                                 f"application/gzip (got {content_type or 'none'})")
    declared = int(request.headers.get("content-length") or 0)
    if declared > settings.max_upload_bytes:
        raise HTTPException(413, f"upload of {declared} bytes exceeds the limit of {settings.max_upload_bytes}")
    dataset_id = new_id("ds")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload"
        size = 0
        with path.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise HTTPException(413, f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
                handle.write(chunk)
        if size == 0:
            raise HTTPException(400, "empty upload")
        try:
            index = await run_in_threadpool(ingest, path, store, f"datasets/{dataset_id}/", limits_from(settings))
        except DatasetError as exc:
            store.delete_prefix(f"datasets/{dataset_id}/")
            raise HTTPException(422, str(exc)) from None
    return _public(_record(session, dataset_id, f"upload ({size} bytes)", index))


@router.post("/from-s3", status_code=201, dependencies=[ApiKey], response_model=DatasetPublic)
def register(body: DatasetFromS3, session: SessionDep, store: StoreDep) -> DatasetPublic:
    """Register images already in the store's bucket under ``s3://bucket/prefix`` (nothing is copied)."""
    parsed = urlparse(body.uri)
    if parsed.scheme != "s3" or not store.owns(f"s3://{parsed.netloc}/x"):
        raise HTTPException(422, f"{body.uri} is not in this deployment's store ({store!r})")
    dataset_id = new_id("ds")
    try:
        index = index_prefix(store, parsed.path.lstrip("/"), f"datasets/{dataset_id}/")
    except DatasetError as exc:
        raise HTTPException(422, str(exc)) from None
    return _public(_record(session, dataset_id, body.uri, index))


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get(dataset_id: str, session: SessionDep) -> DatasetPublic:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise HTTPException(404, f"no dataset {dataset_id}")
    return _public(dataset)
