"""Shared fixtures: small real images, a real S3 server process, the real broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pika
import pytest
from labelwright.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

FAST_PARAMS = {"image_size": 16, "epochs": 4, "label_steps": 40, "student_steps": 10, "folds": 3,
               "label_effort": "standard"}
"""Job parameters that keep real TensorFlow training to seconds in tests."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """Real images: 300 of scikit-learn's digits as PNG, 10 seed labels per class."""
    from sample_digits import write

    out = tmp_path_factory.mktemp("digits")
    write(out, seeds_per_class=10, limit=300)
    return out


def _broker_up(url: str) -> str | None:
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no broker"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The real RabbitMQ. Skipped with a plain message when unreachable, unless CI demands it."""
    url = os.environ.get("LABELWRIGHT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    problem = _broker_up(url)
    if problem:
        if os.environ.get("LABELWRIGHT_REQUIRE_BROKER") == "1":
            pytest.fail(f"RabbitMQ is required but unreachable at {url}: {problem}")
        pytest.skip(f"no RabbitMQ at {url} ({problem}); start one (rabbitmq-server -detached) to run this test")
    return url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """An S3-compatible server process (moto in server mode) that the minio SDK talks to."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(endpoint, timeout=1.0)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the S3 test server did not start") from None
            time.sleep(0.2)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def service_settings(amqp_url, s3_endpoint, tmp_path) -> Settings:
    """Settings for one services test: its own namespace on the broker, bucket and database."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        amqp_url=amqp_url, namespace=f"lwtest-{tag}", store=f"s3://lwtest-{tag}", s3_endpoint=s3_endpoint,
        s3_access_key="testing", s3_secret_key="testing", database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        api_keys="test-key", api_key="test-key", metrics_port=0, max_deliveries=3,
    )


@pytest.fixture
def cleanup_namespace(service_settings):
    """Delete the test's queues and exchanges afterwards."""
    yield
    from labelwright.core.topology import STAGES, Topology

    topo = Topology(service_settings.namespace)
    connection = pika.BlockingConnection(pika.URLParameters(service_settings.amqp_url))
    channel = connection.channel()
    for queue in [topo.events_queue, topo.dead_letter_queue, *(topo.task_queue(s) for s in STAGES)]:
        channel.queue_delete(queue)
    channel.exchange_delete(topo.exchange)
    channel.exchange_delete(topo.dead_letter_exchange)
    connection.close()
