"""The label stage: calibration maths, and the stage itself on real digits with real TensorFlow."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from conftest import FAST_PARAMS
from labelwright.core.cnn import softmax
from labelwright.core.pipeline import StageError
from labelwright.core.runner import LocalRun
from labelwright.core.settings import Settings
from labelwright.labeler.calibration import (
    acceptance_thresholds,
    class_threshold,
    clopper_pearson_upper,
    fit_temperature,
    label_issues,
    too_many_errors,
)
from labelwright.labeler.stage import _interleave, _places, fold_workers
from sample_digits import true_label
from scipy.stats import binom


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 4000)
    true_logits = rng.normal(size=(4000, 3))
    true_logits[np.arange(4000), labels] += 1.0
    sampled = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    temperature = fit_temperature(true_logits * 3.0, sampled)
    assert 2.5 < temperature < 3.5


def test_threshold_meets_the_target_on_calibrated_confidences():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=confidence.size) < confidence
    t = class_threshold(confidence, 0.95)
    accepted = confidence >= t
    assert correct[accepted].mean() >= 0.94
    assert accepted.mean() == pytest.approx(0.2, abs=0.02), "mean of U(0.5, 1) above t is 0.95 at t = 0.9"
    assert class_threshold(np.array([0.5, 0.6]), 0.98) == float("inf")


def test_thresholds_tighten_when_held_out_seeds_miss_the_target():
    rng = np.random.default_rng(2)
    confidence = rng.uniform(0.9, 1.0, 5000)
    predicted = rng.integers(0, 2, 5000)
    held_confidence = np.full(100, 0.995)
    held_predicted = np.repeat([0, 1], 50)
    eligible = np.array([True, True])
    honest = held_predicted.copy()
    honest[[0, 1, 50]] = [1, 1, 0]  # 3 errors in 100 accepted: more than a 0.98 target allows, but not significantly
    assert not too_many_errors(3, 100, 0.98) and not too_many_errors(2, 50, 0.98)
    thresholds, effective, _ = acceptance_thresholds(confidence, predicted, held_confidence, held_predicted,
                                                     honest, eligible, 0.98)
    assert effective == 0.98 and thresholds.max() < 0.97
    overconfident = held_predicted.copy()
    overconfident[:8] = 1  # 8 errors among the seeds accepted at 0.995
    assert too_many_errors(8, 100, 0.98)
    held_confidence[:50] = np.linspace(0.96, 0.999, 50)
    thresholds, effective, _ = acceptance_thresholds(confidence, predicted, held_confidence, held_predicted,
                                                     overconfident, eligible, 0.98)
    accepted = held_confidence >= thresholds[held_predicted]
    assert effective > 0.98
    errors = int((held_predicted[accepted] != overconfident[accepted]).sum())
    assert errors < 8 and not too_many_errors(errors, int(accepted.sum()), 0.98)
    thresholds, _, _ = acceptance_thresholds(confidence, predicted, held_confidence, held_predicted, honest,
                                             np.array([True, False]), 0.98)
    assert thresholds[1] == float("inf")


def test_a_class_whose_held_out_seeds_miss_the_target_gets_a_stricter_threshold_of_its_own():
    rng = np.random.default_rng(4)
    predicted = np.repeat([0, 1, 2], 3000)
    confidence = rng.uniform(0.9, 1.0, predicted.size)  # the shared threshold for 0.98 lies near 0.96
    held_predicted = np.repeat([0, 1, 2], [60, 200, 60])
    held_confidence = np.concatenate([np.linspace(0.95, 1.0, 60), np.full(200, 0.99), np.full(60, 0.9)])
    held_confidence[260:270] = 0.99  # only 10 of class 2's seeds lie above the threshold
    truth = held_predicted.copy()
    truth[12:15] = 2  # 3 wrong class-0 seeds at 0.960-0.962, just above the shared threshold
    truth[260] = 0  # 1 wrong class-2 seed among its 10: a test alone would fail, but one error proves little
    assert too_many_errors(3, 48, 0.98) and too_many_errors(1, 10, 0.98)
    assert not too_many_errors(4, 258, 0.98)  # overall the seeds look fine
    thresholds, effective, class_effective = acceptance_thresholds(confidence, predicted, held_confidence,
                                                                   held_predicted, truth, np.ones(3, bool), 0.98)
    assert effective == 0.98 and thresholds[1] == thresholds[2]
    assert thresholds[0] > thresholds[1] and class_effective[0] > 0.98 == class_effective[1] == class_effective[2]
    mine = (held_predicted == 0) & (held_confidence >= thresholds[0])
    assert (truth[mine] != 0).sum() < 2 or not too_many_errors(int((truth[mine] != 0).sum()), int(mine.sum()), 0.98)
    accepted = confidence >= thresholds[predicted]
    assert confidence[accepted & (predicted == 0)].mean() >= class_effective[0], "class 0 meets it on its own"


def test_one_threshold_for_all_classes_accepts_more_at_the_same_overall_precision():
    rng = np.random.default_rng(3)
    predicted = np.repeat([0, 1, 2], 4000)
    confidence = np.concatenate([rng.uniform(0.9, 1.0, 4000), rng.uniform(0.6, 1.0, 4000), rng.uniform(0.6, 1.0, 4000)])
    correct = rng.uniform(size=confidence.size) < confidence  # calibrated by construction
    held = (np.ones(10), np.zeros(10, dtype=int), np.zeros(10, dtype=int))  # seeds that agree
    eligible = np.array([True, True, False])
    overall, _, _ = acceptance_thresholds(confidence, predicted, *held, eligible, 0.97)
    per_class, _, _ = acceptance_thresholds(confidence, predicted, *held, eligible, 0.97, per_class=True)
    assert overall[0] == overall[1] and overall[2] == per_class[2] == float("inf")
    assert per_class[0] < per_class[1]
    for thresholds in (overall, per_class):
        accepted = confidence >= thresholds[predicted]
        assert not accepted[predicted == 2].any()
        assert correct[accepted].mean() >= 0.96
    each_class = confidence >= per_class[predicted]
    assert correct[each_class & (predicted == 1)].mean() >= 0.96, "per class: the hard class meets it on its own"
    assert (confidence >= overall[predicted]).sum() > (confidence >= per_class[predicted]).sum()


def test_fold_workers_are_capped_by_the_folds():
    assert fold_workers(1, 5) == 1 and fold_workers(8, 5) == 5
    assert 1 <= fold_workers(0, 5) <= 5


def test_clopper_pearson_upper_bound():
    assert clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(0, 100) == pytest.approx(0.0295, abs=1e-3)
    assert clopper_pearson_upper(5, 100) > 0.05


def test_confident_learning_flags_a_flipped_label():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    given = np.array([0, 0, 1, 1, 1])
    issues = label_issues(probs, given)
    assert [(row, suggested) for row, suggested, _ in issues] == [(4, 0)]


def _label(tmp_path, source, params=None, without: tuple[str, ...] = ()):
    """Preprocess and label ``source`` with FAST_PARAMS (less the keys ``without``) and ``params``."""
    fast = {key: value for key, value in FAST_PARAMS.items() if key not in without}
    run = LocalRun(tmp_path / "out", Settings(), {**fast, **(params or {})})
    run.ingest(source)
    run.run(("preprocess", "label"))
    return run.store


@pytest.mark.slow
def test_stage_labels_everything_keeps_seeds_and_never_accepts_thin_classes(tmp_path, digits_dir):
    import shutil

    source = tmp_path / "in"
    shutil.copytree(digits_dir, source)
    for extra in sorted((source / "9").iterdir())[3:]:
        extra.rename(source / f"was9_{extra.name}")  # class 9 keeps only 3 seeds
    # folds in two processes, the effort chosen on training costs measured in one of them
    store = _label(tmp_path, source, {"label_workers": 2, "label_effort": "auto", "label_time_budget": 1e6})
    labels = store.get_csv("labels.csv")
    assert len(labels) == 300 and set(labels[0]) == {"file_name", "label", "confidence", "source", "status"}
    seeds = [r for r in labels if r["source"] == "human"]
    assert len(seeds) == 93 and all(r["status"] == "accepted" and r["label"] == r["file_name"].split("/")[0]
                                    for r in seeds)
    assert not [r for r in labels if r["label"] == "9" and r["source"] == "model" and r["status"] == "accepted"]
    summary = store.get_json("label/summary.json")
    assert any("'9'" in w for w in summary["warnings"]) and summary["thresholds"]["9"] is None
    # 93 seeds cannot confirm 98% on their own (0 errors in 93 still allow 3.2%), so once anything
    # is auto-accepted the user is told that the estimate rests on the calibration
    assert summary["accepted"] > 0 and summary["error_rate_upper_95"] > 0.02
    assert any("held-out seeds lie above the thresholds" in w for w in summary["warnings"])
    assert summary["fold_workers"] == 2
    assert summary["effort"] == "high" and summary["teacher_cnns"] == 3
    costs = summary["effort_estimate"]["costs"]
    assert set(costs) == {"model", "step32", "step128", "epoch"} and all(0 <= cost < 30 for cost in costs.values())
    assert costs["step32"] > 0 and costs["step128"] > 0 and costs["model"] > 0
    review = store.get_csv("label/review.csv")
    assert len(review) == summary["needs_review"] + summary["audit"]["accepted_in_queue"]
    assert [int(r["priority"]) for r in review] == list(range(1, len(review) + 1))
    for name in ("coverage", "estimated_precision", "error_rate_upper_95", "expected_calibration_error"):
        assert name in summary


@pytest.mark.slow
def test_accepted_labels_meet_the_target_and_a_flipped_seed_is_flagged(tmp_path, digits_dir):
    """True labels of the unlabelled digits are known (file digit_<i>.png is scikit-learn's item i)."""
    import shutil

    source = tmp_path / "in"
    shutil.copytree(digits_dir, source)
    wrong = sorted((source / "3").iterdir())[0]
    (source / "8").mkdir(exist_ok=True)
    wrong.rename(source / "8" / wrong.name)  # a 3 labelled as 8
    store = _label(tmp_path, source, {"label_steps": 150, "student_steps": 60, "image_size": 16,
                                      "label_workers": 1})  # folds in the stage's own process
    accepted = [r for r in store.get_csv("labels.csv") if r["source"] == "model" and r["status"] == "accepted"]
    correct = [int(r["label"]) == true_label(r["file_name"]) for r in accepted]
    assert len(accepted) >= 60, "at least a third of the 207 unlabelled digits is auto-accepted"
    # Target 0.98, but 100 seeds calibrate it only roughly (README, Benchmarks) and ~70 accepted
    # items measure it only roughly: 4 or more errors among 74 happen in 6% of runs at exactly 98%. So
    # the errors must be plausible at 98% (one-sided binomial test, 1%), not below a fixed count.
    errors = len(correct) - sum(correct)
    assert binom.sf(errors - 1, len(correct), 0.02) >= 0.01, f"{errors} wrong among {len(correct)} accepted"
    issues = {r["file_name"]: r for r in store.get_csv("label/label_issues.csv")}
    flagged = issues[f"8/{wrong.name}"]
    assert flagged["given_label"] == "8" and flagged["suggested_label"] == "3" and float(flagged["score"]) > 0.5
    assert len(issues) <= 5, "a handful of flags among 100 seeds, not a flood"


@pytest.mark.slow
def test_the_light_effort_labels_with_the_teachers_alone_and_keeps_its_promise(tmp_path, digits_dir):
    """``label_effort=light`` (what ``auto`` falls back to on a slow machine) trains no student:
    the folds' teachers label, and what they auto-accept still holds up against the true digits."""
    store = _label(tmp_path, digits_dir, {"label_effort": "light", "label_steps": 150, "label_workers": 1},
                   without=("student_steps",))
    summary = store.get_json("label/summary.json")
    assert (summary["effort"], summary["teacher_cnns"], summary["student_steps"]) == ("light", 1, 0)
    assert "no student" in summary["method"]
    labels = [r for r in store.get_csv("labels.csv") if r["source"] == "model"]
    assert len(labels) == 200 and all(0 < float(r["confidence"]) <= 1 for r in labels)
    accepted = [int(r["label"]) == true_label(r["file_name"]) for r in labels if r["status"] == "accepted"]
    assert len(accepted) >= 60, "at least a third of the unlabelled digits is auto-accepted"
    errors = len(accepted) - sum(accepted)
    assert binom.sf(errors - 1, len(accepted), 0.02) >= 0.01, f"{errors} wrong among {len(accepted)} accepted"


QUIET_COSTS = {"model": 1.3, "step32": 0.01, "step128": 0.025, "epoch": 0.02}


def _replace_folds(monkeypatch, folds_for, costs: dict[str, float] | list[dict[str, float]] | None = None,
                   probes: list | None = None) -> None:
    """Replace the label stage's fold training (TensorFlow) with ``folds_for(true, jobs)``, which
    returns each fold's probabilities for every item given the items' true digits (the digits
    fixture's file digit_<i>.png is scikit-learn's item i); ``costs`` stand for the measured cost
    of training where the effort is chosen by estimate (a list: what successive probes measure),
    and each probe's costs are appended to ``probes``. Everything after the folds (calibration,
    thresholds, confident learning, outputs) stays real."""
    measured = iter(costs) if isinstance(costs, list) else itertools.repeat(costs or QUIET_COSTS)
    probes = [] if probes is None else probes
    from labelwright.labeler import stage
    names: list[str] = []
    real_load = stage.load_pixels

    def load_pixels(store, ref):
        found, pixels = real_load(store, ref)
        names[:] = found
        return found, pixels

    def folds(views_args, jobs, workers, progress, level):
        def probe() -> dict[str, float]:
            probes.append(next(measured))
            return probes[-1]

        chosen = level(probe) if callable(level) else level
        return chosen, folds_for(np.array([true_label(name) for name in names]), jobs)

    monkeypatch.setattr(stage, "load_pixels", load_pixels)
    monkeypatch.setattr(stage, "_run_folds", folds)


def _stand_in_folds(monkeypatch, right: float, sure_if_right: tuple[float, float], **probing) -> None:
    """A stand-in fold model that knows the true digit of a share ``right`` of the items, with logit
    margins drawn from ``sure_if_right`` where it is right and from (0, 3) where it is wrong."""

    def folds_for(true, jobs):
        rng = np.random.default_rng(len(jobs))
        out = []
        for _ in jobs:
            guess = np.where(rng.random(len(true)) < right, true, rng.integers(0, 10, len(true)))
            logits = rng.normal(0.0, 1.0, (len(true), 10))
            sure = np.where(guess == true, rng.uniform(*sure_if_right, len(true)), rng.uniform(0.0, 3.0, len(true)))
            logits[np.arange(len(true)), guess] += sure
            out.append(softmax(logits))
        return out

    _replace_folds(monkeypatch, folds_for, **probing)


def test_auto_effort_trains_more_only_where_its_estimate_fits_the_time_budget(tmp_path, digits_dir, monkeypatch):
    """``label_effort=auto`` estimates from measured training costs how long each effort would take
    and takes the high one only where its estimate is within 60% of ``label_time_budget``."""
    from labelwright.labeler import stage

    _stand_in_folds(monkeypatch, right=0.95, sure_if_right=(4.0, 8.0))
    params = {"label_effort": "auto", "student_steps": 600, "label_workers": 2}
    summary = _label(tmp_path / "a", digits_dir, params).get_json("label/summary.json")
    seconds = summary["effort_estimate"]["seconds"]
    # 3 folds, 2 at once; per fold one teacher CNN on at most 67 seeds (FAST_PARAMS' 40 steps of
    # 32: 20 epochs of 3 steps) and a student on all 300 items (30 epochs, the clip, of 3 steps;
    # the student is the teacher's CNN trained further, so no network is built for it)
    teacher = 1.3 + 20 * (3 * 0.01 + 0.02)
    student = 30 * (3 * 0.025 + 0.02)
    assert seconds["standard"] == pytest.approx(3 / 2 * (teacher + student + 2 * 300 / 128 * 0.025 / 3), abs=0.1)
    assert seconds["high"] > seconds["standard"] and summary["effort"] == "high"
    assert (summary["teacher_cnns"], summary["student_steps"]) == (3, 600)  # the explicit student_steps wins
    assert "3 small CNNs averaged" in summary["method"]
    tight = _label(tmp_path / "b", digits_dir, {**params, "label_time_budget": seconds["high"] / 0.6 - 1})
    assert tight.get_json("label/summary.json")["effort"] == "standard"
    assert stage.EFFORTS["standard"]["teacher_cnns"] == tight.get_json("label/summary.json")["teacher_cnns"] == 1
    assert not any("label_time_budget" in w for w in tight.get_json("label/summary.json")["warnings"])
    over = _label(tmp_path / "c", digits_dir, {**params, "label_time_budget": seconds["standard"] / 2})
    assert any(f"estimated at {seconds['standard']:.0f} s even at the standard effort" in w
               for w in over.get_json("label/summary.json")["warnings"])


def test_a_high_effort_estimate_just_past_its_bar_is_timed_again_and_the_quicker_steps_count(
        tmp_path, digits_dir, monkeypatch):
    """A probe that caught the machine busy throughout times every step slower. Where that puts the
    high effort's estimate past 60% of ``label_time_budget`` but within 75%, ``auto`` times training
    again and takes each step's lower cost; further past, one probe decides."""
    from labelwright.labeler import stage

    params = {"label_effort": "auto", "student_steps": 600, "label_workers": 2}
    busy = {**QUIET_COSTS, "step32": 0.012, "step128": 0.03, "epoch": 0.024}  # steps 1.2x as slow

    def summary_for(name: str, costs: list[dict[str, float]], **budget: float) -> tuple[dict, list]:
        """The run's summary and the costs its probes measured, the probes measuring ``costs``."""
        probes: list = []
        _stand_in_folds(monkeypatch, right=0.95, sure_if_right=(4.0, 8.0), costs=costs, probes=probes)
        return _label(tmp_path / name, digits_dir, {**params, **budget}).get_json("label/summary.json"), probes

    summary, probes = summary_for("quiet", [QUIET_COSTS])
    quiet = summary["effort_estimate"]
    assert probes == [QUIET_COSTS] and "first_costs" not in quiet
    budget = (quiet["seconds"]["high"] + 0.05) / stage.AUTO_BUDGET_SHARE  # the quiet estimate just fits

    summary, probes = summary_for("busy", [busy, QUIET_COSTS], label_time_budget=budget)
    estimate = summary["effort_estimate"]
    assert probes == [busy, QUIET_COSTS] and summary["effort"] == "high"
    assert estimate["first_costs"] == busy and estimate["costs"] == QUIET_COSTS
    assert estimate["seconds"] == quiet["seconds"]

    # now the quiet probe comes first: the busy one cannot make the steps dearer
    summary, probes = summary_for("tight", [QUIET_COSTS, busy], label_time_budget=quiet["seconds"]["high"] / 0.7)
    assert probes == [QUIET_COSTS, busy] and summary["effort"] == "standard"
    assert summary["effort_estimate"]["costs"] == QUIET_COSTS

    # busy: past 75% of the budget
    summary, probes = summary_for("far", [busy], label_time_budget=quiet["seconds"]["high"] / 0.8)
    assert probes == [busy] and summary["effort"] == "standard" and "first_costs" not in summary["effort_estimate"]


def test_fits_that_catch_the_machine_busy_do_not_set_the_training_costs(monkeypatch):
    # stalls of 1 s (0.1 s a step) in one of the fits that time a step on 32 images and in all
    # three that time a step on 128 must not make the job look slow enough for a lighter effort
    from labelwright.labeler import stage

    fit, stalled = stage.cnn.fit, []

    def fit_that_stalls(model, x, y, **kwargs):
        batch = kwargs.get("batch_size")
        if len(x) == 10 * batch and (batch == 128 or not stalled):
            stalled.append(batch)
            time.sleep(1.0)
        return fit(model, x, y, **kwargs)

    monkeypatch.setattr(stage.cnn, "fit", fit_that_stalls)
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    costs = stage._Views(x, 4, {}, 0, "float32").training_costs()
    assert stalled == [32, 128, 128, 128]
    assert 0 < costs["step32"] < 0.08 and 0 < costs["step128"] < 0.08 and costs["epoch"] >= 0


def test_auto_effort_drops_the_student_where_even_the_standard_effort_would_overrun_the_budget(
        tmp_path, digits_dir, monkeypatch):
    """On a machine too slow for the standard effort within ``label_time_budget``, ``auto`` takes
    the light one (each fold's teacher, no student) where its estimate fits 90% of the budget, and
    cuts the teacher's steps as far as it must, never under 30%; past that it says that the
    budget is overrun even so."""
    from labelwright.labeler import stage

    _stand_in_folds(monkeypatch, right=0.95, sure_if_right=(4.0, 8.0))
    def summary_for(name: str, budget: float) -> dict:
        params = {"label_effort": "auto", "label_workers": 2, "label_time_budget": budget}
        return _label(tmp_path / name, digits_dir, params, without=("label_steps", "student_steps")).get_json(
            "label/summary.json")

    seconds = summary_for("full", 1e6)["effort_estimate"]["seconds"]
    assert seconds["light"] < seconds["standard"] < seconds["high"]
    slow = summary_for("slow", seconds["standard"])  # the standard effort fits, but not 90% of the budget
    assert (slow["effort"], slow["teacher_cnns"], slow["student_steps"]) == ("light", 1, 0)
    assert slow["teacher_steps"] == stage.TEACHER_STEPS == 1000
    assert slow["effort_estimate"]["step_share"] == 1 and "no student" in slow["method"]
    assert any(f"estimated at {seconds['standard']:.0f} s, over 90% of the label_time_budget" in w
               and "(no student)" in w for w in slow["warnings"])
    assert not any("even at" in w for w in slow["warnings"])

    slower = summary_for("slower", seconds["light"])  # not even the light effort fits 90%
    share, estimate = slower["effort_estimate"]["step_share"], slower["effort_estimate"]["seconds"]
    assert stage.MIN_STEP_SHARE <= share < 1 and slower["teacher_steps"] == round(stage.TEACHER_STEPS * share)
    assert estimate["light"] <= 0.9 * seconds["light"] and slower["student_steps"] == 0
    assert any(f"its teacher CNN trained {share:.0%} of its steps" in w for w in slower["warnings"])

    hopeless = summary_for("hopeless", seconds["light"] / 10)
    assert hopeless["effort_estimate"]["step_share"] == stage.MIN_STEP_SHARE and hopeless["teacher_steps"] == 300
    assert any("even at the light effort, over the label_time_budget" in w for w in hopeless["warnings"])


def test_wrong_seed_labels_that_hold_back_acceptance_are_named(tmp_path, digits_dir, monkeypatch):
    """Ten of the 100 seed labels are wrong. The held-out check counts them as model errors and
    tightens the target; the summary must say which file lists the suspects."""
    import shutil

    _stand_in_folds(monkeypatch, right=0.96, sure_if_right=(6.0, 16.0))
    source = tmp_path / "in"
    shutil.copytree(digits_dir, source)
    flipped = set()
    for digit, wrong in [(d, sorted((source / str(d)).iterdir())[0]) for d in range(10)]:  # one per class
        wrong.rename(source / str((digit + 1) % 10) / wrong.name)
        flipped.add(f"{(digit + 1) % 10}/{wrong.name}")
    store = _label(tmp_path, source)
    summary = store.get_json("label/summary.json")
    issues = {r["file_name"] for r in store.get_csv("label/label_issues.csv")}
    assert len(issues & flipped) >= 8, "the wrong seed labels are flagged"
    assert summary["effective_target_precision"] > 0.98
    tightened = [w for w in summary["warnings"] if w.startswith("held-out seeds disagreed")]
    assert tightened and f"{len(issues)} seed labels look wrong" in tightened[0]
    assert "label/label_issues.csv" in tightened[0]


def test_a_run_that_accepts_nothing_says_why(tmp_path, digits_dir, monkeypatch):
    """A model right on half the items, and no surer where it is right: nothing can reach 98%."""
    _stand_in_folds(monkeypatch, right=0.5, sure_if_right=(0.0, 3.0))
    store = _label(tmp_path, digits_dir)
    summary = store.get_json("label/summary.json")
    assert summary["accepted"] == 0 and summary["needs_review"] == 200
    assert any(w.startswith("no label was auto-accepted") and "label/review.csv" in w for w in summary["warnings"])


def test_an_image_unlike_every_seed_is_never_auto_accepted_however_sure_the_model(tmp_path, digits_dir, monkeypatch):
    """The held-out seeds are what calibration is checked on; an unlabelled image farther from every
    seed than any of them was from its fold's seeds (here: a digit with its colours inverted) goes
    to review even where the model is sure of it, and the summary says why."""
    import shutil

    from PIL import Image, ImageOps

    source = tmp_path / "in"
    shutil.copytree(digits_dir, source)
    odd = sorted(source.glob("digit_*.png"))[0]
    ImageOps.invert(Image.open(odd).convert("L")).save(odd)
    _stand_in_folds(monkeypatch, right=1.0, sure_if_right=(8.0, 10.0))  # right and sure on every item
    store = _label(tmp_path, source)
    status = {r["file_name"]: r["status"] for r in store.get_csv("labels.csv")}
    summary = store.get_json("label/summary.json")
    assert status[odd.name] == "needs_review"
    assert odd.name in {r["file_name"] for r in store.get_csv("label/review.csv")}
    assert 1 <= summary["beyond_seed_reach"] <= 10, "the inverted digit, and only a few ordinary ones"
    assert summary["accepted"] >= 190
    assert any(w.startswith(f"{summary['beyond_seed_reach']} confident labels are not auto-accepted")
               for w in summary["warnings"])


def test_review_answers_train_the_folds_but_leave_the_temperature_to_the_seeds(tmp_path, digits_dir, monkeypatch):
    """The review queue hands out the least confident items first, and a model is often right on
    those more often than its low confidence says. Fitted on them too, the temperature would
    sharpen every confidence, the sure ones as well, which is where acceptance happens (README:
    with 100 answers on Fashion-MNIST, 10 seeds per class, precision 0.970 instead of 0.982).
    Here the stand-in model is right on 97% of the items however sure it is, the same in every
    fold; 40 answers from the top of the queue (its audit items aside, see below) must change
    labels, not the temperature. A seed label confirmed (or corrected) in review still
    calibrates: the input chose it, not the queue."""
    from labelwright.core.runner import apply_review

    def folds_for(true, jobs):
        rng = np.random.default_rng(0)
        guess = np.where(rng.random(len(true)) < 0.97, true, rng.integers(0, 10, len(true)))
        logits = rng.normal(0.0, 1.0, (len(true), 10))
        logits[np.arange(len(true)), guess] += rng.uniform(0.0, 8.0, len(true))
        return [softmax(logits)] * len(jobs)

    _replace_folds(monkeypatch, folds_for)
    out = tmp_path / "out"
    store = _label(tmp_path, digits_dir)
    before = store.get_json("label/summary.json")
    first = [r["file_name"] for i, r in enumerate(store.get_csv("label/review.csv")[:50]) if (i + 1) % 5][:40]
    answers = tmp_path / "answers.csv"
    seed = sorted((digits_dir / "3").iterdir())[0]  # a seed label confirmed in review stays a seed
    answers.write_text("file_name,label\n" + "".join(f"{n},{true_label(n)}\n" for n in first)
                       + f"3/{seed.name},3\n")
    apply_review(answers, out, Settings())
    after = store.get_json("label/summary.json")
    labels = {r["file_name"]: r for r in store.get_csv("labels.csv")}
    assert all(labels[n]["source"] == "review" and labels[n]["label"] == str(true_label(n)) for n in first)
    assert after["review_labels"] == 41 and after["calibration_labels"] == before["calibration_labels"] == 100
    assert after["temperature"] == pytest.approx(before["temperature"])


@pytest.mark.slow
def test_no_seeds_or_one_class_fails_readably(tmp_path, digits_dir):
    import shutil

    one_class = tmp_path / "one"
    shutil.copytree(digits_dir / "3", one_class / "3")
    for f in list((digits_dir).glob("*.png"))[:20]:
        shutil.copy(f, one_class)
    with pytest.raises(StageError, match="only one class"):
        _label(tmp_path / "a", one_class)
    none = tmp_path / "none"
    none.mkdir()
    for f in list((digits_dir).glob("*.png"))[:20]:
        shutil.copy(f, none)
    with pytest.raises(StageError, match="no seed labels"):
        _label(tmp_path / "b", none)


@pytest.mark.slow
def test_pretrained_backbone_builds_and_trains_without_downloaded_weights():
    from labelwright.core import cnn

    model = cnn.build_model((16, 16, 1), 3, backbone="mobilenetv3small", weights=None)
    x = np.random.default_rng(0).random((8, 16, 16, 1)).astype("float32")
    history = cnn.fit(model, x, np.array([0, 1, 2, 0, 1, 2, 0, 1]), epochs=1, batch_size=4)
    assert cnn.predict_logits(model, x).shape == (8, 3) and len(history["loss"]) == 1


def test_precision_auto_takes_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    from labelwright.core import cnn

    assert cnn.dtype_policy("float32") == "float32"
    assert cnn.dtype_policy("bfloat16") == "mixed_bfloat16"
    monkeypatch.setattr(cnn, "cpu_has_bfloat16", lambda: False)
    assert cnn.dtype_policy("auto") == "float32"
    monkeypatch.setattr(cnn, "cpu_has_bfloat16", lambda: True)
    assert cnn.dtype_policy("auto") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="unknown precision"):
        cnn.dtype_policy("float16")


