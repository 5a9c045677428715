"""docker-compose.yml cannot run here (no Docker engine): validate it with docker-compose's own
`config` and check that it describes the same topology as `labelwright stack`."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from labelwright.core.topology import SERVICE_OF_STAGE

ROOT = Path(__file__).resolve().parents[1]
WORKERS = set(SERVICE_OF_STAGE.values())


@pytest.fixture(scope="module")
def compose() -> dict:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); .ci/run installs it")
    done = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_every_stage_has_a_scalable_worker(compose):
    services = compose["services"]
    assert WORKERS | {"gateway", "rabbitmq", "minio", "prometheus"} <= set(services)
    for name in WORKERS:
        service = services[name]
        assert "container_name" not in service and "ports" not in service, f"{name} could not scale"
        assert service["healthcheck"]["test"]
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        dockerfile = ROOT / service["build"]["dockerfile"]
        stage = re.search(r'CMD \["labelwright", "serve", "(\w+)"\]', dockerfile.read_text()).group(1)
        assert SERVICE_OF_STAGE[stage] == name
    assert services["gateway"]["ports"], "the gateway publishes the one application port"


def test_only_learning_images_carry_tensorflow():
    for service in ("gateway", "preprocess", "splitter"):
        project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]
        assert not any("[ml]" in d or "tensorflow" in d for d in project["dependencies"]), service
        assert "[ml]" not in (ROOT / "services" / service / "Dockerfile").read_text()
    for service in ("labeler", "trainer", "evaluator"):
        assert "[ml]" in (ROOT / "services" / service / "Dockerfile").read_text()


def test_prometheus_scrapes_every_replica_of_every_service():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    names = {n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert names >= WORKERS | {"gateway"}
