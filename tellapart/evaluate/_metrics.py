"""Classification metrics from predicted probabilities, in plain numpy.

:func:`classification_metrics` returns a JSON-serialisable dict; it is what a run writes as
``metrics.json``, so its keys are a stable schema:

``n`` (int)
    Number of evaluated samples.
``accuracy`` (float)
    Fraction of samples whose arg-max class equals the label.
``accuracy_ci`` ([float, float])
    Confidence interval ``[lo, hi]`` for the accuracy (Wilson score interval).
``ci_method`` (str)
    How ``accuracy_ci`` was computed: always ``"wilson"``.
``confidence`` (float)
    Confidence level of ``accuracy_ci``, e.g. ``0.95``.
``loss`` (float)
    Mean negative log-likelihood of the true class (natural log; probabilities are clipped
    below at float64 epsilon, ≈2.2e-16, as scikit-learn's ``log_loss`` does, so one zero
    probability costs ≈36 nats instead of infinity).
``errors`` (int)
    Number of misclassified samples.
``misclassified`` (list of dict)
    Every mistake in sample order, each ``{index, id, true, pred, confidence, true_prob}``:
    ``index`` is the row in ``probs``, ``id`` the caller's sample id (``null`` without ids),
    ``true``/``pred`` are class names, ``confidence`` the probability of the predicted class and
    ``true_prob`` the probability given to the true class.
``most_confident_mistakes`` (list of dict)
    The ``top_mistakes`` entries of ``misclassified`` with the highest ``confidence``, most
    confident first (ties keep sample order).
``confusion_matrix`` (list of list of int)
    K×K counts; row = true class, column = predicted class, both in ``class_names`` order.
``class_names`` (list of str)
    The K class names, index ``i`` being class ``i``.
``per_class`` (list of dict)
    One ``{class, precision, recall, f1, support}`` per class, in class order. A ratio whose
    denominator is zero is 0 (as scikit-learn's ``zero_division=0``).
``macro_avg`` (dict)
    ``{precision, recall, f1, support}``: unweighted mean over all K classes (including classes
    absent from the labels); ``support`` is ``n``.
``weighted_avg`` (dict)
    Same keys, each class weighted by its support; ``support`` is ``n``.
``roc_auc`` (float or null)
    Binary problems only: area under the ROC curve of the probability of class 1 (class index 1
    is the positive class). ``null`` for K > 2 or when only one class is present in the labels.
``ece`` (float)
    Expected calibration error of the top-class confidence, with ``n_bins`` equal-width bins.
``calibration_bins`` (list of dict)
    The reliability table behind ``ece``: one ``{lo, hi, count, confidence, accuracy}`` per bin
    covering ``(lo, hi]`` (the first bin also holds confidence 0); ``confidence`` and
    ``accuracy`` are the bin's means, ``null`` for an empty bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "expected_calibration_error", "wilson_interval"]

# Smallest probability used in the log-loss (float64 machine epsilon, as scikit-learn's
# ``log_loss``): -log(2.2e-16) ≈ 36.04 nats caps one sample's loss.
_LOG_EPS = float(np.finfo(np.float64).eps)
# How far a row of ``probs`` may sum from 1 (float16/float32 softmax outputs drift a little).
_ROW_SUM_TOLERANCE = 1e-3


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is sensible at 0 or n
    successes and for small n.

    Args:
        successes: Number of successes, ``0 <= successes <= n``.
        n: Number of trials, at least 1.
        confidence: Two-sided confidence level, strictly between 0 and 1.

    Returns:
        ``(lo, hi)``, the interval bounds as fractions.

    Raises:
        ValueError: If ``n < 1``, ``successes`` is outside ``[0, n]`` or ``confidence`` is not
            in (0, 1).
    """
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 trials, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    _check_confidence(confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    z2_over_n = z * z / n
    denominator = 1.0 + z2_over_n
    centre = (p + z2_over_n / 2.0) / denominator
    half_width = (z / denominator) * math.sqrt(p * (1.0 - p) / n + z2_over_n / (4.0 * n))
    # Exact bounds at the edges; elsewhere clip tiny floating-point excursions.
    lo = 0.0 if successes == 0 else max(0.0, centre - half_width)
    hi = 1.0 if successes == n else min(1.0, centre + half_width)
    return lo, hi


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error (ECE) with equal-width confidence bins.

    ECE is the support-weighted mean over bins of ``|accuracy - mean confidence|``: 0 for a
    perfectly calibrated model, up to 1.

    Args:
        confidences: Shape (N,), the confidence of each prediction, in [0, 1].
        correct: Shape (N,), whether each prediction was right (bool or 0/1).
        n_bins: Number of equal-width bins over [0, 1]; bin ``i`` covers ``(lo, hi]`` and the
            first bin also holds confidence 0.

    Returns:
        ``(ece, bins)`` where ``bins`` has one ``{lo, hi, count, confidence, accuracy}`` dict
        per bin (mean confidence and accuracy are ``None`` for an empty bin).

    Raises:
        ValueError: On empty or mismatched inputs, confidences outside [0, 1], or
            ``n_bins < 1``.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hits = np.asarray(correct)
    if conf.ndim != 1 or hits.shape != conf.shape:
        raise ValueError(
            "confidences and correct must be 1-D arrays of the same length, got shapes "
            f"{conf.shape} and {hits.shape}"
        )
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one prediction")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if not np.all(np.isfinite(conf)) or conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError("confidences must be finite and within [0, 1]")
    hits = hits.astype(np.float64)

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a confidence equal to an inner edge into the lower bin: bins are (lo, hi].
    bin_of = np.searchsorted(edges[1:-1], conf, side="left")
    counts = np.bincount(bin_of, minlength=n_bins)
    conf_sums = np.bincount(bin_of, weights=conf, minlength=n_bins)
    hit_sums = np.bincount(bin_of, weights=hits, minlength=n_bins)

    ece = 0.0
    bins: list[dict[str, Any]] = []
    for i in range(n_bins):
        count = int(counts[i])
        mean_conf = mean_acc = None
        if count:
            mean_conf = float(conf_sums[i] / count)
            mean_acc = float(hit_sums[i] / count)
            ece += count / conf.size * abs(mean_acc - mean_conf)
        bins.append(
            {
                "lo": float(edges[i]),
                "hi": float(edges[i + 1]),
                "count": count,
                "confidence": mean_conf,
                "accuracy": mean_acc,
            }
        )
    return float(ece), bins


def classification_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_bins: int = 15,
    top_mistakes: int = 24,
) -> dict[str, Any]:
    """Every evaluation number of a classifier, from its predicted probabilities.

    The prediction is the arg-max class (the lowest index on ties). See the module docstring
    for the keys of the returned dict (the ``metrics.json`` schema).

    Args:
        probs: Shape (N, K) with K >= 2, class probabilities; each row sums to 1.
        labels: Shape (N,), the true class index of each sample, in ``[0, K)``.
        class_names: The K class names, in index order.
        ids: Optional N sample ids (e.g. relative file paths) copied into the mistake lists.
        confidence: Confidence level of the accuracy interval.
        n_bins: Number of calibration bins for the ECE and reliability table.
        top_mistakes: How many mistakes ``most_confident_mistakes`` keeps.

    Returns:
        A JSON-serialisable dict of plain Python numbers, strings, lists and ``None``.

    Raises:
        ValueError: If shapes, labels, probabilities or options are inconsistent.
    """
    p, y = _validated(probs, labels, class_names, ids)
    _check_confidence(confidence)
    if top_mistakes < 0:
        raise ValueError(f"top_mistakes must be >= 0, got {top_mistakes}")
    n, k = p.shape
    names = [str(name) for name in class_names]

    pred = np.argmax(p, axis=1)
    top_prob = p[np.arange(n), pred]
    true_prob = p[np.arange(n), y]
    correct = pred == y
    n_correct = int(correct.sum())

    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    per_class, macro_avg, weighted_avg = _precision_recall_f1(cm, names)

    misclassified: list[dict[str, Any]] = [
        {
            "index": i,
            "id": None if ids is None else str(ids[i]),
            "true": names[int(y[i])],
            "pred": names[int(pred[i])],
            "confidence": float(top_prob[i]),
            "true_prob": float(true_prob[i]),
        }
        for i in np.flatnonzero(~correct).tolist()
    ]
    # Stable sort so equally confident mistakes keep sample order.
    by_confidence = sorted(misclassified, key=lambda m: -m["confidence"])

    ece, calibration_bins = expected_calibration_error(
        np.clip(top_prob, 0.0, 1.0), correct, n_bins=n_bins
    )
    lo, hi = wilson_interval(n_correct, n, confidence)
    loss = float(-np.mean(np.log(np.clip(true_prob, _LOG_EPS, 1.0))))

    return {
        "n": n,
        "accuracy": n_correct / n,
        "accuracy_ci": [lo, hi],
        "ci_method": "wilson",
        "confidence": float(confidence),
        "loss": loss,
        "errors": n - n_correct,
        "misclassified": misclassified,
        "most_confident_mistakes": by_confidence[:top_mistakes],
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "per_class": per_class,
        "macro_avg": macro_avg,
        "weighted_avg": weighted_avg,
        "roc_auc": _binary_roc_auc(p[:, 1], y) if k == 2 else None,
        "ece": ece,
        "calibration_bins": calibration_bins,
    }