@pytest.mark.slow
def test_bfloat16_cnn_learns_and_its_saved_model_gives_the_same_float32_logits(tmp_path):
    from labelwright.core import cnn

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.random((60, 16, 16, 1)).astype("float32") * 0.3
    for c in range(3):  # each class lights its own band of rows
        x[y == c, 5 * c:5 * c + 5] += 0.7
    model = cnn.build_model((16, 16, 1), 3, precision="bfloat16", augment=False)
    assert {layer.compute_dtype for layer in model.layers if "conv" in layer.name} == {"bfloat16"}
    cnn.fit(model, x, y, epochs=15, batch_size=16)
    logits = cnn.predict_logits(model, x)
    assert model.output.dtype == "float32"
    assert (logits.argmax(axis=1) == y).mean() >= 0.9
    model.save(tmp_path / "model.keras")
    reloaded = cnn.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(cnn.predict_logits(reloaded, x), logits, rtol=1e-5, atol=1e-5)


def test_the_review_queue_hands_out_a_random_audit_sample_whose_answers_calibrate(tmp_path, digits_dir,
                                                                                  monkeypatch):
    """Answers to the queue's uncertain items must not calibrate (above), which left a user with
    few seeds no way to firm up the promise inside the loop. Every fifth place of the queue goes
    to an audit sample instead: images picked at random, auto-accepted ones included, the same
    on every run over the input; answers to them calibrate like seed labels."""
    from labelwright.core.runner import apply_review

    def folds_for(true, jobs):
        rng = np.random.default_rng(0)
        guess = np.where(rng.random(len(true)) < 0.9, true, (true + 1) % 10)
        logits = rng.normal(0.0, 1.0, (len(true), 10))
        logits[np.arange(len(true)), guess] += rng.uniform(2.0, 10.0, len(true))
        return [softmax(logits)] * len(jobs)

    _replace_folds(monkeypatch, folds_for)
    store = _label(tmp_path, digits_dir, {"review_audit_share": 0.1})
    before = store.get_json("label/summary.json")
    review = store.get_csv("label/review.csv")
    status = {r["file_name"]: r["status"] for r in store.get_csv("labels.csv")}
    audit = [r["file_name"] for i, r in enumerate(review) if (i + 1) % 5 == 0][:20]
    assert before["audit"] == {"share": 0.1, "sample": 20, "answered": 0, "in_queue": 20,
                               "accepted_in_queue": sum(status[n] == "accepted" for n in audit)}
    assert 0 < before["audit"]["accepted_in_queue"] < 20  # a sample of all items, not of the unsure ones
    assert len(review) == before["needs_review"] + before["audit"]["accepted_in_queue"]
    others = [r["file_name"] for i, r in enumerate(review[:25]) if (i + 1) % 5]
    assert all(status[n] == "needs_review" for n in others)

    answers = tmp_path / "answers.csv"
    answers.write_text("file_name,label\n" + "".join(f"{n},{true_label(n)}\n" for n in audit[:12] + others))
    apply_review(answers, tmp_path / "out", Settings())
    after = store.get_json("label/summary.json")
    assert after["review_labels"] == 32 and after["calibration_labels"] == before["calibration_labels"] + 12
    assert after["audit"] == {**after["audit"], "sample": 20, "answered": 12, "in_queue": 8}
    assert after["temperature"] != pytest.approx(before["temperature"])
    queue = [r["file_name"] for r in store.get_csv("label/review.csv")]
    assert [queue[i] for i in range(4, 40, 5)] == audit[12:]  # the same sample, its unanswered rest


