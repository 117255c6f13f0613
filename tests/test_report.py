"""The HTML report is complete, self-contained, escaped, and renders in a real browser."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tellapart.evaluate import (
    ReportInputs,
    classification_metrics,
    format_accuracy,
    plot_confusion_matrix,
    plot_leaderboard,
    plot_learning_curves,
    plot_reliability,
    render_report,
    write_report,
)

ALL_SECTIONS = (
    "summary",
    "warnings",
    "leaderboard",
    "learning-curves",
    "confusion-matrix",
    "per-class",
    "calibration",
    "mistakes",
    "config",
    "environment",
)
CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    """Collects section ids (in order), img src and a href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.section_ids: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("id"):
            self.section_ids.append(values["id"])
        if values.get("src") is not None:
            self.srcs.append(values["src"])
        if values.get("href") is not None:
            self.hrefs.append(values["href"])


def _parse(html_text: str) -> _Collector:
    collector = _Collector()
    collector.feed(html_text)
    return collector


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def full_inputs() -> ReportInputs:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=90)
    logits = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = classification_metrics(
        probs,
        labels,
        ["<b>cat</b>", "dog", "bird"],
        ids=[f"img/{i}.png" for i in range(90)],
        top_mistakes=8,
    )
    mistakes = metrics["most_confident_mistakes"]
    # Thumbnails for all but the last shown mistake, which must fall back to a text card.
    thumbnails = {
        m["index"]: (_png if i % 2 else _jpeg)((40 * i % 256, 90, 200))
        for i, m in enumerate(mistakes[:-1])
    }
    history = [
        {
            "epoch": e,
            "wall_time": 2.0 * e,
            "train_loss": 1 / e,
            "train_acc": 1 - 0.5 / e,
            "val_loss": 1.2 / e,
            "val_acc": None if e == 2 else 1 - 0.6 / e,
        }
        for e in range(1, 6)
    ]
    return ReportInputs(
        title="Report <script>alert(1)</script>",
        metrics=metrics,
        history=history,
        thumbnails=thumbnails,
        config={
            "model": {"name": "cnn", "width": 16},
            "data_dir": Path("/data/pets"),
            "note": "<i>x</i>",
        },
        environment={"python": "3.11", "torch": "2.5.0", "seed": 0, "git": {"commit": "abc123"}},
        leaderboard=[
            {"name": "cnn", "accuracy": 0.61, "accuracy_ci": [0.5, 0.7]},
            {"name": "<mlp>", "accuracy": 0.55},
        ],
        warnings=["3 near-duplicates between train and test: <a href='http://x'>"],
        notes={"split": "test", "test reads": "1"},
        extra_sections=[("Tuning & trials", "<p class='tuning'>trials</p>")],
    )


@pytest.fixture(scope="module")
def full_html(full_inputs: ReportInputs) -> str:
    return render_report(full_inputs)


def test_every_section_is_present_in_order(full_html: str) -> None:
    ids = _parse(full_html).section_ids
    assert ids == [
        "leaderboard",
        "warnings",
        "summary",
        "learning-curves",
        "confusion-matrix",
        "per-class",
        "calibration",
        "mistakes",
        "extra-tuning-trials",
        "config",
        "environment",
    ]
    for section_id in ids:
        assert re.search(rf'<section id="{section_id}"><h2>[^<]+</h2>', full_html)


def test_optional_sections_are_left_out_when_empty(full_inputs: ReportInputs) -> None:
    minimal = render_report(ReportInputs(title="t", metrics=full_inputs.metrics))
    ids = _parse(minimal).section_ids
    assert ids == [
        "summary",
        "confusion-matrix",
        "per-class",
        "calibration",
        "mistakes",
        "config",
        "environment",
    ]
    assert 'href="#warnings"' not in minimal


def test_report_is_self_contained(full_html: str) -> None:
    parsed = _parse(full_html)
    assert parsed.srcs, "expected embedded images"
    for src in parsed.srcs:
        assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), src[:40]
    for href in parsed.hrefs:
        assert href.startswith("#"), href
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", full_html, re.IGNORECASE)
    assert "<script" not in full_html.lower()
    assert "url(" not in full_html and "@import" not in full_html
    # Charts: leaderboard, learning curves, confusion matrix, reliability diagram.
    assert sum(src.startswith("data:image/png") for src in parsed.srcs) >= 4


