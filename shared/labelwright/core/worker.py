"""The worker adapter: consume ``tasks.<stage>``, run the stage, publish its event, then ack.

Follows pika's ``basic_consumer_threaded`` example: ``start_consuming`` stays on the main thread
(heartbeats keep flowing), the stage runs in a thread, and the event publish plus the ack go back
to the connection's thread through ``add_callback_threadsafe``. The ack comes only after the
outputs are written and the event is confirmed by the broker, so a worker that dies mid-task
loses nothing: the broker redelivers the task and the stage rewrites the same keys.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback

import pika
from pika.exceptions import AMQPConnectionError, AMQPError, ChannelClosedByBroker
from pydantic import ValidationError

from . import metrics
from .bus import connect, declare, properties
from .messages import StageResult, Task, TaskEvent, TaskStatus
from .pipeline import StageError, StageFn, load_stage
from .settings import Settings
from .storage import Store, open_store
from .topology import Topology

log = logging.getLogger(__name__)
PROGRESS_EVERY_SECONDS = 2.0


class Worker:
    """Consumes one stage's task queue; one task at a time (prefetch 1)."""

    def __init__(self, stage: str, settings: Settings, store: Store | None = None,
                 stage_fn: StageFn | None = None) -> None:
        self.stage, self.settings = stage, settings
        self.store = store or open_store(settings.store, settings)
        self.stage_fn = stage_fn or load_stage(stage)
        self.name = f"{stage}@{socket.gethostname()}:{os.getpid()}"
        self.topology = Topology(settings.namespace)
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None

    def serve(self) -> None:
        """Consume until ``stop()``; reconnect with backoff when the broker goes away."""
        while not self._stopping.is_set():
            try:
                self._consume()
            except (AMQPConnectionError, ChannelClosedByBroker, AMQPError) as exc:
                if self._stopping.is_set():
                    break
                log.warning("%s lost the broker (%s); reconnecting", self.name, exc)
                time.sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.add_callback_threadsafe(connection.close)

    def _consume(self) -> None:
        self._connection = connect(self.settings, self.name)
        channel = self._connection.channel()
        declare(channel, self.settings)
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(self.topology.task_queue(self.stage), self._on_message)
        log.info("%s consuming %s", self.name, self.topology.task_queue(self.stage))
        try:
            channel.start_consuming()
        finally:
            if self._connection.is_open and not self._stopping.is_set():
                self._connection.close()

    def _on_message(self, channel, method, props, body: bytes) -> None:
        thread = threading.Thread(target=self._handle, args=(channel, method, props, body), daemon=True,
                                  name=f"{self.stage}-task")
        thread.start()

    def _threadsafe(self, channel, fn, *args) -> None:
        channel.connection.add_callback_threadsafe(functools.partial(fn, *args))

    def _handle(self, channel, method, props, body: bytes) -> None:
        try:
            task = Task.model_validate_json(body)
        except ValidationError as exc:
            log.error("%s dead-letters a malformed task: %s", self.name, exc)
            self._threadsafe(channel, channel.basic_reject, method.delivery_tag, False)
            return
        deliveries = int((props.headers or {}).get("x-delivery-count", 0)) + 1
        task = task.model_copy(update={"attempt": deliveries})
        started = time.perf_counter()
        last_progress = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.perf_counter()
            if now - last_progress[0] >= PROGRESS_EVERY_SECONDS:
                last_progress[0] = now
                event = self._event(task, TaskStatus.progress, progress=fraction, error=None, seconds=now - started)
                self._threadsafe(channel, self._publish, channel, event)

        metrics.TASKS_IN_PROGRESS.labels(self.stage).inc()
        self._threadsafe(channel, self._publish, channel, self._event(task, TaskStatus.progress, progress=0.0))
        try:
            result: StageResult = self.stage_fn(task, self.store, self.settings, progress=progress)
            event = self._event(task, TaskStatus.succeeded, progress=1.0, seconds=time.perf_counter() - started,
                                outputs=result.outputs, counts=result.counts)
            requeue = None
        except StageError as exc:
            event = self._event(task, TaskStatus.failed, error=str(exc), seconds=time.perf_counter() - started)
            requeue = None
        except Exception as exc:  # a crash of the stage must not crash the worker
            log.error("%s task %s attempt %d failed:\n%s", self.name, task.task_id, deliveries, traceback.format_exc())
            last = deliveries >= self.settings.max_deliveries
            event = self._event(task, TaskStatus.failed if last else TaskStatus.retrying,
                                error=f"{type(exc).__name__}: {exc} (attempt {deliveries} of "
                                      f"{self.settings.max_deliveries})", seconds=time.perf_counter() - started)
            requeue = not last
        finally:
            metrics.TASKS_IN_PROGRESS.labels(self.stage).dec()
        metrics.record_task(self.stage, event.status.value, event.seconds, event.counts)
        self._threadsafe(channel, self._finish, channel, method.delivery_tag, event, requeue)

    def _event(self, task: Task, status: TaskStatus, **fields) -> TaskEvent:
        return TaskEvent(task_id=task.task_id, job_id=task.job_id, stage=task.stage, shard=task.shard,
                         status=status, attempt=task.attempt, worker=self.name, **fields)

    def _publish(self, channel, event: TaskEvent) -> None:
        channel.basic_publish(self.topology.exchange, self.topology.events_routing_key,
                              event.model_dump_json().encode(), properties(event), mandatory=True)

    def _finish(self, channel, delivery_tag: int, event: TaskEvent, requeue: bool | None) -> None:
        """On the connection's thread: publish the (confirmed) event, then ack or requeue."""
        if not channel.is_open:
            return  # the broker will redeliver; the stage rewrites the same outputs
        self._publish(channel, event)
        if requeue:
            channel.basic_nack(delivery_tag, requeue=True)
        else:
            channel.basic_ack(delivery_tag)


def serve_worker(stage: str, settings: Settings) -> None:
    """Entry point of ``labelwright serve <stage>``: metrics, then consume forever."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    metrics.serve_metrics(settings.metrics_port)
    worker = Worker(stage, settings)
    try:
        worker.serve()
    except KeyboardInterrupt:
        worker.stop()
