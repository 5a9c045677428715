"""The train stage: a Keras CNN on the train split, early stopping on val, balanced class weights.

Writes ``train/model.keras`` (the best epoch by validation loss), ``train/history.json`` and
``train/summary.json`` (which names the classes in the model's output order).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from labelwright.core import cnn
from labelwright.core.images import is_grey, load_pixels, model_input, select
from labelwright.core.messages import StageResult, Task
from labelwright.core.pipeline import Progress, StageError
from labelwright.core.settings import Settings
from labelwright.core.storage import Store, read_csv_bytes


def _progress_callback(progress: Progress | None, epochs: int):
    import keras

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if progress:
                loss = (logs or {}).get("val_loss", (logs or {}).get("loss", float("nan")))
                progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs} loss {loss:.4f}")

    return Report()


def run(task: Task, store: Store, settings: Settings, progress: Progress | None = None) -> StageResult:
    """Train the classifier and save it."""
    started = time.perf_counter()
    params = task.params
    epochs = int(params.get("epochs", settings.epochs))
    seed = int(params.get("seed", settings.seed))
    backbone = params.get("backbone", "small")
    train = read_csv_bytes(store.read_ref(task.inputs["split.train"]))
    val = read_csv_bytes(store.read_ref(task.inputs["split.val"]))
    if not train:
        raise StageError("the train split is empty")
    classes = sorted({r["label"] for r in train} | {r["label"] for r in val})
    class_index = {c: i for i, c in enumerate(classes)}
    names, pixels = load_pixels(store, task.inputs["preprocess.pixels"])
    channels = (1 if is_grey(pixels) else 3) if backbone == "small" else 3
    x_all = model_input(pixels, channels)
    x_train = select(names, x_all, [r["file_name"] for r in train])
    y_train = np.array([class_index[r["label"]] for r in train])
    x_val = select(names, x_all, [r["file_name"] for r in val])
    y_val = np.array([class_index[r["label"]] for r in val], dtype=int)

    model = cnn.build_model(x_all.shape[1:], len(classes), backbone=backbone, weights=params.get("weights"),
                            flip=bool(params.get("flip", False)), seed=seed,
                            precision=str(params.get("precision", settings.precision)))
    history = cnn.fit(model, x_train, y_train, epochs=epochs, batch_size=int(params.get("batch_size", 64)),
                      validation=(x_val, y_val), patience=int(params.get("patience", 6)),
                      class_weight=cnn.balanced_class_weight(y_train, len(classes)),
                      callbacks=[_progress_callback(progress, epochs)])

    base = f"{task.prefix}train/"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        model_ref = store.put_file(f"{base}model.keras", path)
    val_loss = history.get("val_loss", [])
    summary = {
        "classes": classes,
        "channels": channels,
        "input_shape": list(x_all.shape[1:]),
        "backbone": backbone,
        "train_items": len(train),
        "val_items": len(val),
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(val_loss)) + 1 if val_loss else None,
        "best_val_loss": float(min(val_loss)) if val_loss else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    outputs = {
        "model": model_ref,
        "history": store.put_json(f"{base}history.json", history),
        "summary": store.put_json(f"{base}summary.json", summary),
    }
    return StageResult(outputs=outputs, counts={"items": len(train), "epochs": summary["epochs_run"]})
