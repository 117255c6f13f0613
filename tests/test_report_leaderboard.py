"""The report's leaderboard: one order for equal scores in the table and the chart, and a box that scrolls."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes

from tellapart._files import leaderboard_key, rank_by_validation
from tellapart.evaluate import (
    ReportInputs,
    classification_metrics,
    plot_leaderboard,
    render_report,
)

#: Three runs tied on validation accuracy: only loss, seconds and name can order them.
TIED = [
    {"name": "zeta", "val_acc": 0.9, "val_loss": 0.2, "train_seconds": 5.0},
    {"name": "alpha", "val_acc": 0.9, "val_loss": 0.2, "train_seconds": 5.0},
    {"name": "fast", "val_acc": 0.9, "val_loss": 0.2, "train_seconds": 1.0},
    {"name": "sure", "val_acc": 0.9, "val_loss": 0.1, "train_seconds": 9.0},
    {"name": "best", "val_acc": 0.95, "val_loss": 0.5, "train_seconds": 9.0},
    {"name": "svm", "val_acc": 0.9, "train_seconds": 0.1},  # records no loss: loses the tie
]
EXPECTED = ["best", "sure", "fast", "alpha", "zeta", "svm"]


def _chart_labels(monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]) -> list[str]:
    """The chart's bar labels, top to bottom (barh draws bottom-up)."""
    seen: list[str] = []
    original = Axes.set_yticks

    def capture(self: Axes, ticks: Any, labels: Any = None, **kw: Any) -> Any:
        seen.extend(labels or [])
        return original(self, ticks, labels, **kw)

    monkeypatch.setattr(Axes, "set_yticks", capture)
    plot_leaderboard(rows, value_key="val_acc")
    return list(reversed(seen))


def _metrics() -> dict[str, Any]:
    labels = np.array([0, 1, 0, 1])
    return classification_metrics(np.eye(2)[labels] * 0.8 + 0.1, labels, ["a", "b"])


def test_ties_are_broken_by_loss_then_seconds_then_name() -> None:
    assert [r["name"] for r in sorted(TIED, key=leaderboard_key)] == EXPECTED
    assert [r["name"] for r in rank_by_validation(TIED)] == EXPECTED


def test_chart_and_table_list_equal_scores_in_the_same_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _chart_labels(monkeypatch, list(reversed(TIED))) == EXPECTED
    html = render_report(ReportInputs(title="t", metrics=_metrics(), leaderboard=list(reversed(TIED))))
    table = re.search(r'<section id="leaderboard">.*?<tbody>(.*?)</tbody>', html, re.DOTALL)
    assert table is not None
    names = re.findall(r"<tr><td>([a-z]+)</td>", table.group(1))
    assert names == EXPECTED


def test_ranked_rows_keep_their_ranks_and_the_chart_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    ranked = [{"rank": r["rank"], "name": r["name"], "val_acc": r["val_acc"], "val_loss": r.get("val_loss"),
               "train_seconds": r["train_seconds"]} for r in rank_by_validation(TIED)]
    html = render_report(ReportInputs(title="t", metrics=_metrics(), leaderboard=ranked))
    ranks = re.findall(r'<tr><td class="num">(\d+)</td>', html.split('id="leaderboard"')[1].split("</section>")[0])
    assert ranks == [str(k) for k in range(1, len(TIED) + 1)]
    assert _chart_labels(monkeypatch, ranked) == EXPECTED


def test_the_leaderboard_table_sits_in_its_own_scrolling_box_with_breakable_headers() -> None:
    rows = [{"rank": 1, "name": "r2-cnn_m+shift_rotate_scale-seed1", "val_acc": 0.9, "train_seconds": 1.0, "images_per_s": 10.0}]
    html = render_report(ReportInputs(title="t", metrics=_metrics(), leaderboard=rows))
    section = html.split('<section id="leaderboard">')[1].split("</section>")[0]
    assert section.startswith("<h2>Leaderboard</h2>\n<div class=\"table-wrap leaderboard\">")
    assert "train_<wbr>seconds" in section and "images_<wbr>per_<wbr>s" in section
    assert ".table-wrap{overflow-x:auto" in html and "overflow-wrap:anywhere" in html
