"""The pipeline's rules, shared by the gateway and the in-process runner.

``step_after`` is the one pure "what comes next" rule; ``build_task`` wires a stage's inputs from
the outputs of every earlier stage; ``load_stage`` finds a stage function through the
``labelwright.stages`` entry points, so core never imports a service.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol

from .messages import ArtifactRef, Shard, StageResult, Task
from .settings import Settings
from .storage import Store
from .topology import SHARDABLE, STAGES

Progress = Callable[[float, str], None]


class StageFn(Protocol):
    def __call__(
        self, task: Task, store: Store, settings: Settings, progress: Progress | None = None
    ) -> StageResult: ...


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it), for stages that
    size their own thread or process pools."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class StageError(Exception):
    """A stage cannot succeed with this input; retrying will not help. The message is for users."""


def load_stage(stage: str) -> StageFn:
    """The stage function registered under ``labelwright.stages`` for ``stage``."""
    found = {ep.name: ep for ep in entry_points(group="labelwright.stages")}
    if stage not in found:
        raise LookupError(
            f"no installed service provides the {stage!r} stage (installed: {', '.join(sorted(found)) or 'none'})"
        )
    return found[stage].load()


def load_app(name: str) -> Callable[[Settings], None]:
    """A long-running app (the gateway) registered under ``labelwright.apps``."""
    found = {ep.name: ep for ep in entry_points(group="labelwright.apps")}
    if name not in found:
        raise LookupError(f"{name!r} is not installed (installed apps: {', '.join(sorted(found)) or 'none'})")
    return found[name].load()


def stages_until(until: str | None) -> tuple[str, ...]:
    """The stages a run executes, first to ``until`` inclusive."""
    if until is None:
        return STAGES
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; stages are {', '.join(STAGES)}")
    return STAGES[: STAGES.index(until) + 1]


def shard_count(stage: str, items: int, shard_size: int) -> int:
    """How many shards the gateway cuts a stage into (1 means no fan-out)."""
    if stage not in SHARDABLE or items <= shard_size:
        return 1
    return math.ceil(items / shard_size)


@dataclass(frozen=True)
class Step:
    """What to do after a task succeeded: wait for sibling shards, merge them, start a stage, finish."""

    action: Literal["wait", "merge", "start", "finish"]
    stage: str | None = None


def step_after(stage: str, shard: Shard | None, shards_done: int, until: str | None) -> Step:
    """The next step once a task of ``stage`` (one shard of it, or the whole) has succeeded."""
    if shard is not None:
        return Step("merge", stage) if shards_done >= shard.count else Step("wait")
    remaining = stages_until(until)
    position = remaining.index(stage)
    if position + 1 < len(remaining):
        return Step("start", remaining[position + 1])
    return Step("finish")


def build_task(
    job_id: str,
    stage: str,
    prefix: str,
    outputs: Mapping[str, Mapping[str, ArtifactRef]],
    params: Mapping[str, Any],
    *,
    dataset: ArtifactRef,
    shard: Shard | None = None,
    merge_shards: Mapping[int, Mapping[str, ArtifactRef]] | None = None,
) -> Task:
    """A task for ``stage`` whose inputs are the dataset index and every earlier stage's outputs.

    Inputs are named ``<stage>.<output>``; a merge task also gets ``shards.<i>.<output>``.
    """
    inputs: dict[str, ArtifactRef] = {"dataset.index": dataset}
    for done_stage, refs in outputs.items():
        inputs.update({f"{done_stage}.{name}": ref for name, ref in refs.items()})
    for index, refs in (merge_shards or {}).items():
        inputs.update({f"shards.{index}.{name}": ref for name, ref in refs.items()})
    if merge_shards:
        params = {**params, "merge_shards": len(merge_shards)}
    return Task(job_id=job_id, stage=stage, prefix=prefix, shard=shard, inputs=inputs, params=dict(params))


def job_summary(job_id: str, status: str, stages: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any],
                error: str | None = None) -> dict[str, Any]:
    """The one-page ``summary.json`` of a whole run: per stage its wall seconds and item counts."""
    return {
        "job_id": job_id,
        "status": status,
        "error": error,
        "params": dict(params),
        "stages": {s: dict(v) for s, v in stages.items()},
        "total_seconds": round(sum(float(v.get("seconds", 0.0)) for v in stages.values()), 3),
    }
