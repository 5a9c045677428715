"""Orchestration: start jobs, record task events, publish the next stage's tasks.

The decisions come from ``labelwright.core.pipeline`` (the same rule the in-process runner
follows); this module only keeps the job store in step with them. Events are handled
idempotently: a duplicate or stale event (redelivery, an old task) changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from labelwright.core import metrics
from labelwright.core.bus import connect, declare, properties
from labelwright.core.messages import JOB_STATUSES, TERMINAL_STATUSES, Shard, Task, TaskEvent, TaskStatus
from labelwright.core.pipeline import build_task, job_summary, shard_count, step_after
from labelwright.core.settings import Settings
from labelwright.core.storage import Store, read_csv_bytes
from labelwright.core.topology import STAGES, Topology
from pika.exceptions import AMQPError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .db import WHOLE, Job, StageRun

log = logging.getLogger(__name__)
Publish = Callable[[Task], None]


class Orchestrator:
    def __init__(self, sessions: sessionmaker, store: Store, settings: Settings) -> None:
        self.sessions, self.store, self.settings = sessions, store, settings

    def _outputs(self, job: Job) -> dict[str, dict[str, str]]:
        return {r.stage: r.outputs for r in job.runs if r.shard == WHOLE and r.status == "succeeded"}

    def _dispatch(self, session: Session, job: Job, stage: str, publish: Publish, extra_inputs=None) -> None:
        """Create the runs of ``stage`` (one per shard) and publish their tasks."""
        items = job.dataset.files
        shards = shard_count(stage, items, int(job.params.get("shard_size", self.settings.shard_size)))
        tasks = []
        for index in range(shards) if shards > 1 else [None]:
            shard = Shard(index=index, count=shards) if index is not None else None
            task = build_task(job.id, stage, job.prefix, self._outputs(job), job.params,
                              dataset=job.dataset.index_ref, shard=shard)
            task.inputs.update(extra_inputs or {})
            session.add(StageRun(job=job, stage=stage, shard=WHOLE if shard is None else index,
                                 shard_count=shards, task_id=task.task_id))
            tasks.append(task)
        session.commit()
        for task in tasks:
            publish(task)

    def start(self, job_id: str, publish: Publish, stage: str = STAGES[0], extra_inputs=None) -> None:
        """Queue the job's first stage (or re-run from ``stage``, dropping that stage and later ones)."""
        with self.sessions() as session:
            job = session.get(Job, job_id)
            for run in [r for r in job.runs if STAGES.index(r.stage) >= STAGES.index(stage)]:
                job.runs.remove(run)
            job.status, job.error = "queued", None
            session.flush()
            self._dispatch(session, job, stage, publish, extra_inputs)
        self._count_jobs()

    def handle(self, event: TaskEvent, publish: Publish) -> None:
        """Record one event and take the step the pipeline rule asks for."""
        with self.sessions() as session:
            run = session.scalar(select(StageRun).where(StageRun.task_id == event.task_id))
            if run is None or run.job.status in TERMINAL_STATUSES or run.status in ("succeeded", "failed"):
                return
            job = run.job
            run.worker = event.worker
            run.attempts = max(run.attempts, event.attempt)
            if job.status == "queued":
                job.status = "running"
            if event.status in (TaskStatus.progress, TaskStatus.retrying):
                run.status = "running"
                run.progress = event.progress
                if event.status == TaskStatus.retrying:
                    run.error = event.error
                session.commit()
                return
            run.seconds, run.finished = event.seconds, datetime.now(UTC)
            if event.status == TaskStatus.failed:
                self._fail(session, job, run, event.error or "failed")
                return
            run.status, run.progress, run.outputs, run.counts = "succeeded", 1.0, event.outputs, event.counts
            session.flush()
            done = sum(1 for r in job.runs if r.stage == run.stage and r.shard != WHOLE and r.status == "succeeded")
            step = step_after(run.stage, event.shard, done, job.params.get("until"))
            if step.action == "merge":
                self._dispatch_merge(session, job, run.stage, publish)
            elif step.action == "start":
                self._dispatch(session, job, step.stage, publish)
            elif step.action == "finish":
                job.status = "succeeded"
                session.commit()
                self._write_summary(job)
                metrics.JOBS.labels("succeeded").inc()
            else:
                session.commit()
        self._count_jobs()

    def _dispatch_merge(self, session: Session, job: Job, stage: str, publish: Publish) -> None:
        parts = {r.shard: r.outputs for r in job.runs if r.stage == stage and r.shard != WHOLE}
        task = build_task(job.id, stage, job.prefix, self._outputs(job), job.params,
                          dataset=job.dataset.index_ref, merge_shards=parts)
        session.add(StageRun(job=job, stage=stage, shard=WHOLE, shard_count=len(parts), task_id=task.task_id))
        session.commit()
        publish(task)

    def _fail(self, session: Session, job: Job, run: StageRun, error: str) -> None:
        run.status, run.error = "failed", error
        job.status, job.error = "failed", f"{run.stage}: {error}"
        session.commit()
        self._write_summary(job)
        metrics.JOBS.labels("failed").inc()

    def dead_lettered(self, task: Task, deliveries: int) -> None:
        """A task the broker gave up on: its job fails with the last error the workers reported."""
        with self.sessions() as session:
            run = session.scalar(select(StageRun).where(StageRun.task_id == task.task_id))
            if run is None or run.job.status in TERMINAL_STATUSES:
                return
            last = f" (last error: {run.error})" if run.error else " (the worker died each time)"
            self._fail(session, run.job, run, f"task dead-lettered after {deliveries} deliveries{last}")
        self._count_jobs()

    def cancel(self, job_id: str) -> None:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            if job.status not in TERMINAL_STATUSES:
                job.status = "cancelled"
                session.commit()
                metrics.JOBS.labels("cancelled").inc()
        self._count_jobs()

    def _write_summary(self, job: Job) -> None:
        stages = {}
        for run in job.runs:
            if run.shard != WHOLE:
                continue
            stages[run.stage] = {"status": run.status, "seconds": round(run.seconds, 3), "counts": run.counts,
                                 "outputs": run.outputs, "attempts": run.attempts,
                                 "shards": run.shard_count if run.shard_count > 1 else 1}
            shard_seconds = [r.seconds for r in job.runs if r.stage == run.stage and r.shard != WHOLE]
            if shard_seconds:
                stages[run.stage]["shard_seconds"] = [round(s, 3) for s in shard_seconds]
        summary = job_summary(job.id, job.status, stages, job.params, job.error)
        summary["dataset"] = job.dataset.index_ref
        self.store.put_json(f"{job.prefix}summary.json", summary)

    def _count_jobs(self) -> None:
        with self.sessions() as session:
            for status in JOB_STATUSES:
                n = session.query(Job).filter(Job.status == status).count()
                metrics.JOBS_CURRENT.labels(status).set(n)

    def review_answers_ref(self, job: Job, answers: dict[str, str]) -> str:
        """Merge new review answers into ``<prefix>review/answers.csv`` and return its reference."""
        key = f"{job.prefix}review/answers.csv"
        merged = {r["file_name"]: r["label"] for r in read_csv_bytes(self.store.get(key))} \
            if self.store.exists(key) else {}
        merged.update(answers)
        rows = [{"file_name": k, "label": v} for k, v in sorted(merged.items())]
        return self.store.put_csv(key, ["file_name", "label"], rows)


