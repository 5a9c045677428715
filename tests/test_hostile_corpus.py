"""The hostile corpus (scripts/hostile_corpus.py) through both paths: every file is normalised or
quarantined with its specific reason, and the job completes."""

from __future__ import annotations

import pytest
from conftest import free_port
from hostile_corpus import ARCHIVE_ONLY, write, write_zip
from labelwright.core.client import Client
from labelwright.core.runner import LocalRun
from labelwright.core.settings import Settings
from labelwright.core.stack import Stack
from labelwright.core.storage import S3Store


def _check(manifest: list[dict], rejected: list[dict], expected: dict[str, str]) -> None:
    reasons = {r["file_name"]: r["reason"] for r in rejected}
    normalised = {r["file_name"] for r in manifest}
    assert normalised | set(reasons) == set(expected), "every input file is accounted for"
    for name, expectation in expected.items():
        if expectation == "ok":
            assert name in normalised, f"{name} should be normalised, got {reasons.get(name)!r}"
        else:
            assert reasons.get(name, "").startswith(expectation), f"{name}: {reasons.get(name)!r}"


def test_local_run(tmp_path):
    expected = write(tmp_path / "corpus")
    run = LocalRun(tmp_path / "out", Settings(), {"image_size": 16})
    run.ingest(tmp_path / "corpus")
    summary = run.run(("preprocess",))
    assert summary["status"] == "succeeded"
    _check(run.store.get_csv("preprocess/manifest.csv"), run.store.get_csv("preprocess/rejected.csv"), expected)
    labels = {r["file_name"]: r["label"] for r in run.store.get_csv("preprocess/manifest.csv")}
    assert labels["a/same name.png"] == "a" and labels["b/same name.png"] == "b"


@pytest.mark.broker
@pytest.mark.usefixtures("cleanup_namespace")
def test_services(service_settings, tmp_path):
    expected = write_zip(tmp_path / "corpus.zip")
    with Stack(service_settings, gateway_port=free_port(), log_dir=tmp_path / "logs") as stack:
        client = Client(service_settings, base_url=stack.gateway_url)
        dataset = client.upload(tmp_path / "corpus.zip")
        assert dataset["skipped"] == len(ARCHIVE_ONLY)
        job = client.http.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                                 "params": {"until": "preprocess", "image_size": 16}}).json()
        job = client.wait(job["id"], timeout=300)
        assert job["status"] == "succeeded", job
        store = S3Store(service_settings.store.removeprefix("s3://"), service_settings, create=False)
        prefix = f"jobs/{job['id']}/preprocess/"
        _check(store.get_csv(f"{prefix}manifest.csv"), store.get_csv(f"{prefix}rejected.csv"), expected)
        outside = [k for k in store.list("") if not k.startswith((f"jobs/{job['id']}/", f"datasets/{dataset['id']}/"))]
        assert outside == [], "nothing is written outside the job's and the dataset's own prefixes"
