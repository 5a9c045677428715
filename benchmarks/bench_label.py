"""Label-stage benchmark: labelwright's label stage against the peers a user would pick, side by
side in one run on real data (scikit-learn digits, Fashion-MNIST).

Peers: scikit-learn LabelSpreading (kNN kernel) on pixels, and the same small CNN trained on the
seed labels alone, for as many steps as one of the stage's teacher CNNs. For the flipped-seed
scenario, confident learning on out-of-fold logistic regression probabilities is the peer for
label-issue detection.

    python benchmarks/bench_label.py [--only digits|fashion50|fashion10|flipped] [--limit 10000]

Prints one table: accuracy over all unlabelled items; precision and coverage of auto-accepted
items at target 0.98 (for peers: their own probability >= 0.98); expected calibration error on
the unlabelled items (true labels); label-issue precision/recall; wall seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import choose_seeds, digits, fashion, flip, write_image_folder  # noqa: E402
from labelwright.core import cnn  # noqa: E402
from labelwright.core.images import load_pixels, model_input  # noqa: E402
from labelwright.core.runner import LocalRun  # noqa: E402
from labelwright.core.settings import Settings  # noqa: E402
from labelwright.labeler.stage import TEACHER_STEPS, _epochs_for  # noqa: E402

TARGET = 0.98


def scores(truth: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, accepted: np.ndarray) -> dict:
    correct = predicted == truth
    return {
        "accuracy": correct.mean(),
        "precision": correct[accepted].mean() if accepted.any() else float("nan"),
        "coverage": accepted.mean(),
        "ece": cnn.calibration_error(confidence, correct),
    }


def issue_scores(flagged: set, flipped: set) -> dict:
    if not flipped:
        return {}
    tp = len(flagged & flipped)
    precision = tp / len(flagged) if flagged else 0.0
    recall = tp / len(flipped)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"issue_precision": precision, "issue_recall": recall, "issue_f1": f1}


def run_labelwright(folder: Path, work: Path, params: dict) -> tuple[LocalRun, float]:
    run = LocalRun(work, Settings(), params)
    run.ingest(folder)
    run.run(("preprocess",))
    started = time.perf_counter()
    run.run(("label",))
    return run, time.perf_counter() - started


def scenario(name: str, images, labels, per_class: int, flip_fraction: float, params: dict, rows: list,
             sample: int = 0) -> None:
    seeds = choose_seeds(labels, per_class, sample)
    flipped = flip(labels, seeds, flip_fraction, sample) if flip_fraction else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        truth_by_name = write_image_folder(folder, images, labels, seeds, flipped)
        run, seconds = run_labelwright(folder, Path(tmp) / "out", params)
        labelled = {r["file_name"]: r for r in run.store.get_csv("labels.csv")}
        rest = sorted(n for n, r in labelled.items() if r["source"] == "model")
        truth = np.array([truth_by_name[n] for n in rest])
        predicted = np.array([int(labelled[n]["label"].removeprefix("c")) for n in rest])
        confidence = np.array([float(labelled[n]["confidence"]) for n in rest])
        accepted = np.array([labelled[n]["status"] == "accepted" for n in rest])
        flagged = {r["file_name"] for r in run.store.get_csv("label/label_issues.csv")}
        flipped_names = {n for n in truth_by_name if n.startswith("c") and int(n[1:n.index("/")]) != truth_by_name[n]}
        summary = run.store.get_json("label/summary.json")
        print(f"{name}: effort {summary['effort']} ({summary['effort_estimate']}), "
              f"label stage {seconds:.0f} s", flush=True)
        rows.append({"scenario": name, "method": "labelwright", "seconds": seconds,
                     **scores(truth, predicted, confidence, accepted), **issue_scores(flagged, flipped_names)})

        names, pixels = load_pixels(run.store, run.store.ref("preprocess/pixels.npz"))
        position = {n: i for i, n in enumerate(names)}
        seed_names = sorted(n for n, r in labelled.items() if r["source"] == "human")
        x = model_input(pixels)
        x_seed, x_rest = x[[position[n] for n in seed_names]], x[[position[n] for n in rest]]
        y_seed = np.array([int(n[1:n.index("/")]) for n in seed_names])
        peers(name, x_seed, y_seed, x_rest, truth, seed_names, flipped_names, params, rows)


def peers(name, x_seed, y_seed, x_rest, truth, seed_names, flipped_names, params, rows) -> None:
    from labelwright.labeler.calibration import confident_joint_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.semi_supervised import LabelSpreading

    started = time.perf_counter()
    flat_seed, flat_rest = x_seed.reshape(len(x_seed), -1), x_rest.reshape(len(x_rest), -1)
    spreading = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=100)
    spreading.fit(np.concatenate([flat_seed, flat_rest]), np.concatenate([y_seed, -np.ones(len(x_rest), int)]))
    probs = spreading.label_distributions_[len(x_seed):]
    probs = np.nan_to_num(probs, nan=1.0 / probs.shape[1])
    predicted = spreading.classes_[probs.argmax(1)]
    rows.append({"scenario": name, "method": "LabelSpreading (kNN)", "seconds": time.perf_counter() - started,
                 **scores(truth, predicted, probs.max(1), probs.max(1) >= TARGET)})

    started = time.perf_counter()
    model = cnn.build_model(x_seed.shape[1:], int(y_seed.max()) + 1, seed=0)
    # trained as one of the stage's teacher CNNs is (same steps, same epochs): the seeds alone
    epochs = _epochs_for(len(x_seed), 32, int(params.get("label_steps", TEACHER_STEPS)))
    cnn.fit(model, x_seed, y_seed, epochs=epochs, batch_size=32)
    probs = cnn.softmax(cnn.predict_logits(model, x_rest))
    rows.append({"scenario": name, "method": "seed-only CNN", "seconds": time.perf_counter() - started,
                 **scores(truth, probs.argmax(1), probs.max(1), probs.max(1) >= TARGET)})

    if flipped_names:
        started = time.perf_counter()
        oof = cross_val_predict(LogisticRegression(max_iter=2000, C=0.1), flat_seed, y_seed, cv=5,
                                method="predict_proba")
        flagged = {seed_names[i] for i in np.nonzero(confident_joint_issues(oof, y_seed))[0]}
        rows.append({"scenario": name, "method": "confident learning on OOF logistic regression",
                     "seconds": time.perf_counter() - started, **issue_scores(flagged, flipped_names)})


def print_table(rows: list[dict]) -> None:
    columns = ["scenario", "method", "accuracy", "precision", "coverage", "ece", "issue_precision",
               "issue_recall", "issue_f1", "seconds"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            cells.append(f"{value:.3f}" if isinstance(value, float) and c != "seconds" else
                         f"{value:.1f}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=["digits", "fashion50", "fashion10", "flipped"])
    parser.add_argument("--limit", type=int, default=10_000, help="Fashion-MNIST sample size")
    parser.add_argument("--param", action="append", default=[], help="label stage parameter KEY=VALUE")
    parser.add_argument("--sample", type=int, default=0, help="which random sample and seeds (0: the table's)")
    args = parser.parse_args()
    params = {"target_precision": TARGET, "image_size": 28}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = float(value) if "." in value else int(value) if value.lstrip("-").isdigit() else value
    wanted = args.only or ["digits", "fashion50", "fashion10", "flipped"]
    rows: list[dict] = []
    if "digits" in wanted:
        images, labels = digits()
        scenario("digits, 10 seeds/class", images, labels, 10, 0.0, params, rows, args.sample)
        print_table(rows)
    if {"fashion50", "fashion10", "flipped"} & set(wanted):
        images, labels = fashion(args.limit, args.sample)
        for key, name, per_class, fraction in (
                ("fashion50", f"Fashion-MNIST {args.limit}, 50 seeds/class", 50, 0.0),
                ("fashion10", f"Fashion-MNIST {args.limit}, 10 seeds/class", 10, 0.0),
                ("flipped", f"Fashion-MNIST {args.limit}, 50 seeds/class, 10% flipped", 50, 0.1)):
            if key in wanted:
                scenario(name, images, labels, per_class, fraction, params, rows, args.sample)
                print_table(rows)
    print("\nfinal table")
    print_table(rows)


if __name__ == "__main__":
    main()
