"""The gateway: FastAPI app, job store, and the event consumer that drives jobs forward."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from labelwright.core import metrics
from labelwright.core.bus import Publisher
from labelwright.core.messages import Task
from labelwright.core.settings import Settings
from labelwright.core.storage import Store, open_store
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .api.routes import datasets, jobs
from .db import make_sessionmaker
from .orchestrator import EventConsumer, Orchestrator

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class TaskPublisher(Publisher):
    def publish_task(self, task: Task) -> None:
        self.publish(self.topology.task_routing_key(task.stage), task)


def problem(status: int, detail, title: str | None = None, headers=None) -> JSONResponse:
    from http import HTTPStatus

    body = {"type": "about:blank", "title": title or HTTPStatus(status).phrase, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def create_app(settings: Settings, store: Store | None = None, consume_events: bool = True) -> FastAPI:
    """Build the app; ``consume_events=False`` leaves the orchestration loop off (for API tests)."""
    store = store or open_store(settings.store, settings)
    sessions = make_sessionmaker(settings.database_url)
    orchestrator = Orchestrator(sessions, store, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        consumer = EventConsumer(orchestrator, settings) if consume_events else None
        if consumer:
            consumer.start()
        if not settings.api_key_set:
            log.warning("LABELWRIGHT_API_KEYS is empty: mutating calls are open to anyone who reaches the gateway")
        yield
        if consumer:
            consumer.stop()
        app.state.publisher.close()

    app = FastAPI(title="labelwright", version="1", lifespan=lifespan,
                  description="Clean, label, split, train and evaluate image datasets.")
    app.state.settings, app.state.store, app.state.sessions = settings, store, sessions
    app.state.orchestrator = orchestrator
    app.state.publisher = TaskPublisher(settings, "labelwright-gateway")
    app.include_router(datasets.router)
    app.include_router(jobs.router)

    @app.exception_handler(HTTPException)
    async def http_problem(_request: Request, exc: HTTPException):
        return problem(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_problem(_request: Request, exc: RequestValidationError):
        return problem(422, [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
                       "Request validation failed")

    @app.exception_handler(Exception)
    async def unexpected_problem(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return problem(503, f"the gateway could not complete the request ({type(exc).__name__}); try again")

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(request.method, template, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    return app


def serve(settings: Settings) -> None:
    """Entry point of ``labelwright serve gateway``."""
    import os

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    port = int(os.environ.get("LABELWRIGHT_GATEWAY_PORT", "8000"))
    uvicorn.run(create_app(settings), host=os.environ.get("LABELWRIGHT_GATEWAY_HOST", "0.0.0.0"), port=port,
                log_level="info")
