"""The worker adapter on the real broker, with the stage function injected (as nameko's
worker_factory does): outputs are acked only after the event, failures are retried a bounded
number of times and end with a readable error, a malformed task is dead-lettered."""

from __future__ import annotations

import threading
import time

import pika
import pytest
from labelwright.core.bus import Publisher, declare
from labelwright.core.messages import StageResult, Task, TaskEvent
from labelwright.core.pipeline import StageError
from labelwright.core.storage import FileStore
from labelwright.core.topology import Topology
from labelwright.core.worker import Worker

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("cleanup_namespace")]


def _events(settings, count: int, timeout: float = 60.0) -> list[TaskEvent]:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    declare(channel, settings)
    events, deadline = [], time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        method, _props, body = channel.basic_get(Topology(settings.namespace).events_queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        event = TaskEvent.model_validate_json(body)
        if event.status != "progress":
            events.append(event)
    connection.close()
    return events


def _run_worker(settings, tmp_path, stage_fn):
    worker = Worker("split", settings, store=FileStore(tmp_path), stage_fn=stage_fn)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    return worker, thread


def _publish(settings, task: Task):
    publisher = Publisher(settings)
    publisher.publish(Topology(settings.namespace).task_routing_key(task.stage), task)
    publisher.close()


def test_success_reports_outputs_after_a_long_task(service_settings, tmp_path):
    def slow_stage(task, store, settings, progress=None):
        time.sleep(2)
        progress(0.5, "half")
        return StageResult(outputs={"x": store.put_text("out.txt", "done")}, counts={"items": 1})

    worker, thread = _run_worker(service_settings, tmp_path, slow_stage)
    _publish(service_settings, Task(job_id="j", stage="split", prefix=""))
    [event] = _events(service_settings, 1)
    worker.stop()
    thread.join(10)
    assert event.status == "succeeded" and event.outputs["x"].endswith("out.txt") and event.counts == {"items": 1}


def test_crashing_stage_is_retried_then_fails_with_a_readable_error(service_settings, tmp_path):
    calls = []

    def broken_stage(task, store, settings, progress=None):
        calls.append(task.attempt)
        raise RuntimeError("disk on fire")

    worker, thread = _run_worker(service_settings, tmp_path, broken_stage)
    _publish(service_settings, Task(job_id="j", stage="split", prefix=""))
    events = _events(service_settings, 3)
    worker.stop()
    thread.join(10)
    assert [e.status for e in events] == ["retrying", "retrying", "failed"]
    assert calls == [1, 2, 3]
    assert "RuntimeError: disk on fire (attempt 3 of 3)" in events[-1].error


def test_stage_error_fails_at_once(service_settings, tmp_path):
    def refusing_stage(task, store, settings, progress=None):
        raise StageError("no seed labels")

    worker, thread = _run_worker(service_settings, tmp_path, refusing_stage)
    _publish(service_settings, Task(job_id="j", stage="split", prefix=""))
    [event] = _events(service_settings, 1)
    worker.stop()
    thread.join(10)
    assert event.status == "failed" and event.error == "no seed labels" and event.attempt == 1


def test_malformed_task_goes_to_the_dead_letter_queue(service_settings, tmp_path):
    worker, thread = _run_worker(service_settings, tmp_path, lambda *a, **k: StageResult())
    topology = Topology(service_settings.namespace)
    connection = pika.BlockingConnection(pika.URLParameters(service_settings.amqp_url))
    channel = connection.channel()
    declare(channel, service_settings)
    channel.basic_publish(topology.exchange, topology.task_routing_key("split"), b'{"not": "a task"}')
    deadline = time.monotonic() + 30
    body = None
    while body is None and time.monotonic() < deadline:
        _method, _props, body = channel.basic_get(topology.dead_letter_queue, auto_ack=True)
        time.sleep(0.1)
    connection.close()
    worker.stop()
    thread.join(10)
    assert body == b'{"not": "a task"}'
