"""Is the chosen model really better than another one on the same test images, or just lucky?

McNemar's exact test on the images the two models disagree about (Dietterich 1998 recommends it
for comparing two classifiers on one test set), plus the accuracy difference with a 95% interval
for paired proportions.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PairedComparison", "paired_comparison", "comparison_section"]


@dataclass(frozen=True)
class PairedComparison:
    """The chosen model against ``other`` on the same ``n`` test images."""

    other: str  # the other model's name
    n: int
    accuracy: float  # the chosen model's
    other_accuracy: float
    difference: float  # accuracy - other_accuracy
    difference_ci: tuple[float, float]  # 95%, paired (Newcombe's Wald interval for matched pairs)
    only_chosen_right: int  # images the chosen model gets right and the other wrong
    only_other_right: int
    p_value: float  # McNemar's exact (binomial) test, two-sided
    verdict: str  # one line a reader can act on

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(labels: np.ndarray, chosen: np.ndarray, other: np.ndarray, other_name: str) -> PairedComparison:
    """Compares predicted labels ``chosen`` and ``other`` for the same images (same order as ``labels``)."""
    from scipy.stats import binomtest

    labels, chosen, other = np.asarray(labels), np.asarray(chosen), np.asarray(other)
    if not (len(labels) == len(chosen) == len(other)) or len(labels) == 0:
        raise ValueError("paired comparison needs the same, non-empty set of images for both models")
    a, b = chosen == labels, other == labels
    n = len(labels)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    diff = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    ci = (round(diff - 1.96 * se, 6), round(diff + 1.96 * se, 6))
    p = 1.0 if only_a + only_b == 0 else float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)
    if p < 0.05:
        verdict = f"{'better' if diff > 0 else 'worse'} than {other_name} (McNemar p = {p:.3g})"
    else:
        verdict = f"not distinguishable from {other_name} on these {n} images (McNemar p = {p:.3g})"
    return PairedComparison(
        other=other_name, n=n, accuracy=round(float(a.mean()), 6), other_accuracy=round(float(b.mean()), 6),
        difference=round(diff, 6), difference_ci=ci, only_chosen_right=only_a, only_other_right=only_b,
        p_value=round(p, 6), verdict=verdict,
    )


def comparison_section(chosen_name: str, comparisons: Sequence[PairedComparison]) -> tuple[str, str]:
    """A report section (title, HTML) with one row per comparison."""
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(c.other)}</td><td>{c.accuracy:.4f}</td><td>{c.other_accuracy:.4f}</td>"
        f"<td>{100 * c.difference:+.2f} pp [{100 * c.difference_ci[0]:+.2f}, {100 * c.difference_ci[1]:+.2f}]</td>"
        f"<td>{c.only_chosen_right} / {c.only_other_right}</td><td>{c.p_value:.3g}</td><td>{html.escape(c.verdict)}</td>"
        "</tr>"
        for c in comparisons
    )
    body = (
        f"<p>The chosen model ({html.escape(chosen_name)}) against others on the same test images. "
        "Selection was made on validation before any of these test reads; the test predictions of the "
        "other models are used for this comparison only.</p>"
        "<div style='overflow-x:auto'><table><tr><th>other model</th><th>chosen acc</th><th>other acc</th>"
        "<th>difference (95% CI)</th><th>only chosen right / only other right</th><th>McNemar p</th><th>verdict</th></tr>"
        f"{rows}</table></div>"
    )
    return "Is the chosen model really better?", body


def comparisons_json(comparisons: Sequence[PairedComparison]) -> list[Mapping[str, Any]]:
    return [c.to_json() for c in comparisons]
