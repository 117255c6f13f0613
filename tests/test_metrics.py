"""Metrics agree with scikit-learn and with known statistical values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from tellapart.evaluate import (
    classification_metrics,
    expected_calibration_error,
    wilson_interval,
)

DOCUMENTED_KEYS = {
    "n",
    "accuracy",
    "accuracy_ci",
    "ci_method",
    "confidence",
    "loss",
    "errors",
    "misclassified",
    "most_confident_mistakes",
    "confusion_matrix",
    "class_names",
    "per_class",
    "macro_avg",
    "weighted_avg",
    "roc_auc",
    "ece",
    "calibration_bins",
}


def _random_predictions(n: int, k: int, seed: int, never_predicted: int | None = None):
    """Noisy but informative probabilities; optionally one class is never the arg-max."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    if never_predicted is not None:
        logits[:, never_predicted] -= 100.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True), labels


def _check_against_sklearn(probs: np.ndarray, labels: np.ndarray) -> dict:
    k = probs.shape[1]
    names = [f"class{i}" for i in range(k)]
    metrics = classification_metrics(probs, labels, names)
    pred = probs.argmax(axis=1)
    all_labels = list(range(k))

    assert metrics["n"] == len(labels)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert metrics["errors"] == int((pred != labels).sum())
    assert metrics["confusion_matrix"] == confusion_matrix(labels, pred, labels=all_labels).tolist()
    with warnings.catch_warnings():
        # scikit-learn 1.9 renamed log_loss's y_pred to y_proba; positional works on every version.
        warnings.simplefilter("ignore", FutureWarning)
        expected_loss = log_loss(labels, probs, labels=all_labels)
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-9)

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=all_labels, zero_division=0
    )
    got = metrics["per_class"]
    assert [row["class"] for row in got] == names
    np.testing.assert_allclose([row["precision"] for row in got], precision)
    np.testing.assert_allclose([row["recall"] for row in got], recall)
    np.testing.assert_allclose([row["f1"] for row in got], f1)
    assert [row["support"] for row in got] == support.tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, pred, labels=all_labels, average=average, zero_division=0
        )
        got_avg = metrics[f"{average}_avg"]
        assert (got_avg["precision"], got_avg["recall"], got_avg["f1"]) == pytest.approx((p, r, f))
        assert got_avg["support"] == len(labels)
    return metrics


def test_binary_matches_sklearn_including_roc_auc() -> None:
    probs, labels = _random_predictions(300, 2, seed=0)
    metrics = _check_against_sklearn(probs, labels)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))


def test_roc_auc_handles_tied_scores() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    p1 = np.array([0.2, 0.5, 0.5, 0.8, 0.5, 0.2, 0.9, 0.1])
    probs = np.stack([1 - p1, p1], axis=1)
    metrics = classification_metrics(probs, labels, ["neg", "pos"])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, p1))


def test_multiclass_with_a_class_never_predicted_matches_sklearn() -> None:
    probs, labels = _random_predictions(400, 4, seed=1, never_predicted=2)
    metrics = _check_against_sklearn(probs, labels)
    assert metrics["per_class"][2]["precision"] == 0.0  # zero_division=0, not NaN
    assert metrics["roc_auc"] is None  # binary only


def test_class_absent_from_labels_and_predictions_counts_as_zero() -> None:
    probs, labels = _random_predictions(200, 3, seed=2, never_predicted=2)
    labels = np.where(labels == 2, 0, labels)
    metrics = _check_against_sklearn(probs, labels)
    assert metrics["per_class"][2] == {
        "class": "class2",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }


def test_binary_with_one_class_present_has_null_roc_auc() -> None:
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    metrics = classification_metrics(probs, np.array([0, 0, 0]), ["a", "b"])
    assert metrics["roc_auc"] is None


def test_schema_keys_and_json_round_trip() -> None:
    probs, labels = _random_predictions(120, 3, seed=3)
    ids = [f"img_{i:03d}.png" for i in range(120)]
    metrics = classification_metrics(probs, labels, ["a", "b", "c"], ids=ids, top_mistakes=5)
    assert set(metrics) == DOCUMENTED_KEYS
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics
    assert metrics["ci_method"] == "wilson"
    lo, hi = metrics["accuracy_ci"]
    assert lo < metrics["accuracy"] < hi


def test_mistake_lists() -> None:
    probs = np.array(
        [
            [0.9, 0.1],  # right
            [0.2, 0.8],  # wrong, confidence 0.8
            [0.6, 0.4],  # wrong, confidence 0.6
            [0.05, 0.95],  # wrong, confidence 0.95
            [0.3, 0.7],  # right
        ]
    )
    labels = np.array([0, 0, 1, 0, 1])
    metrics = classification_metrics(
        probs, labels, ["cat", "dog"], ids=list("abcde"), top_mistakes=2
    )
    assert [m["index"] for m in metrics["misclassified"]] == [1, 2, 3]
    assert metrics["misclassified"][0] == {
        "index": 1,
        "id": "b",
        "true": "cat",
        "pred": "dog",
        "confidence": 0.8,
        "true_prob": 0.2,
    }
    assert [m["index"] for m in metrics["most_confident_mistakes"]] == [3, 1]
    assert metrics["errors"] == 3
    no_ids = classification_metrics(probs, labels, ["cat", "dog"])
    assert no_ids["misclassified"][0]["id"] is None


