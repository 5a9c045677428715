"""Stage order, which service runs which stage, and every exchange and queue name.

All names derive from a namespace (``LABELWRIGHT_NAMESPACE``) so that tests can run beside a
live deployment on one broker without sharing a queue.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES: tuple[str, ...] = ("preprocess", "label", "split", "train", "evaluate")
"""The pipeline's stages, in order."""

SERVICE_OF_STAGE: dict[str, str] = {
    "preprocess": "preprocess",
    "label": "labeler",
    "split": "splitter",
    "train": "trainer",
    "evaluate": "evaluator",
}
"""The service (and Docker image) that runs each stage."""

SHARDABLE: frozenset[str] = frozenset({"preprocess"})
"""Stages whose work the gateway may cut into shards for several replicas."""


def stage_of(name: str) -> str:
    """Accept a stage name or its service's name and return the stage name."""
    if name in STAGES:
        return name
    for stage, service in SERVICE_OF_STAGE.items():
        if service == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names for one namespace."""

    namespace: str = "labelwright"

    @property
    def exchange(self) -> str:
        return self.namespace

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    def task_queue(self, stage: str) -> str:
        return f"{self.namespace}.tasks.{stage}"

    def task_routing_key(self, stage: str) -> str:
        return f"tasks.{stage}"

    @property
    def events_queue(self) -> str:
        return f"{self.namespace}.events"

    @property
    def events_routing_key(self) -> str:
        return "events"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"
