"""The one "what comes next" rule, shared by the gateway and the in-process runner."""

from __future__ import annotations

from labelwright.core.messages import Shard
from labelwright.core.pipeline import Step, build_task, shard_count, stages_until, step_after
from labelwright.core.topology import STAGES


def test_stages_follow_in_order_and_stop_at_until():
    assert step_after("preprocess", None, 0, None) == Step("start", "label")
    assert step_after("evaluate", None, 0, None) == Step("finish")
    assert step_after("label", None, 0, "label") == Step("finish")
    assert stages_until("split") == STAGES[:3]


def test_shards_wait_for_their_siblings_then_merge():
    assert step_after("preprocess", Shard(index=0, count=3), 2, None) == Step("wait")
    assert step_after("preprocess", Shard(index=2, count=3), 3, None) == Step("merge", "preprocess")
    assert shard_count("preprocess", 20_000, 5000) == 4
    assert shard_count("label", 20_000, 5000) == 1


def test_tasks_carry_every_earlier_output_by_reference():
    task = build_task("j1", "split", "jobs/j1/", {"preprocess": {"manifest": "s3://b/m.csv"},
                                                  "label": {"labels": "s3://b/l.csv"}},
                      {"seed": 3}, dataset="s3://b/index.csv")
    assert task.inputs == {"dataset.index": "s3://b/index.csv", "preprocess.manifest": "s3://b/m.csv",
                           "label.labels": "s3://b/l.csv"}
    merge = build_task("j1", "preprocess", "jobs/j1/", {}, {}, dataset="x", merge_shards={0: {"records": "a"}})
    assert merge.params["merge_shards"] == 1 and merge.inputs["shards.0.records"] == "a"