def test_loss_is_finite_when_the_true_class_has_zero_probability() -> None:
    metrics = classification_metrics(np.array([[1.0, 0.0]]), np.array([1]), ["a", "b"])
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 30


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (8, 10, (0.4902, 0.9433)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (50, 100, (0.4038, 0.5962)),
    ],
)
def test_wilson_interval_known_values(
    successes: int, n: int, expected: tuple[float, float]
) -> None:
    lo, hi = wilson_interval(successes, n)
    assert (lo, hi) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_edges_are_exact_and_wider_at_higher_confidence() -> None:
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    lo95, hi95 = wilson_interval(30, 40, 0.95)
    lo99, hi99 = wilson_interval(30, 40, 0.99)
    assert lo99 < lo95 < hi95 < hi99


@pytest.mark.parametrize(
    ("successes", "n", "confidence"), [(1, 0, 0.95), (11, 10, 0.95), (-1, 10, 0.95), (5, 10, 1.0)]
)
def test_wilson_interval_rejects_bad_input(successes: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, n, confidence)


def test_ece_is_near_zero_when_perfectly_calibrated() -> None:
    # In each bin, the fraction correct equals the confidence exactly.
    confidences, correct = [], []
    for conf in (0.55, 0.65, 0.75, 0.85, 0.95):
        hits = round(conf * 100)
        confidences += [conf] * 100
        correct += [True] * hits + [False] * (100 - hits)
    ece, bins = expected_calibration_error(np.array(confidences), np.array(correct), n_bins=10)
    assert ece == pytest.approx(0.0, abs=1e-12)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 500
    assert bins[0]["count"] == 0 and bins[0]["accuracy"] is None


def test_ece_of_overconfident_coin_flip_is_one_half() -> None:
    ece, bins = expected_calibration_error(np.ones(10), np.array([1, 0] * 5), n_bins=15)
    assert ece == pytest.approx(0.5)
    assert bins[-1] == {
        "lo": pytest.approx(14 / 15),
        "hi": 1.0,
        "count": 10,
        "confidence": 1.0,
        "accuracy": 0.5,
    }


def test_ece_bins_are_left_open_right_closed() -> None:
    _, bins = expected_calibration_error(np.array([0.0, 0.5, 0.5000001, 1.0]), np.ones(4), n_bins=2)
    assert [b["count"] for b in bins] == [2, 2]


def test_metrics_ece_uses_top_class_confidence() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    metrics = classification_metrics(probs, labels, ["a", "b"], n_bins=10)
    # Bin (0.8, 0.9]: confidence 0.9 with 50% right; bin (0.7, 0.8]: confidence 0.8 all right.
    assert metrics["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    assert len(metrics["calibration_bins"]) == 10


@pytest.mark.parametrize(
    ("probs", "labels", "names"),
    [
        (np.full((4,), 0.5), np.zeros(4, dtype=int), ["a", "b"]),  # 1-D probs
        (np.ones((4, 1)), np.zeros(4, dtype=int), ["a"]),  # K < 2
        (np.full((4, 2), 0.5), np.zeros(3, dtype=int), ["a", "b"]),  # N mismatch
        (np.full((4, 2), 0.5), np.zeros((4, 1), dtype=int), ["a", "b"]),  # 2-D labels
        (np.full((4, 2), 0.5), np.zeros(4, dtype=int), ["a", "b", "c"]),  # names mismatch
        (np.full((4, 2), 0.5), np.array([0, 1, 2, 0]), ["a", "b"]),  # label out of range
        (np.full((4, 2), 0.5), np.array([0.0, 0.5, 1.0, 0.0]), ["a", "b"]),  # fractional labels
        (np.full((4, 2), 2.0), np.zeros(4, dtype=int), ["a", "b"]),  # logits, not probs
        (np.array([[np.nan, 1.0]] * 4), np.zeros(4, dtype=int), ["a", "b"]),  # NaN
        (np.zeros((0, 2)), np.zeros(0, dtype=int), ["a", "b"]),  # empty
    ],
)
def test_bad_inputs_raise_value_error(
    probs: np.ndarray, labels: np.ndarray, names: list[str]
) -> None:
    with pytest.raises(ValueError):
        classification_metrics(probs, labels, names)


def test_ids_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="ids"):
        classification_metrics(np.full((3, 2), 0.5), np.zeros(3, dtype=int), ["a", "b"], ids=["x"])


def test_ece_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([0.5, 0.6]), np.array([1]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([1.5]), np.array([1]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([0.5]), np.array([1]), n_bins=0)
