"""The evaluate stage: honest metrics of the trained model on the test split.

Metrics are reported twice: on the human-labelled test items (ground truth: the number to trust)
and on all test items (model labels included). Writes ``evaluate/evaluation.json``,
``evaluate/confusion_matrix.png`` and ``evaluate/report.html``.
"""

from __future__ import annotations

import html
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from labelwright.core import cnn
from labelwright.core.images import load_pixels, model_input, select
from labelwright.core.messages import HUMAN_SOURCES, StageResult, Task
from labelwright.core.pipeline import Progress, StageError
from labelwright.core.settings import Settings
from labelwright.core.storage import Store, read_csv_bytes
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support


def metrics(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Loss, accuracy, per-class precision/recall/F1, confusion matrix and calibration error."""
    if not len(y):
        return {"items": 0}
    labels = list(range(len(classes)))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    return {
        "items": int(len(y)),
        "loss": float(log_loss(y, np.clip(probs, 1e-12, 1), labels=labels)),
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(np.mean(f1[support > 0])) if (support > 0).any() else 0.0,
        "expected_calibration_error": cnn.expected_calibration_error(probs, y),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
    }


def plot_confusion(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def report_html(evaluation: dict) -> str:
    def table(block: dict) -> str:
        if not block.get("items"):
            return "<p>No items.</p>"
        rows = "".join(
            f"<tr><td>{html.escape(c)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
            f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>" for c, m in block["per_class"].items())
        return (f"<p>items {block['items']} · accuracy <b>{block['accuracy']:.4f}</b> · loss {block['loss']:.4f} · "
                f"macro F1 {block['macro_f1']:.4f} · ECE {block['expected_calibration_error']:.4f}</p>"
                f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
                f"{rows}</table>")

    return f"""<!doctype html><html><head><meta charset="utf-8"><title>labelwright evaluation</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}</style></head><body>
<h1>labelwright evaluation</h1>
<h2>Human-labelled test items (the number to trust)</h2>{table(evaluation["human"])}
<h2>All test items (model labels included)</h2>{table(evaluation["all"])}
<h2>Confusion matrix (all test items)</h2><img src="confusion_matrix.png" alt="confusion matrix">
</body></html>"""


def run(task: Task, store: Store, settings: Settings, progress: Progress | None = None) -> StageResult:
    """Evaluate the trained model on the test split."""
    started = time.perf_counter()
    test = read_csv_bytes(store.read_ref(task.inputs["split.test"]))
    if not test:
        raise StageError("the test split is empty: there is nothing to evaluate on")
    train_summary = json.loads(store.read_ref(task.inputs["train.summary"]))
    classes = train_summary["classes"]
    unknown = sorted({r["label"] for r in test} - set(classes))
    if unknown:
        raise StageError(f"test labels the model never saw: {', '.join(unknown)}")
    class_index = {c: i for i, c in enumerate(classes)}
    names, pixels = load_pixels(store, task.inputs["preprocess.pixels"])
    x = model_input(select(names, pixels, [r["file_name"] for r in test]), train_summary["channels"])
    y = np.array([class_index[r["label"]] for r in test])
    human = np.array([r["source"] in HUMAN_SOURCES for r in test])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(store.read_ref(task.inputs["train.model"]))
        model = cnn.load_model(str(path))
    probs = cnn.softmax(cnn.predict_logits(model, x))
    evaluation = {
        "classes": classes,
        "human": metrics(probs[human], y[human], classes),
        "all": metrics(probs, y, classes),
        "seconds": round(time.perf_counter() - started, 3),
    }
    base = f"{task.prefix}evaluate/"
    outputs = {
        "evaluation": store.put_json(f"{base}evaluation.json", evaluation),
        "confusion_matrix": store.put(f"{base}confusion_matrix.png",
                                      plot_confusion(evaluation["all"]["confusion_matrix"], classes,
                                                     "confusion matrix, all test items"), "image/png"),
        "report": store.put_text(f"{base}report.html", report_html(evaluation), "text/html"),
    }
    return StageResult(outputs=outputs, counts={"items": len(test), "human": int(human.sum())})
