"""The ``labelwright`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .datasets import DatasetError
from .messages import JobParams
from .pipeline import StageError
from .settings import get_settings
from .topology import STAGES

app = typer.Typer(help="labelwright: clean, label, split, train and evaluate an image dataset.",
                  no_args_is_help=True, add_completion=False)
review_app = typer.Typer(help="Work with the review queue of a local run.", no_args_is_help=True)
app.add_typer(review_app, name="review")
console = Console(stderr=True)


def _job_params(target_precision: float | None, seed: int | None, image_size: int | None,
                epochs: int | None, extra: list[str] | None = None) -> dict[str, Any]:
    params = {k: v for k, v in {"target_precision": target_precision, "seed": seed, "image_size": image_size,
                                "epochs": epochs}.items() if v is not None}
    for item in extra or []:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    try:
        return JobParams.model_validate(params).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


class _RichHooks:
    """Show one progress bar per stage while a local run works."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, Any] = {}

    def on_start(self, stage: str) -> None:
        self.bars[stage] = self.progress.add_task(stage, total=1.0)

    def on_progress(self, stage: str, fraction: float, message: str) -> None:
        self.progress.update(self.bars[stage], completed=min(fraction, 1.0), description=f"{stage}: {message}")

    def on_finish(self, stage: str, result, seconds: float) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if "." not in k)
        self.progress.update(self.bars[stage], completed=1.0, description=f"{stage}: {counts}")


def _run_with_progress(fn, *args, **kwargs) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        hooks = _RichHooks(progress)
        try:
            return fn(*args, on_start=hooks.on_start, on_progress=hooks.on_progress,
                      on_finish=hooks.on_finish, **kwargs)
        except (StageError, DatasetError) as exc:
            progress.stop()
            console.print(f"[red]failed:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None


def _print_summary(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    table = Table(title="labelwright run")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("counts")
    for stage, record in summary["stages"].items():
        counts = ", ".join(f"{k} {v}" for k, v in record.get("counts", {}).items() if "." not in k)
        table.add_row(stage, f"{record.get('seconds', 0):.1f}", counts)
    console.print(table)
    label = out / "label" / "summary.json"
    if label.exists():
        s = json.loads(label.read_text())
        audited = s.get("audit", {}).get("accepted_in_queue", 0)
        also = f" (and {audited} auto-accepted images of its random audit sample)" if audited else ""
        console.print(f"labels: {s['accepted']} auto-accepted ({s['coverage']:.1%} coverage) at target precision "
                      f"{s['target_precision']}, {s['needs_review']} queued for review{also}, "
                      f"{s['label_issues']} seed labels look wrong")
        for warning in s.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    evaluation = out / "evaluate" / "evaluation.json"
    if evaluation.exists():
        e = json.loads(evaluation.read_text())
        for block, name in (("human", "human-labelled test items"), ("all", "all test items")):
            if e[block].get("items"):
                console.print(f"test accuracy on {name}: {e[block]['accuracy']:.4f} "
                              f"(n={e[block]['items']}, loss {e[block]['loss']:.4f})")
        console.print(f"report: {out / 'evaluate' / 'report.html'}")


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="folder, .zip or .tar.gz in ImageFolder layout")],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    until: Annotated[str | None, typer.Option(help=f"last stage to run ({', '.join(STAGES)})")] = None,
    target_precision: Annotated[float | None, typer.Option(help="precision auto-accepted labels must meet")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    image_size: Annotated[int | None, typer.Option(help="canonical image side in pixels")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum training epochs")] = None,
    labels: Annotated[Path | None, typer.Option(help="CSV file_name,label (instead of class folders)")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="extra stage parameter KEY=VALUE")] = None,
) -> None:
    """Run the whole pipeline in this process, with outputs in OUT."""
    from .runner import run_local

    if until is not None and until not in STAGES:
        raise typer.BadParameter(f"choose one of {', '.join(STAGES)}", param_hint="--until")
    settings = get_settings()
    params = _job_params(target_precision, seed, image_size, epochs, param)
    _run_with_progress(run_local, input, out, settings, until=until, params=params, labels_csv=labels)
    _print_summary(out)


@review_app.command("apply")
def review_apply(
    answers: Annotated[Path, typer.Argument(help="CSV file_name,label of reviewed items")],
    out: Annotated[Path, typer.Option("--out", help="the output folder of an earlier run")],
) -> None:
    """Add reviewed labels (source=review) and re-run labeling and the stages after it."""
    from .runner import apply_review

    _run_with_progress(apply_review, answers, out, get_settings())
    _print_summary(out)


@app.command()
def serve(stage: Annotated[str, typer.Argument(help="a stage or service name, or 'gateway'")]) -> None:
    """Run one worker (or the gateway) against RabbitMQ and the configured store."""
    settings = get_settings()
    if stage == "gateway":
        from .pipeline import load_app

        load_app("gateway")(settings)
        return
    from .topology import stage_of
    from .worker import serve_worker

    serve_worker(stage_of(stage), settings)


@app.command()
def stack(
    scale: Annotated[list[str] | None, typer.Option(help="STAGE=N replicas, e.g. preprocess=2")] = None,
    port: Annotated[int, typer.Option(help="gateway port")] = 8000,
) -> None:
    """Start the gateway and every worker as local processes (no Docker); Ctrl-C stops them.

    Without LABELWRIGHT_STORE the processes share the local folder ./labelwright-data."""
    import os

    from .stack import Stack, parse_scale

    settings = get_settings()
    if "LABELWRIGHT_STORE" not in os.environ:  # no MinIO needed for local processes
        settings = settings.model_copy(update={"store": f"file://{Path('labelwright-data').resolve()}"})
    with Stack(settings, parse_scale(scale or []), gateway_port=port) as running:
        console.print(f"gateway on {running.gateway_url}; {len(running.processes)} processes; Ctrl-C stops")
        running.wait()


@app.command()
def submit(
    input: Annotated[str, typer.Argument(help="folder, archive, or s3://bucket/prefix")],
    until: Annotated[str | None, typer.Option()] = None,
    target_precision: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    image_size: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p")] = None,
    wait: Annotated[bool, typer.Option(help="wait until the job ends")] = False,
) -> None:
    """Upload INPUT to the gateway and start a job; prints the job id."""
    from .client import Client

    client = Client(get_settings())
    params = _job_params(target_precision, seed, image_size, epochs, param)
    if until:
        params["until"] = until
    job = client.submit(input, params)
    print(job["id"])
    if wait:
        final = client.wait(job["id"])
        console.print(f"job {job['id']}: {final['status']}")
        if final["status"] != "succeeded":
            raise typer.Exit(1)


@app.command()
def status(job: Annotated[str, typer.Argument()]) -> None:
    """Print the job as JSON."""
    from .client import Client

    json.dump(Client(get_settings()).job(job), sys.stdout, indent=2)
    print()


@app.command()
def fetch(job: Annotated[str, typer.Argument()], out: Annotated[Path, typer.Option("--out")]) -> None:
    """Download a job's outputs into OUT, in the output layout."""
    from .client import Client

    files = Client(get_settings()).fetch(job, out)
    console.print(f"{len(files)} files in {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
