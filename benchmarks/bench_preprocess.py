"""Preprocess benchmark: the stage against a bare Pillow loop on the same files, in the same run,
and the services path with 1 and 2 preprocess replicas (needs RabbitMQ).

    python benchmarks/bench_preprocess.py [--fashion 20000] [--photos 2000] [--rounds 3]
                                          [--service-rounds 2] [--no-services]

The bare loop opens, decodes, converts, resizes and saves each file as PNG: the floor any
preprocess must pay. The stage adds safe decoding checks, EXIF handling, pixel and perceptual
hashes, the duplicate search and its outputs. Printed: files per second and the stage/bare ratio
(medians of alternating rounds, and each round's ratio: the disk here is noisy), on the disk and,
for Fashion-MNIST, in memory (tmpfs), where file creation costs next to nothing and the work
itself is compared. For the services: seconds, the machine's cores busy on average meanwhile
(all processes: one replica already keeps more than one core busy in its threaded duplicate
search), and the speed-up of 2 replicas.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import fashion  # noqa: E402
from labelwright.core.runner import LocalRun  # noqa: E402
from labelwright.core.settings import Settings  # noqa: E402

SIZE = 32
MEMORY = "/dev/shm" if Path("/dev/shm").is_dir() else None
"""A tmpfs, where there is one (else the temporary folder stands in)."""


def write_fashion(out: Path, n: int) -> None:
    images, _ = fashion(n)
    out.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(out / f"f{i:05d}.png")


def write_photos(out: Path, n: int) -> None:
    """Real photos (scikit-learn's sample images), randomly cropped and scaled to ~1024 px."""
    from sklearn.datasets import load_sample_image

    sources = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    out.mkdir(parents=True)
    for i in range(n):
        source = sources[i % 2]
        w, h = source.size
        left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        crop = source.crop((left, top, left + 3 * w // 4, top + 3 * h // 4))
        crop.resize((1024, 768), Image.Resampling.BICUBIC).save(out / f"p{i:05d}.jpg", quality=90)


def bare_loop(folder: Path, out: Path) -> float:
    out.mkdir(parents=True)
    started = time.perf_counter()
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR).save(out / f"{path.name}.png")
    return time.perf_counter() - started


def stage(folder: Path, out: Path) -> float:
    run = LocalRun(out, Settings(), {"image_size": SIZE})
    run.ingest(folder)
    started = time.perf_counter()
    run.run(("preprocess",))
    return time.perf_counter() - started


def cpu_ticks() -> tuple[int, int, int]:
    """The machine's CPU time so far, in clock ticks summed over its CPUs: (idle, waiting for
    the disk, all) (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3], fields[4], sum(fields[:8])  # guest time is already inside user time


def wait_until_idle(idle: float = 0.85, timeout: float = 120.0) -> None:
    """Until the machine's CPUs are idle (not even waiting for the disk) for ``idle`` of one second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        idle0, _, total0 = cpu_ticks()
        time.sleep(1.0)
        idle1, _, total1 = cpu_ticks()
        if (idle1 - idle0) / max(total1 - total0, 1) >= idle:
            return


def services(folder: Path, work: Path, replicas: int, store_root: Path) -> tuple[float, float]:
    """Preprocess wall time of one job on `labelwright stack` with N preprocess replicas, its
    object store a folder under ``store_root``, and how many of the machine's cores were busy on
    average meanwhile."""
    from labelwright.core.client import Client
    from labelwright.core.stack import Stack
    from labelwright.core.storage import FileStore

    settings = Settings(namespace=f"lwbench-{uuid.uuid4().hex[:8]}", store=f"file://{store_root / 'store'}",
                        database_url=f"sqlite:///{work / 'jobs.db'}", metrics_port=0)
    with Stack(settings, {"preprocess": replicas}, gateway_port=8765, log_dir=work / "logs") as stack:
        wait_until_idle()  # the other services import TensorFlow as they start
        client = Client(settings, base_url=stack.gateway_url)
        dataset = client.upload(folder)
        os.sync()  # the upload's writes reach the disk before the clock starts
        wait_until_idle()
        job = client.http.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                                 "params": {"until": "preprocess", "image_size": SIZE}}).json()
        started, (idle0, wait0, total0) = time.perf_counter(), cpu_ticks()
        job = client.wait(job["id"], timeout=3600, poll=0.2)
        assert job["status"] == "succeeded", job
        seconds, (idle1, wait1, total1) = time.perf_counter() - started, cpu_ticks()
        idle = (idle1 - idle0 + wait1 - wait0) / max(total1 - total0, 1)
        cores = (1 - idle) * (os.cpu_count() or 1)
        store = FileStore(store_root / "store")
        stage = store.get_json(f"jobs/{job['id']}/summary.json")["stages"]["preprocess"]
        search = store.get_json(f"jobs/{job['id']}/preprocess/summary.json")["duplicate_search_seconds"]
        print(f"{replicas} replica(s): {seconds:.1f} s, {cores:.2f} cores busy; shards {stage.get('shard_seconds')} "
              f"s, merge {stage.get('seconds')} s (duplicate search {search} s)", flush=True)
        return seconds, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion", type=int, default=20_000)
    parser.add_argument("--photos", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/stage runs per file set")
    parser.add_argument("--service-rounds", type=int, default=2, help="alternating 1/2-replica runs per store")
    parser.add_argument("--no-services", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=MEMORY) as memory:
        tmp = Path(tmp)
        sets = []
        for name, count, writer in (("Fashion-MNIST PNG", args.fashion, write_fashion),
                                    ("photos 1024 px JPEG", args.photos, write_photos)):
            folder = tmp / name.split()[0]
            writer(folder, count)
            sets.append((name, count, folder, "disk", tmp))
        # the disk here can be twice as fast one minute as the next (and file creation is the
        # bare loop's largest cost on it); in memory both sides' own work shows
        shutil.copytree(tmp / "Fashion-MNIST", Path(memory) / "Fashion-MNIST")
        sets.append(("Fashion-MNIST PNG", args.fashion, Path(memory) / "Fashion-MNIST", "tmpfs", Path(memory)))
        for name, count, folder, where, work in sets:
            # alternate bare and stage, print each round's ratio and compare the medians
            bare_times, stage_times = [], []
            for r in range(args.rounds):
                bare_times.append(bare_loop(folder, work / f"{folder.name}-bare{r}"))
                stage_times.append(stage(folder, work / f"{folder.name}-stage{r}"))
                bare_s, stage_s = bare_times[-1], stage_times[-1]
                print(f"{name} on {where}, round {r + 1}: bare {count / bare_s:.0f} files/s, stage "
                      f"{count / stage_s:.0f} files/s, ratio {bare_s / stage_s:.2f}", flush=True)
            bare, ours = statistics.median(bare_times), statistics.median(stage_times)
            ratios = sorted(b / s for b, s in zip(bare_times, stage_times, strict=True))
            rows.append((name, count, where, count / bare, count / ours, bare / ours, ratios))
        print("\n| files | n | on | bare Pillow files/s | preprocess stage files/s | stage / bare | per round |")
        print("|---|---|---|---|---|---|---|")
        for name, count, where, bare, ours, ratio, ratios in rows:
            each = " ".join(f"{r:.2f}" for r in ratios)
            print(f"| {name} | {count} | {where} | {bare:.0f} | {ours:.0f} | {ratio:.2f} | {each} |")
        print(f"(medians of {args.rounds} alternating rounds)")
        if not args.no_services:
            # On this machine's disk (ext4 on a virtual disk) creating a file costs 0.05-0.4 ms
            # and the replicas queue for it; in memory (tmpfs) the replicas' own work shows.
            rows = []
            for where, root in (("disk", tmp), ("tmpfs", Path(memory))):
                times: dict[int, list[float]] = {1: [], 2: []}
                busy: dict[int, list[float]] = {1: [], 2: []}
                with tempfile.TemporaryDirectory(dir=root) as store_root:
                    for r in range(args.service_rounds):
                        for replicas in (1, 2):
                            seconds, cores = services(tmp / "Fashion-MNIST", tmp / f"svc{replicas}-{where}-{r}",
                                                      replicas, Path(store_root) / f"{replicas}-{r}")
                            times[replicas].append(seconds)
                            busy[replicas].append(cores)
                rows.append((where, times, {k: statistics.median(v) for k, v in busy.items()}))
            print("\n| services path (upload excluded) | object store on | preprocess replicas | seconds | cores busy "
                  "| speed-up | per round |")
            print("|---|---|---|---|---|---|---|")
            for where, times, cores in rows:
                one, two = statistics.median(times[1]), statistics.median(times[2])
                speedups = " ".join(f"{a / b:.2f}" for a, b in zip(times[1], times[2], strict=True))
                print(f"| {args.fashion} Fashion-MNIST PNG | {where} | 1 | {one:.1f} | {cores[1]:.2f} | 1.00 | |")
                print(f"| {args.fashion} Fashion-MNIST PNG | {where} | 2 | {two:.1f} | {cores[2]:.2f} | "
                      f"{one / two:.2f} | {speedups} |")
            print(f"(medians of {args.service_rounds} alternating rounds)")


if __name__ == "__main__":
    main()