def test_thumbnails_are_embedded_most_confident_first(
    full_inputs: ReportInputs, full_html: str
) -> None:
    for image in full_inputs.thumbnails.values():
        assert base64.b64encode(image).decode() in full_html
    assert "data:image/jpeg;base64," in full_html
    gallery = full_html[full_html.index('<section id="mistakes">') :]
    shown = full_inputs.metrics["most_confident_mistakes"]
    positions = [gallery.index(f'title="img/{m["index"]}.png"') for m in shown]
    assert positions == sorted(positions)
    assert "no image" in gallery  # the mistake without a thumbnail gets a text card


def test_text_is_escaped(full_html: str) -> None:
    assert "&lt;b&gt;cat&lt;/b&gt;" in full_html
    assert "<b>cat</b>" not in full_html
    assert "Report &lt;script&gt;alert(1)&lt;/script&gt;" in full_html
    assert "&lt;mlp&gt;" in full_html and "&lt;i&gt;x&lt;/i&gt;" in full_html
    assert "<a href='http://x'>" not in full_html
    assert "<p class='tuning'>trials</p>" in full_html  # extra sections are trusted HTML


def test_summary_shows_accuracy_interval_and_notes(
    full_inputs: ReportInputs, full_html: str
) -> None:
    metrics = full_inputs.metrics
    lo, hi = metrics["accuracy_ci"]
    expected = (
        f"{100 * metrics['accuracy']:.1f}% (95% CI {100 * lo:.1f}–{100 * hi:.1f}%, Wilson, n=90)"
    )
    assert format_accuracy(metrics) == expected
    summary = full_html[
        full_html.index('<section id="summary">') : full_html.index(
            '<section id="learning-curves">'
        )
    ]
    assert f"{100 * metrics['accuracy']:.1f}%" in summary
    assert "95% CI" in summary and "Wilson" in summary
    assert "<dt>test reads</dt><dd>1</dd>" in summary
    assert "ECE" in summary and "Loss" in summary
    assert "data_dir: /data/pets" in full_html  # the config is YAML, paths as text
    assert "macro avg" in full_html and "weighted avg" in full_html


def test_no_mistakes_reads_cleanly() -> None:
    metrics = classification_metrics(
        np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]), ["a", "b"]
    )
    html_text = render_report(ReportInputs(title="perfect", metrics=metrics))
    assert "No mistakes" in html_text
    assert "100.0% (95% CI" in html_text


def test_write_report_is_atomic_and_replaces(tmp_path: Path, full_inputs: ReportInputs) -> None:
    target = tmp_path / "nested" / "report.html"
    minimal = ReportInputs(title="first", metrics=full_inputs.metrics)
    assert write_report(target, minimal) == target
    write_report(target, ReportInputs(title="second", metrics=full_inputs.metrics))
    text = target.read_text(encoding="utf-8")
    assert "<title>second</title>" in text
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temp file left


def test_plots_return_png_bytes() -> None:
    bins = [
        {"lo": 0.0, "hi": 0.5, "count": 0, "confidence": None, "accuracy": None},
        {"lo": 0.5, "hi": 1.0, "count": 4, "confidence": 0.8, "accuracy": 0.75},
    ]
    images = [
        plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"]),
        plot_reliability(bins),
        plot_learning_curves([{"epoch": 1, "train_loss": 0.5}]),  # sparse history still draws
        plot_leaderboard([{"name": "x", "accuracy": 0.5}, {"name": "y"}]),
    ]
    for image in images:
        assert image.startswith(PNG_MAGIC)
        assert Image.open(io.BytesIO(image)).size[0] > 100
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 2]], ["a", "b"])


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}  # keep Chromium's caches out of the real home
    return subprocess.run(
        command, capture_output=True, text=True, timeout=180, env=env, check=False
    )


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path, full_inputs: ReportInputs) -> None:
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium package "
            "(`apt-get install -y chromium`) to run the browser rendering test"
        )
    report = write_report(tmp_path / "report.html", full_inputs)
    url = report.resolve().as_uri()

    shot = tmp_path / "shot.png"
    result = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path)
    assert shot.exists(), f"no screenshot; chromium said:\n{result.stderr[-2000:]}"
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    # None means more than 65,536 colours, certainly not blank.
    assert colours is None or len(colours) > 16, "the screenshot is (nearly) blank"

    result = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", url], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for section_id in ALL_SECTIONS:
        assert f'id="{section_id}"' in result.stdout, (
            f"section {section_id!r} missing from the rendered DOM"
        )
    # The report has no JavaScript, so any console line at all (Chromium logs even
    # console.error and uncaught exceptions as "INFO:CONSOLE") means something is wrong.
    console_lines = [
        line
        for line in result.stderr.splitlines()
        if "Uncaught" in line or ":CONSOLE" in line  # covers "ERROR:CONSOLE" too
    ]
    assert not console_lines, "\n".join(console_lines)
