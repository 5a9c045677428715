"""A small HTTP client for the gateway, used by ``labelwright submit / status / fetch``."""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from .messages import TERMINAL_STATUSES
from .settings import Settings


class GatewayError(RuntimeError):
    pass


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip a folder in the input layout (hidden files and links left out)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in relative.parts):
                archive.write(path, relative.as_posix())
    return target


class Client:
    def __init__(self, settings: Settings, base_url: str | None = None, api_key: str | None = None) -> None:
        key = api_key if api_key is not None else settings.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=(base_url or settings.gateway_url).rstrip("/"), headers=headers,
                                 timeout=httpx.Timeout(30.0, read=600.0))

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise GatewayError(f"{response.request.method} {response.request.url.path}: "
                               f"{response.status_code} {detail}")
        return response.json()

    def upload(self, source: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            archive = zip_folder(source, Path(tmp) / "dataset.zip") if source.is_dir() else source
            content_type = "application/zip" if zipfile.is_zipfile(archive) else "application/gzip"
            with archive.open("rb") as body:
                return self._check(self.http.post("/v1/datasets", content=body,
                                                  headers={"Content-Type": content_type}))

    def submit(self, source: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Register or upload ``source`` and start a job on it."""
        if source.startswith("s3://"):
            dataset = self._check(self.http.post("/v1/datasets/from-s3", json={"uri": source}))
        else:
            dataset = self.upload(Path(source))
        return self._check(self.http.post("/v1/jobs", json={"dataset_id": dataset["id"], "params": params or {}}))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}"))

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
            time.sleep(poll)

    def fetch(self, job_id: str, out: Path) -> list[Path]:
        """Download every output of a job into ``out``, in the output layout."""
        listing = self._check(self.http.get(f"/v1/jobs/{job_id}/outputs"))
        written = []
        for item in listing["files"]:
            target = out / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            response = self.http.get(f"/v1/jobs/{job_id}/outputs/{item['path']}")
            if response.status_code >= 400:
                self._check(response)
            target.write_bytes(response.content)
            written.append(target)
        return written