class EventConsumer:
    """Consumes task events and dead letters on its own connection and thread."""

    def __init__(self, orchestrator: Orchestrator, settings: Settings) -> None:
        self.orchestrator, self.settings = orchestrator, settings
        self.topology = Topology(settings.namespace)
        self._stopping = threading.Event()
        self._connection = None
        self.thread = threading.Thread(target=self._serve, name="event-consumer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.add_callback_threadsafe(connection.close)
        self.thread.join(timeout=10)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consume()
            except AMQPError as exc:
                if self._stopping.is_set():
                    return
                log.warning("event consumer lost the broker (%s); reconnecting", exc)
                time.sleep(1.0)
            except Exception:
                log.exception("event consumer crashed; restarting")
                time.sleep(1.0)

    def _consume(self) -> None:
        self._connection = connect(self.settings, "labelwright-gateway-events")
        channel = self._connection.channel()
        declare(channel, self.settings)
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=50)

        def publish(task: Task) -> None:
            channel.basic_publish(self.topology.exchange, self.topology.task_routing_key(task.stage),
                                  task.model_dump_json().encode(), properties(task), mandatory=True)

        def on_event(ch, method, _props, body) -> None:
            try:
                event = TaskEvent.model_validate_json(body)
            except ValueError:
                log.error("dropping a malformed event: %r", body[:200])
                ch.basic_ack(method.delivery_tag)
                return
            self.orchestrator.handle(event, publish)
            ch.basic_ack(method.delivery_tag)

        def on_dead(ch, method, props, body) -> None:
            try:
                task = Task.model_validate_json(body)
            except ValueError:
                ch.basic_ack(method.delivery_tag)
                return
            deaths = (props.headers or {}).get("x-death") or [{}]
            deliveries = int((props.headers or {}).get("x-delivery-count", 0)) + 1
            deliveries = max(deliveries, int(deaths[0].get("count", 0)), self.settings.max_deliveries)
            self.orchestrator.dead_lettered(task, deliveries)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(self.topology.events_queue, on_event)
        channel.basic_consume(self.topology.dead_letter_queue, on_dead)
        channel.start_consuming()