def test_the_audit_items_places_are_named_as_the_queue_holds_them():
    """Every fifth place while other items last, then every place."""
    def places(others: int, audit: int) -> str:
        order = _interleave(np.arange(others), np.arange(others, others + audit), 5)
        return _places(order, np.arange(others + audit) >= others, 5)

    assert places(40, 10) == "every 5th place from the top"
    assert places(37, 34) == "every 5th place from the top, and every place from place 47 on"
    assert places(4, 1) == "every 5th place from the top"
    assert places(4, 3) == "every 5th place from the top, and every place from place 6 on"
    assert places(0, 3) == "every place"


def test_the_warning_sends_the_user_to_the_audit_items_until_none_is_left(tmp_path, digits_dir, monkeypatch):
    """100 seeds cannot back 98% (no error in 100 still allows 3%): the warning says what would.
    While audit items wait in the queue it names them; once all are answered, it asks for random
    seed labels or a larger audit sample instead of sending the user back to an empty list."""
    from labelwright.core.runner import apply_review
    _stand_in_folds(monkeypatch, right=1.0, sure_if_right=(8.0, 10.0))
    store = _label(tmp_path, digits_dir, {"review_audit_share": 0.05})

    def advice() -> str:
        summary = store.get_json("label/summary.json")
        return next(w for w in summary["warnings"] if "held-out seeds lie above the thresholds" in w)

    # nearly every label is accepted, so the queue runs out of other items and the audit sample
    # fills its end: the warning says from which place
    queue = [r["file_name"] for r in store.get_csv("label/review.csv")]  # the audit sample is in it
    first = (len(queue) - 10) // 4 * 5 + (len(queue) - 10) % 4 + 1  # after the last other item
    assert (f"answer the audit items of label/review.csv (every 5th place from the top, and every place from "
            f"place {first} on:") in advice()
    answers = tmp_path / "answers.csv"
    answers.write_text("file_name,label\n" + "".join(f"{n},{true_label(n)}\n" for n in queue))
    apply_review(answers, tmp_path / "out", Settings())
    assert store.get_json("label/summary.json")["audit"] == {
        "share": 0.05, "sample": 10, "answered": 10, "in_queue": 0, "accepted_in_queue": 0}
    assert "answer the audit items" not in advice()
    assert "label more images picked at random as seed labels, or raise review_audit_share" in advice()
    assert "(all 10 images of this one are answered)" in advice()
