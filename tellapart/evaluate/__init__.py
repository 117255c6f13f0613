"""Evaluation: metrics from predicted probabilities, charts, and the self-contained HTML report."""

from tellapart.evaluate._compare import PairedComparison, comparison_section, paired_comparison
from tellapart.evaluate._evaluate import evaluate_run, run_cache
from tellapart.evaluate._ledger import UNFINISHED_NOTE, TestLedger
from tellapart.evaluate._metrics import (
    classification_metrics,
    expected_calibration_error,
    wilson_interval,
)
from tellapart.evaluate._plots import (
    plot_confusion_matrix,
    plot_leaderboard,
    plot_learning_curves,
    plot_reliability,
)
from tellapart.evaluate._report import ReportInputs, format_accuracy, render_report, write_report

__all__ = [
    "PairedComparison",
    "ReportInputs",
    "TestLedger",
    "UNFINISHED_NOTE",
    "comparison_section",
    "paired_comparison",
    "classification_metrics",
    "evaluate_run",
    "run_cache",
    "expected_calibration_error",
    "format_accuracy",
    "plot_confusion_matrix",
    "plot_leaderboard",
    "plot_learning_curves",
    "plot_reliability",
    "render_report",
    "wilson_interval",
    "write_report",
]
