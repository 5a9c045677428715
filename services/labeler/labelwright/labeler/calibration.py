"""Calibration and acceptance: temperature scaling, per-class thresholds for a precision target,
Clopper–Pearson bounds, and confident learning for label issues."""

from __future__ import annotations

import numpy as np
from labelwright.core.cnn import softmax
from scipy.optimize import minimize_scalar
from scipy.stats import beta


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 minimising the NLL of softmax(logits / T)."""
    if not len(labels):
        return 1.0

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0))))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def clopper_pearson_upper(errors: int, n: int, alpha: float = 0.05) -> float:
    """One-sided (1 - alpha) upper bound on an error rate seen as ``errors`` out of ``n``."""
    if n == 0:
        return 1.0
    if errors >= n:
        return 1.0
    return float(beta.ppf(1 - alpha, errors + 1, n - errors))


def class_threshold(confidences: np.ndarray, target: float) -> float:
    """The lowest confidence t such that the items at or above t have a mean confidence ≥ target.

    With calibrated confidences the mean confidence of a set estimates its precision, so
    accepting exactly those items meets the target in expectation. ``inf`` when none qualifies.
    """
    if not len(confidences):
        return float("inf")
    ordered = np.sort(confidences)[::-1]
    running_mean = np.cumsum(ordered) / np.arange(1, len(ordered) + 1)
    ok = np.nonzero(running_mean >= target)[0]
    if not len(ok):
        return float("inf")
    return float(ordered[ok[-1]])


def label_issues(probs: np.ndarray, given: np.ndarray) -> list[tuple[int, int, float]]:
    """Confident learning (Northcutt et al., 2021), "confident joint" off-diagonals.

    Per class j the threshold t_j is the mean out-of-fold probability of j over items labelled j;
    an item labelled y whose most likely class among those above their thresholds is k ≠ y is an
    issue. Returns ``(row, suggested_class, score)`` with score = p_k - p_y (higher is surer).
    """
    n_classes = probs.shape[1]
    thresholds = np.array([probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(n_classes)])
    issues = []
    for i, y in enumerate(given):
        above = np.nonzero(probs[i] >= thresholds)[0]
        if not len(above):
            continue
        k = int(above[np.argmax(probs[i, above])])
        if k != y:
            issues.append((i, k, float(probs[i, k] - probs[i, y])))
    return sorted(issues, key=lambda t: -t[2])
