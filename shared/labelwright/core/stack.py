"""``labelwright stack``: the gateway and every worker as local processes, for machines without
Docker and for the end-to-end tests. The same topology as ``docker-compose.yml``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from .settings import Settings
from .topology import STAGES, stage_of


def parse_scale(items: Iterable[str]) -> dict[str, int]:
    """``["preprocess=2"]`` to ``{"preprocess": 2}``; service names are accepted too."""
    scale = {}
    for item in items:
        name, _, count = item.partition("=")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--scale takes STAGE=N with N >= 1, got {item!r}")
        scale[stage_of(name.strip())] = int(count)
    return scale


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables that reproduce them in a child process."""
    return {f"LABELWRIGHT_{k.upper()}": str(v) for k, v in settings.model_dump().items()}


class Stack:
    """Start on enter, stop (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, settings: Settings, scale: dict[str, int] | None = None, gateway_port: int = 8000,
                 log_dir: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.settings, self.scale = settings, {s: (scale or {}).get(s, 1) for s in STAGES}
        self.gateway_port, self.log_dir = gateway_port, log_dir
        self.extra_env = extra_env or {}
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def _spawn(self, name: str, what: str, metrics_port: int) -> None:
        env = {**os.environ, **settings_env(self.settings), **self.extra_env,
               "LABELWRIGHT_METRICS_PORT": str(metrics_port),
               "LABELWRIGHT_GATEWAY_PORT": str(self.gateway_port), "LABELWRIGHT_GATEWAY_HOST": "127.0.0.1"}
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else None  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "labelwright.core.cli", "serve", what], env=env,
            stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT if out else None)

    def start(self) -> Stack:
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("gateway", "gateway", 0)
        port = self.settings.metrics_port
        for stage in STAGES:
            for replica in range(self.scale[stage]):
                self._spawn(f"{stage}-{replica + 1}", stage, port if port else 0)
                port = port + 1 if port else 0
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes["gateway"].poll() is not None:
                raise RuntimeError("the gateway exited while starting (see its log)")
            try:
                if httpx.get(f"{self.gateway_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the gateway did not answer on {self.gateway_url} within {timeout:.0f}s")

    def kill(self, name: str) -> None:
        """SIGKILL one process (a crash, as far as the broker can tell)."""
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def restart(self, name: str) -> None:
        stage = name.rsplit("-", 1)[0]
        self._spawn(name, stage, 0)

    def wait(self) -> None:
        try:
            while all(p.poll() is None for p in self.processes.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
