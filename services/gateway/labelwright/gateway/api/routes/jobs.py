"""Jobs: start, follow (JSON or server-sent events), cancel, fetch outputs, answer the review queue."""

from __future__ import annotations

import asyncio
import mimetypes

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from labelwright.core.messages import TERMINAL_STATUSES, new_id
from labelwright.core.storage import StoreError
from labelwright.core.topology import STAGES

from ...db import WHOLE, Dataset, Job
from ...schemas import JobCreate, JobPublic, ReviewAnswers, ReviewItem, StagePublic
from ..deps import ApiKey, OrchestratorDep, PublishDep, SessionDep, StoreDep

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _job_or_404(session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def _stages(job: Job) -> list[StagePublic]:
    stages = []
    for stage in STAGES:
        runs = [r for r in job.runs if r.stage == stage]
        if not runs:
            continue
        whole = next((r for r in runs if r.shard == WHOLE), None)
        shards = [r for r in runs if r.shard != WHOLE]
        done = sum(1 for r in shards if r.status == "succeeded")
        if whole is not None:
            status, progress = whole.status, whole.progress
        else:
            failed = any(r.status == "failed" for r in shards)
            status = "failed" if failed else "running" if any(r.status != "queued" for r in shards) else "queued"
            progress = sum(r.progress for r in shards) / max(len(shards), 1)
        stages.append(StagePublic(
            stage=stage, status=status, shards=max(len(shards), 1), shards_done=done, progress=round(progress, 4),
            attempts=sum(r.attempts for r in runs), seconds=round(sum(r.seconds for r in runs), 3),
            counts=whole.counts if whole else {}, error=next((r.error for r in runs if r.error), None),
            outputs=whole.outputs if whole else {}))
    return stages


def _public(job: Job, request: Request) -> JobPublic:
    stages = _stages(job)
    planned = len(STAGES[: STAGES.index(job.params.get("until", STAGES[-1])) + 1])
    done = sum(1 for s in stages if s.status == "succeeded")
    running = sum(s.progress for s in stages if s.status not in ("succeeded", "failed"))
    base = str(request.url_for("get_job", job_id=job.id))
    links = {"self": base, "outputs": f"{base}/outputs", "events": f"{base}/events", "review": f"{base}/review"}
    if job.status == "succeeded":
        links.update({"labels": f"{base}/outputs/labels.csv", "summary": f"{base}/outputs/summary.json"})
        if any(s.stage == "evaluate" for s in stages):
            links["report"] = f"{base}/outputs/evaluate/report.html"
    return JobPublic(id=job.id, dataset_id=job.dataset_id, status=job.status, params=job.params,
                     progress=round(1.0 if job.status == "succeeded" else (done + running) / planned, 4),
                     error=job.error, created=job.created, updated=job.updated, stages=stages, links=links)


@router.post("", status_code=202, dependencies=[ApiKey], response_model=JobPublic)
def create(body: JobCreate, request: Request, response: Response, session: SessionDep,
           orchestrator: OrchestratorDep, publish: PublishDep) -> JobPublic:
    """Start a job on a dataset; answers 202 with the job's ``Location``."""
    if session.get(Dataset, body.dataset_id) is None:
        raise HTTPException(404, f"no dataset {body.dataset_id}")
    params = body.params.model_dump(exclude_none=True)
    job_id = new_id("job")
    session.add(Job(id=job_id, dataset_id=body.dataset_id, params=params, prefix=f"jobs/{job_id}/"))
    session.commit()
    orchestrator.start(job_id, publish)
    session.expire_all()
    job = _job_or_404(session, job_id)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
    return _public(job, request)


@router.get("", response_model=list[JobPublic])
def list_jobs(request: Request, session: SessionDep, limit: int = 50) -> list[JobPublic]:
    jobs = session.query(Job).order_by(Job.created.desc()).limit(min(max(limit, 1), 500)).all()
    return [_public(j, request) for j in jobs]


@router.get("/{job_id}", response_model=JobPublic, name="get_job")
def get_job(job_id: str, request: Request, session: SessionDep) -> JobPublic:
    return _public(_job_or_404(session, job_id), request)


@router.post("/{job_id}/cancel", dependencies=[ApiKey], response_model=JobPublic)
def cancel(job_id: str, request: Request, session: SessionDep, orchestrator: OrchestratorDep) -> JobPublic:
    job = _job_or_404(session, job_id)
    if job.status in TERMINAL_STATUSES:
        raise HTTPException(409, f"job {job_id} has already {job.status}")
    orchestrator.cancel(job_id)
    session.expire_all()
    return _public(_job_or_404(session, job_id), request)


@router.get("/{job_id}/events")
async def events(job_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: the job as JSON whenever it changes, until it ends."""
    sessions = request.app.state.sessions
    with sessions() as session:
        _job_or_404(session, job_id)

    async def stream():
        last = None
        while not await request.is_disconnected():
            with sessions() as session:
                job = session.get(Job, job_id)
                payload = _public(job, request).model_dump_json()
                status = job.status
            if payload != last:
                last = payload
                yield f"event: job\ndata: {payload}\n\n"
            if status in TERMINAL_STATUSES:
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/{job_id}/outputs")
def outputs(job_id: str, request: Request, session: SessionDep, store: StoreDep) -> dict:
    """Every output file of the job, by its path in the output layout."""
    job = _job_or_404(session, job_id)
    base = str(request.url_for("get_job", job_id=job_id))
    files = [k[len(job.prefix):] for k in store.list(job.prefix)]
    return {"files": [{"path": f, "url": f"{base}/outputs/{f}"} for f in files]}


@router.get("/{job_id}/outputs/{path:path}")
def output(job_id: str, path: str, session: SessionDep, store: StoreDep) -> Response:
    job = _job_or_404(session, job_id)
    if ".." in path.split("/"):
        raise HTTPException(400, "bad path")
    try:
        data = store.get(f"{job.prefix}{path}")
    except StoreError:
        raise HTTPException(404, f"job {job_id} has no output {path}") from None
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(data, media_type=media_type)


@router.get("/{job_id}/review", response_model=list[ReviewItem])
def review_queue(job_id: str, session: SessionDep, store: StoreDep, limit: int = 100, offset: int = 0):
    """The review queue, most useful items first."""
    job = _job_or_404(session, job_id)
    try:
        rows = store.get_csv(f"{job.prefix}label/review.csv")
    except StoreError:
        raise HTTPException(409, f"job {job_id} has no review queue yet") from None
    return [ReviewItem.model_validate(r) for r in rows[offset: offset + min(max(limit, 1), 1000)]]


@router.post("/{job_id}/review", status_code=202, dependencies=[ApiKey], response_model=JobPublic)
def answer_review(job_id: str, body: ReviewAnswers, request: Request, session: SessionDep, store: StoreDep,
                  orchestrator: OrchestratorDep, publish: PublishDep) -> JobPublic:
    """Record reviewed labels (``source=review``) and re-run labeling and every stage after it."""
    job = _job_or_404(session, job_id)
    if job.status not in ("succeeded", "failed"):
        raise HTTPException(409, f"job {job_id} is {job.status}; answer the review queue once it has ended")
    if not any(r.stage == "label" and r.status == "succeeded" for r in job.runs):
        raise HTTPException(409, f"job {job_id} has not labelled anything yet")
    known = {r["file_name"] for r in store.get_csv(f"{job.prefix}labels.csv")}
    unknown = sorted({a.file_name for a in body.answers} - known)
    if unknown:
        raise HTTPException(422, f"not items of this job: {', '.join(unknown[:5])}")
    ref = orchestrator.review_answers_ref(job, {a.file_name: a.label.strip() for a in body.answers})
    orchestrator.start(job_id, publish, stage="label", extra_inputs={"review.answers": ref})
    session.expire_all()
    return _public(_job_or_404(session, job_id), request)