def _validated(
    probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    ids: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check the inputs of :func:`classification_metrics`; return float64 probs, int64 labels."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D (N, K) array, got shape {p.shape}")
    n, k = p.shape
    if n == 0:
        raise ValueError("probs is empty: there are no samples to evaluate")
    if k < 2:
        raise ValueError(f"probs needs at least 2 classes (columns), got {k}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be a 1-D array of length {n} (rows of probs), got {y.shape}")
    if len(class_names) != k:
        raise ValueError(f"got {len(class_names)} class names for {k} probability columns")
    if ids is not None and len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} samples")
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise ValueError(
            f"labels must be class indices in [0, {k}), got range [{y.min()}, {y.max()}]"
        )
    if not np.all(np.isfinite(p)) or p.min() < 0.0:
        raise ValueError("probs must be finite and non-negative (pass softmax outputs, not logits)")
    worst = float(np.max(np.abs(p.sum(axis=1) - 1.0)))
    if worst > _ROW_SUM_TOLERANCE:
        raise ValueError(
            f"each row of probs must sum to 1 (a row is off by {worst:.3g}); "
            "pass softmax outputs, not logits"
        )
    return p, y


def _check_confidence(confidence: float) -> None:
    """Raise ValueError unless ``confidence`` is a level strictly between 0 and 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with 0 where the denominator is 0."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _precision_recall_f1(
    cm: np.ndarray, names: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Per-class, macro and support-weighted precision/recall/F1 from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_ratio(tp, predicted)
    recall = _safe_ratio(tp, support.astype(np.float64))
    # 2TP / (2TP + FP + FN) equals 2PR / (P + R) and is 0 exactly when that is 0/0.
    f1 = _safe_ratio(2.0 * tp, predicted + support)

    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    ]
    total = int(support.sum())
    weights = support / total
    macro_avg = {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "support": total,
    }
    weighted_avg = {
        "precision": float(weights @ precision),
        "recall": float(weights @ recall),
        "f1": float(weights @ f1),
        "support": total,
    }
    return per_class, macro_avg, weighted_avg


def _binary_roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC-AUC of ``scores`` for ``labels == 1`` (Mann–Whitney U with tied ranks averaged).

    Returns ``None`` when the labels hold only one class, where the AUC is undefined.
    """
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Give every run of tied scores the mean of the 1-based ranks it spans.
    run_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    run_ends = np.r_[run_starts[1:], scores.size]
    mean_ranks = (run_starts + run_ends + 1) / 2.0
    ranks[order] = np.repeat(mean_ranks, run_ends - run_starts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
