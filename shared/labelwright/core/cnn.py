"""The Keras models labelwright trains: a small CNN from scratch (default) or a pretrained backbone.

TensorFlow is imported inside the functions, so importing this module costs nothing; only the
stages that learn (label, train, evaluate) call it, and only their images install TensorFlow.
Models output logits; probabilities are ``softmax(logits / temperature)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, get_args

import numpy as np

from .settings import Precision

BACKBONES = ("small", "mobilenetv3small", "efficientnetb0")
PRECISIONS: tuple[str, ...] = get_args(Precision)


@lru_cache(maxsize=1)
def cpu_has_bfloat16() -> bool:
    """Whether this x86 CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere TensorFlow
    emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def dtype_policy(precision: str = "auto") -> str:
    """The Keras dtype policy for ``precision``: ``bfloat16`` computes in bfloat16 and keeps the
    weights in float32 (Keras mixed precision); ``auto`` does so where the CPU has native bfloat16.

    Measured on 2 cores with AVX512-BF16 (2026-11-28): one label fold on Fashion-MNIST (10,000
    items, 50 seeds per class) took 84 s instead of 126 s, the label stage's whole scenario 382 s
    instead of 611 s; accuracy moved within the run-to-run spread (fold 0.843 against 0.845, the
    scenario 0.852 against 0.848). Training repeats bit for bit, as in float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bfloat16" if cpu_has_bfloat16() else "float32"
    return "mixed_bfloat16" if precision == "bfloat16" else "float32"


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notes for each fold model are expected, not news
    return keras


def _augmentation(keras, seed: int, flip: bool) -> list:
    """Small shifts only: rotations and zooms cost several points of accuracy on Fashion-MNIST
    with few labels (measured), shifts do not."""
    layers = [keras.layers.RandomTranslation(0.07, 0.07, fill_mode="constant", seed=seed)]
    if flip:
        layers.insert(0, keras.layers.RandomFlip("horizontal", seed=seed + 3))
    return layers


def _small_cnn(keras, x, width: int = 24, dtype: str = "float32"):
    """One 3x3 convolution and a max-pool at full resolution, then blocks of two 3x3 convolutions
    and a max-pool, doubling the filters, until the map is at most 8 pixels wide (one block at
    28-32 px); then a 128-unit dense layer on the flattened map.

    The flattened map keeps where things are, which matters for centred items such as clothes or
    digits: trained on 500 Fashion-MNIST labels for 64 epochs it reached 83% on the other 9,500
    items of a sample against 75% for the previous network, which averaged the map away (and the
    seed-only CNN row of benchmarks/bench_label.py went from 0.62 to 0.81). Heavy dropout because
    it is trained on a few hundred images.

    Width 24 and a single convolution at full resolution, because that layer pair is where a CPU
    spends its time: the two 32-filter convolutions at 28x28 took 150 of the 300 ms that the four
    convolutions of a 128-image training step took on one core (float32, AVX2). Measured
    2026-11-29 (one label fold on Fashion-MNIST 10,000 with 400 seeds, float32, two folds at once
    on 2 cores): the student trained in 133 s instead of 168 s (two 24-filter convolutions) and
    was as accurate (0.826 against 0.820; perfect-threshold coverage 0.517 against 0.516). The
    whole label stage on that sample (50 seeds per class, benchmarks/bench_label.py, same machine
    and day) took 455 s against 752 s with two 24-filter convolutions and about 880 s with the
    earlier two 32-filter ones, at accuracy 0.835 against 0.845 (0.852 for the 32-filter network
    on another float32 machine) and coverage 0.460 against 0.486: about a point, twice what
    rounding alone moves a run (0.848 against 0.852), for the label stage's 10 minutes on a CPU
    without native bfloat16.
    """
    filters = width
    convolutions = 1
    while True:
        for _ in range(convolutions):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(dtype=dtype)(x)
        if x.shape[1] <= 8 or x.shape[2] <= 8:
            break
        filters, convolutions = min(2 * filters, 128), 2
    x = keras.layers.Flatten(dtype=dtype)(x)
    x = keras.layers.Dropout(0.5, dtype=dtype)(x)
    x = keras.layers.Dense(128, activation="relu", name="embedding", dtype=dtype)(x)
    return keras.layers.Dropout(0.5, dtype=dtype)(x)


def _pretrained(keras, x, backbone: str, weights: str | None):
    """A keras.applications backbone; ``weights`` is None, ``"imagenet"`` or a local weights file."""
    if x.shape[-1] == 1:
        x = keras.layers.Concatenate()([x, x, x])
    side = max(int(x.shape[1]), 96)
    x = keras.layers.Resizing(side, side)(x)
    x = keras.layers.Rescaling(255.0)(x)
    constructor = {"mobilenetv3small": keras.applications.MobileNetV3Small,
                   "efficientnetb0": keras.applications.EfficientNetB0}[backbone]
    base = constructor(input_shape=(side, side, 3), include_top=False, weights=weights, pooling="avg")
    x = base(x)
    return keras.layers.Dropout(0.3)(x)


def build_model(input_shape: Sequence[int], n_classes: int, *, backbone: str = "small",
                weights: str | None = None, augment: bool = True, flip: bool = False, seed: int = 0,
                learning_rate: float = 2e-3, jit_compile: bool | str = "auto", precision: str = "auto"):
    """A compiled classifier that maps images in [0, 1] to ``n_classes`` logits (float32).

    ``precision`` applies to the small CNN (see ``dtype_policy``); pretrained backbones stay float32."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    if augment:
        for layer in _augmentation(keras, seed, flip):
            x = layer(x)
    if backbone == "small":
        x = _small_cnn(keras, x, dtype=dtype_policy(precision))
    else:
        x = _pretrained(keras, x, backbone, weights)
    outputs = keras.layers.Dense(n_classes, name="logits", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def fit(model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 64,
        validation: tuple[np.ndarray, np.ndarray] | None = None, patience: int = 5,
        class_weight: dict[int, float] | None = None, sample_weight: np.ndarray | None = None,
        callbacks: Sequence[Any] = ()) -> dict[str, list[float]]:
    """Train; with ``validation``, stop early on validation loss and keep the best weights."""
    keras = _keras()
    hooks = list(callbacks)
    if validation is not None and len(validation[0]):
        hooks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True))
    else:
        validation = None
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=validation,
                        class_weight=class_weight, sample_weight=sample_weight, callbacks=hooks,
                        shuffle=True, verbose=0)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def predict_logits(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    if not len(x):
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE of stated confidences against whether each prediction was right (equal-width bins)."""
    if not len(correct):
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (the top-label definition)."""
    return calibration_error(probs.max(axis=1), probs.argmax(axis=1) == labels, bins)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Weights inversely proportional to class frequency (scikit-learn's "balanced")."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


def load_model(path: str):
    return _keras().models.load_model(path)
