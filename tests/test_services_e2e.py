"""The services path for real: `labelwright stack` (gateway + five workers as processes) over the
real RabbitMQ and an S3 server, a dataset uploaded over HTTP, every output object checked."""

from __future__ import annotations

import shutil
import time
import zipfile

import httpx
import pytest
from conftest import FAST_PARAMS, free_port
from labelwright.core.client import Client, zip_folder
from labelwright.core.stack import Stack
from labelwright.core.storage import S3Store

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("cleanup_namespace")]

CONTRACT = [
    "labels.csv", "summary.json",
    "preprocess/rejected.csv", "preprocess/duplicates.csv", "preprocess/summary.json", "preprocess/manifest.csv",
    "label/review.csv", "label/label_issues.csv", "label/summary.json",
    "split/train.csv", "split/val.csv", "split/test.csv", "split/summary.json",
    "train/model.keras", "train/history.json",
    "evaluate/evaluation.json", "evaluate/confusion_matrix.png", "evaluate/report.html",
]


def _dataset_zip(digits_dir, tmp_path):
    folder = tmp_path / "upload"
    shutil.copytree(digits_dir, folder)
    (folder / "broken.png").write_bytes((digits_dir / "0").iterdir().__next__().read_bytes()[:40])
    (folder / "notes.jpg").write_text("not an image at all")
    return zip_folder(folder, tmp_path / "upload.zip")


def test_job_over_http_writes_every_output_to_s3(service_settings, digits_dir, tmp_path):
    archive = _dataset_zip(digits_dir, tmp_path)
    port = free_port()
    with Stack(service_settings, {"preprocess": 2}, gateway_port=port, log_dir=tmp_path / "logs") as stack:
        base = stack.gateway_url
        anonymous = httpx.post(f"{base}/v1/jobs", json={"dataset_id": "x"})
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")

        client = Client(service_settings, base_url=base)
        dataset = client.upload(archive)
        assert dataset["files"] == 302 and dataset["labelled"] == 100
        response = client.http.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                                       "params": {**FAST_PARAMS, "shard_size": 120}})
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert response.headers["location"].endswith(f"/v1/jobs/{job_id}")

        job = client.wait(job_id, timeout=600)
        assert job["status"] == "succeeded", job
        stages = {s["stage"]: s for s in job["stages"]}
        assert list(stages) == ["preprocess", "label", "split", "train", "evaluate"]
        assert stages["preprocess"]["shards"] == 3 and stages["preprocess"]["shards_done"] == 3
        assert stages["preprocess"]["counts"]["rejected"] == 2

        store = S3Store(service_settings.store.removeprefix("s3://"), service_settings, create=False)
        keys = set(store.list(f"jobs/{job_id}/"))
        missing = [name for name in CONTRACT if f"jobs/{job_id}/{name}" not in keys]
        assert not missing, missing
        rejected = store.get_csv(f"jobs/{job_id}/preprocess/rejected.csv")
        assert {r["file_name"] for r in rejected} == {"broken.png", "notes.jpg"}
        labels = store.get_csv(f"jobs/{job_id}/labels.csv")
        assert len(labels) == 300

        fetched = client.fetch(job_id, tmp_path / "fetched")
        assert {p.relative_to(tmp_path / "fetched").as_posix() for p in fetched} >= set(CONTRACT)

        metrics = httpx.get(f"{base}/metrics").text
        assert 'labelwright_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in metrics
        assert "labelwright_jobs_total" in metrics


def test_worker_killed_mid_task_loses_nothing(service_settings, digits_dir, tmp_path):
    archive = zip_folder(digits_dir, tmp_path / "digits.zip")
    assert zipfile.is_zipfile(archive)
    with Stack(service_settings, gateway_port=free_port(), log_dir=tmp_path / "logs") as stack:
        client = Client(service_settings, base_url=stack.gateway_url)
        dataset = client.upload(archive)
        job_id = client.http.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                                     "params": {**FAST_PARAMS, "label_steps": 400}}).json()["id"]
        deadline = time.monotonic() + 300
        while True:
            job = client.job(job_id)
            label = next((s for s in job["stages"] if s["stage"] == "label"), None)
            if label and label["status"] == "running":
                break
            assert time.monotonic() < deadline and job["status"] not in ("failed", "succeeded"), job
            time.sleep(0.2)
        stack.kill("label-1")
        stack.restart("label-1")
        job = client.wait(job_id, timeout=600)
        assert job["status"] == "succeeded", job
        label = next(s for s in job["stages"] if s["stage"] == "label")
        assert label["attempts"] >= 2, "the killed worker's task was redelivered to the new one"
        summary = client.http.get(f"/v1/jobs/{job_id}/outputs/summary.json").json()
        assert summary["status"] == "succeeded"
