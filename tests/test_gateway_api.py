"""The gateway's HTTP contract: auth, problem documents, upload limits and archive safety."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient
from images import digit, encode
from labelwright.core.settings import Settings
from labelwright.gateway.main import create_app

AUTH = {"Authorization": "Bearer k1"}


@pytest.fixture
def client(tmp_path):
    settings = Settings(store=f"file://{tmp_path / 'store'}", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                        api_keys="k1,k2", max_upload_bytes=200_000)
    with TestClient(create_app(settings, consume_events=False)) as c:
        yield c


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_mutating_calls_need_a_key(client):
    response = client.post("/v1/datasets", content=b"x", headers={"Content-Type": "application/zip"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    wrong = client.post("/v1/jobs", json={"dataset_id": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403


def test_upload_records_skipped_members(client):
    png = encode(digit(), "PNG")
    body = _zip({"cat/a.png": png, "dog/b.png": png, "c.png": png, "../evil.png": png})
    response = client.post("/v1/datasets", content=body, headers={**AUTH, "Content-Type": "application/zip"})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["files"], dataset["labelled"], dataset["skipped"]) == (4, 2, 1)
    assert client.get(f"/v1/datasets/{dataset['id']}").json()["id"] == dataset["id"]


def test_bad_uploads_get_4xx_problems(client):
    too_big = client.post("/v1/datasets", content=bytes(300_000), headers={**AUTH, "Content-Type": "application/zip"})
    assert too_big.status_code == 413
    wrong_type = client.post("/v1/datasets", content=b"{}", headers={**AUTH, "Content-Type": "application/json"})
    assert wrong_type.status_code == 415
    not_archive = client.post("/v1/datasets", content=b"hello", headers={**AUTH, "Content-Type": "application/zip"})
    assert not_archive.status_code == 422 and "neither" in not_archive.json()["detail"]
    empty = client.post("/v1/datasets", content=_zip({}), headers={**AUTH, "Content-Type": "application/zip"})
    assert empty.status_code == 422


def test_unknown_things_are_404_and_bad_bodies_422(client):
    assert client.get("/v1/jobs/job_nope").status_code == 404
    assert client.post("/v1/jobs", json={"dataset_id": "ds_nope"}, headers=AUTH).status_code == 404
    invalid = client.post("/v1/jobs", json={"params": 3}, headers=AUTH)
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/problem+json"
    assert client.post("/v1/datasets/from-s3", json={"uri": "s3://elsewhere/x"}, headers=AUTH).status_code == 422


def test_openapi_and_metrics_are_served(client):
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]
    client.get("/v1/jobs/job_nope")
    metrics = client.get("/metrics").text
    assert 'labelwright_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in metrics
