"""Preprocess benchmark: the stage against a bare Pillow loop on the same files, in the same run,
and the services path with 1 and 2 preprocess replicas (needs RabbitMQ).

    python benchmarks/bench_preprocess.py [--fashion 20000] [--photos 2000] [--no-services]

The bare loop opens, decodes, converts, resizes and saves each file as PNG: the floor any
preprocess must pay. The stage adds safe decoding checks, EXIF handling, pixel and perceptual
hashes, the duplicate search and its outputs. Printed: files per second and the stage/bare ratio.
"""

from __future__ import annotations

import argparse
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


def services(folder: Path, work: Path, replicas: int) -> float:
    """Preprocess wall time of one job on `labelwright stack` with N preprocess replicas."""
    from labelwright.core.client import Client
    from labelwright.core.stack import Stack

    settings = Settings(namespace=f"lwbench-{uuid.uuid4().hex[:8]}", store=f"file://{work / 'store'}",
                        database_url=f"sqlite:///{work / 'jobs.db'}", metrics_port=0)
    with Stack(settings, {"preprocess": replicas}, gateway_port=8765, log_dir=work / "logs") as stack:
        client = Client(settings, base_url=stack.gateway_url)
        dataset = client.upload(folder)
        job = client.http.post("/v1/jobs", json={"dataset_id": dataset["id"],
                                                 "params": {"until": "preprocess", "image_size": SIZE,
                                                            "shard_size": 2500}}).json()
        started = time.perf_counter()
        job = client.wait(job["id"], timeout=3600, poll=0.2)
        assert job["status"] == "succeeded", job
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion", type=int, default=20_000)
    parser.add_argument("--photos", type=int, default=2_000)
    parser.add_argument("--no-services", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, count, writer in (("Fashion-MNIST PNG", args.fashion, write_fashion),
                                    ("photos 1024 px JPEG", args.photos, write_photos)):
            folder = tmp / name.split()[0]
            writer(folder, count)
            bare = bare_loop(folder, tmp / f"{folder.name}-bare")
            ours = stage(folder, tmp / f"{folder.name}-stage")
            rows.append((name, count, count / bare, count / ours, bare / ours))
            print(f"{name}: bare {count / bare:.0f} files/s, stage {count / ours:.0f} files/s", flush=True)
        print("\n| files | n | bare Pillow files/s | preprocess stage files/s | stage / bare |")
        print("|---|---|---|---|---|")
        for name, count, bare, ours, ratio in rows:
            print(f"| {name} | {count} | {bare:.0f} | {ours:.0f} | {ratio:.2f} |")
        if not args.no_services:
            folder = tmp / "Fashion-MNIST"
            one = services(folder, tmp / "svc1", 1)
            two = services(folder, tmp / "svc2", 2)
            print("\n| services path (upload excluded) | preprocess replicas | seconds | speed-up |")
            print("|---|---|---|---|")
            print(f"| {args.fashion} Fashion-MNIST PNG | 1 | {one:.1f} | 1.00 |")
            print(f"| {args.fashion} Fashion-MNIST PNG | 2 | {two:.1f} | {one / two:.2f} |")


if __name__ == "__main__":
    main()
