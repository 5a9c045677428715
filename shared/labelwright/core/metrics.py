"""Prometheus metrics. Names start with ``labelwright_``, use base units, and carry only small label
sets (stage, outcome, reason, method, route, status) — never a job id or a file name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

TASKS = Counter("labelwright_tasks_total", "Tasks finished by a worker", ["stage", "outcome"])
TASK_SECONDS = Histogram(
    "labelwright_task_duration_seconds", "Wall time of one task", ["stage"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
TASKS_IN_PROGRESS = Gauge("labelwright_tasks_in_progress", "Tasks being worked on", ["stage"])
ITEMS = Counter("labelwright_items_processed_total", "Items a stage processed", ["stage"])
REJECTED = Counter("labelwright_items_rejected_total", "Items quarantined, by reason", ["stage", "reason"])

JOBS = Counter("labelwright_jobs_total", "Jobs that reached a status", ["status"])
JOBS_CURRENT = Gauge("labelwright_jobs_by_status", "Jobs now in each status", ["status"])
HTTP_REQUESTS = Counter("labelwright_http_requests_total", "HTTP requests served", ["method", "route", "status"])
HTTP_SECONDS = Histogram("labelwright_http_request_duration_seconds", "HTTP request latency", ["method", "route"])


def record_task(stage: str, outcome: str, seconds: float, counts: dict[str, int]) -> None:
    """Account for one finished task; ``counts["rejected.<reason>"]`` feeds the rejected counter."""
    TASKS.labels(stage, outcome).inc()
    TASK_SECONDS.labels(stage).observe(seconds)
    if outcome == "succeeded":
        ITEMS.labels(stage).inc(counts.get("items", 0))
        for key, value in counts.items():
            if key.startswith("rejected."):
                REJECTED.labels(stage, key.removeprefix("rejected.")).inc(value)


def serve_metrics(port: int) -> None:
    """Serve ``/metrics`` on ``port`` in a daemon thread (0 turns it off)."""
    if port:
        start_http_server(port)
