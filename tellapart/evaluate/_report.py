"""The evaluation report: one self-contained HTML file.

Charts and thumbnails are embedded as ``data:`` URIs and the CSS is inline, so the file opens
from disk with no network, needs no JavaScript and can be mailed or archived as it is. All text
from metrics, configs and ids is HTML-escaped; only ``ReportInputs.extra_sections`` bodies are
inserted as given (they come from tellapart's own code, e.g. tuning plots).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from tellapart._files import atomic_write, leaderboard_key
from tellapart.evaluate._plots import (
    plot_confusion_matrix,
    plot_leaderboard,
    plot_learning_curves,
    plot_reliability,
)

__all__ = ["ReportInputs", "format_accuracy", "render_report", "write_report"]

# Mistake rows listed in the collapsed "all mistakes" table; more would bloat the file.
_MAX_MISTAKE_ROWS = 1000


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report shows; only ``title`` and ``metrics`` are required."""

    # Page title and heading, e.g. "cats-vs-dogs · resnet18 · test".
    title: str
    # The dict from classification_metrics (the metrics.json schema).
    metrics: Mapping[str, Any]
    # Per-epoch rows with any of epoch, wall_time (s), train_loss, train_acc, val_loss, val_acc.
    history: Sequence[Mapping[str, Any]] = ()
    # Misclassified sample index -> PNG/JPEG/GIF/WebP bytes of its image (keep them small).
    thumbnails: Mapping[int, bytes] = field(default_factory=dict)
    # The run's resolved configuration, shown as YAML.
    config: Mapping[str, Any] = field(default_factory=dict)
    # Reproducibility ledger: package versions, git commit, device, seed...
    environment: Mapping[str, Any] = field(default_factory=dict)
    # Optional rows (ladder/tuning runs) shown as a table right after the title; rows with a
    # numeric "accuracy" also get a bar chart labelled by "name".
    leaderboard: Sequence[Mapping[str, Any]] = ()
    # Problems the reader must see, e.g. near-duplicates between train and test.
    warnings: Sequence[str] = ()
    # Duplicate pairs linking the evaluated split to another, shown side by side: dicts with
    # a, a_split, b, b_split, kind, optional similarity, and a_image/b_image (PNG bytes).
    duplicate_pairs: Sequence[Mapping[str, Any]] = ()
    # Extra key/value lines in the summary, e.g. {"split": "test", "test reads": "1"}.
    notes: Mapping[str, str] = field(default_factory=dict)
    # (title, trusted HTML body) sections appended before the config, e.g. tuning plots.
    extra_sections: Sequence[tuple[str, str]] = ()


def format_accuracy(metrics: Mapping[str, Any]) -> str:
    """Accuracy with its interval, e.g. ``"97.3% (95% CI 95.1–98.6%, Wilson, n=600)"``.

    Args:
        metrics: A dict from :func:`~tellapart.evaluate.classification_metrics`.

    Returns:
        The one-line summary used in the report.
    """
    return f"{_percent(metrics['accuracy'])} ({_interval_text(metrics)})"


def render_report(inputs: ReportInputs) -> str:
    """Render the report as one HTML document.

    Sections (each ``<section id=...>`` with an ``<h2>``), in order: ``leaderboard`` (if
    rows), ``warnings`` (if any), ``duplicates`` (if pairs), ``summary``, ``learning-curves`` (if history),
    ``confusion-matrix``, ``per-class``, ``calibration``, ``mistakes``, the extra sections
    (ids ``extra-<slug>``), ``config``, ``environment``.

    Args:
        inputs: What to show.

    Returns:
        The HTML text.
    """
    sections = [
        ("leaderboard", "Leaderboard", _leaderboard_body(inputs.leaderboard)),
        ("warnings", "Warnings", _warnings_body(inputs.warnings)),
        ("duplicates", "Duplicates across splits", _duplicates_body(inputs.duplicate_pairs)),
        ("summary", "Summary", _summary_body(inputs.metrics, inputs.notes)),
        ("learning-curves", "Learning curves", _learning_curves_body(inputs.history)),
        ("confusion-matrix", "Confusion matrix", _confusion_body(inputs.metrics)),
        ("per-class", "Per-class metrics", _per_class_body(inputs.metrics)),
        ("calibration", "Calibration", _calibration_body(inputs.metrics)),
        ("mistakes", "Mistakes", _mistakes_body(inputs.metrics, inputs.thumbnails)),
    ]
    used_ids = {section_id for section_id, _, _ in sections}
    for title, body in inputs.extra_sections:
        section_id = _unique_id(f"extra-{_slug(title)}", used_ids)
        sections.append((section_id, title, body))
    sections.append(
        ("config", "Configuration", _pre(_as_yaml(inputs.config), "No configuration recorded."))
    )
    sections.append(("environment", "Environment", _environment_body(inputs.environment)))
    present = [(sid, title, body) for sid, title, body in sections if body is not None]

    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in present)
    alert = ""
    if inputs.warnings:
        count = len(inputs.warnings)
        alert = (
            f'<p class="alert"><a href="#warnings">⚠ {count} warning{"s" if count != 1 else ""}'
            " — read before trusting these numbers</a></p>"
        )
    body = "\n".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>\n{content}\n</section>'
        for sid, title, content in present
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(inputs.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><div class="wrap"><h1>{_e(inputs.title)}</h1>\n'
        f'<p class="subtitle">Accuracy {_e(format_accuracy(inputs.metrics))}</p>\n'
        f"{alert}<nav>{nav}</nav></div></header>\n"
        f'<main class="wrap">\n{body}\n</main>\n'
        '<footer class="wrap">Generated by tellapart. '
        "This file is self-contained and works offline.</footer>\n"
        "</body>\n</html>\n"
    )


def write_report(path: Path, inputs: ReportInputs) -> Path:
    """Render the report and write it atomically (``tellapart._files.atomic_write``).

    A reader never sees a half-written report, and a failed render leaves any previous report
    in place.

    Args:
        path: Destination ``.html`` file; missing parent folders are created.
        inputs: What to show.

    Returns:
        ``path``.
    """
    path = Path(path)
    text = render_report(inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return path


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    """HTML-escape ``str(value)``, quotes included."""
    return html.escape(str(value), quote=True)


def _is_number(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a finite real number (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value: Any, digits: int = 1) -> str:
    """``0.9731`` -> ``"97.3%"``; non-numbers -> ``"—"``."""
    return f"{100.0 * value:.{digits}f}%" if _is_number(value) else "—"


def _number(value: Any, digits: int = 4) -> str:
    """A float to ``digits`` significant figures, ints as they are, anything else as text."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def _interval_text(metrics: Mapping[str, Any]) -> str:
    """``"95% CI 95.1–98.6%, Wilson, n=600"`` from a metrics dict."""
    lo, hi = metrics["accuracy_ci"]
    level = f"{100.0 * metrics.get('confidence', 0.95):g}%"
    method = str(metrics.get("ci_method", "wilson")).capitalize()
    return f"{level} CI {100.0 * lo:.1f}–{100.0 * hi:.1f}%, {method}, n={metrics['n']}"


def _data_uri(image: bytes) -> str | None:
    """A ``data:`` URI for PNG/JPEG/GIF/WebP/BMP bytes, or ``None`` for other formats."""
    if image.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif image.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    elif image.startswith((b"GIF87a", b"GIF89a")):
        mime = "image/gif"
    elif image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        mime = "image/webp"
    elif image.startswith(b"BM"):
        mime = "image/bmp"
    else:
        return None
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def _chart(png: bytes, alt: str) -> str:
    """An embedded chart ``<img>``."""
    return f'<img class="chart" src="{_data_uri(png)}" alt="{_e(alt)}">'


def _pre(text: str, empty_message: str) -> str:
    """``text`` in a ``<pre>`` block, or a muted note when it is empty."""
    if not text.strip():
        return f'<p class="muted">{_e(empty_message)}</p>'
    return f"<pre>{_e(text)}</pre>"


def _as_yaml(data: Mapping[str, Any]) -> str:
    """``data`` as block YAML; values YAML cannot represent (paths, enums...) become strings."""
    if not data:
        return ""
    plain = json.loads(json.dumps(data, default=str))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _slug(text: str) -> str:
    """Lower-case ``text`` with runs of other characters turned into single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _unique_id(candidate: str, used: set[str]) -> str:
    """The first of ``candidate``, ``candidate-2``, ``-3``... not in ``used``, added to it."""
    result, counter = candidate, 2
    while result in used:
        result, counter = f"{candidate}-{counter}", counter + 1
    used.add(result)
    return result


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: Sequence[bool],
    row_classes: Sequence[str] = (),
    *,
    escaped_headers: bool = False,
) -> str:
    """An HTML table from already-escaped cell strings.

    Args:
        headers: Column titles (plain text).
        rows: Cell HTML, one sequence per row.
        numeric: Per column, whether it holds numbers (aligned right).
        row_classes: Optional CSS class per row ("" for none); missing entries mean none.
        escaped_headers: The headers are already-escaped HTML (e.g. with ``<wbr>`` break points).
    """

    def cell(tag: str, content: str, is_num: bool) -> str:
        return f'<{tag} class="num">{content}</{tag}>' if is_num else f"<{tag}>{content}</{tag}>"

    def row_open(i: int) -> str:
        cls = row_classes[i] if i < len(row_classes) else ""
        return f'<tr class="{cls}">' if cls else "<tr>"

    head = "".join(cell("th", h if escaped_headers else _e(h), num) for h, num in zip(headers, numeric, strict=True))
    body = "".join(
        row_open(i)
        + "".join(cell("td", c, num) for c, num in zip(row, numeric, strict=True))
        + "</tr>"
        for i, row in enumerate(rows)
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>'


# --------------------------------------------------------------------------- sections
# Each returns the section's inner HTML, or None when the section has nothing to show.


def _leaderboard_body(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The table (in its own scrolling box: a wide one never widens the page) and its chart.

    Ranked rows keep their producer's order (fit, ladder and recipes rank with
    ``leaderboard_key``, as the chart sorts); unranked rows are sorted with that key here, so
    equal scores come out in the same order in the table and in the chart.
    """
    if not rows:
        return None
    value_key = next((k for k in ("accuracy", "val_acc") if any(_is_number(r.get(k)) for r in rows)), None)
    if value_key is not None and not any(r.get("rank") is not None for r in rows):
        rows = sorted(rows, key=lambda r: leaderboard_key(r, value_key))
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    numeric = [all(_is_number(r.get(c)) or r.get(c) is None for r in rows) for c in columns]
    cells = [
        [
            _e(
                _number(row.get(c))
                if not isinstance(row.get(c), (list, dict))
                else json.dumps(row.get(c), default=str)
            )
            for c in columns
        ]
        for row in rows
    ]
    # underscores may break a long column name (train_seconds) over two lines
    headers = [_e(c).replace("_", "_<wbr>") for c in columns]
    html_text = _table(headers, cells, numeric, escaped_headers=True).replace('class="table-wrap"', 'class="table-wrap leaderboard"', 1)
    if value_key is not None:
        what = "accuracy" if value_key == "accuracy" else "validation accuracy"
        html_text += _chart(plot_leaderboard(rows, value_key=value_key), f"leaderboard {what} by run")
    return html_text


def _warnings_body(warnings: Sequence[str]) -> str | None:
    if not warnings:
        return None
    items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
    return f'<div class="warning-box"><ul>{items}</ul></div>'


def _duplicates_body(pairs: Sequence[Mapping[str, Any]]) -> str | None:
    if not pairs:
        return None

    def image(data: Any, alt: str) -> str:
        uri = _data_uri(data) if isinstance(data, bytes) else None
        return f'<img src="{uri}" alt="{_e(alt)}" width="96">' if uri else _e(alt)

    rows = []
    for p in pairs:
        score = f", similarity {p['similarity']:.3f}" if _is_number(p.get("similarity")) else ""
        rows.append(
            f"<tr><td>{image(p.get('a_image'), p['a'])}<br>{_e(p['a'])} [{_e(p['a_split'])}]</td>"
            f"<td>{image(p.get('b_image'), p['b'])}<br>{_e(p['b'])} [{_e(p['b_split'])}]</td>"
            f"<td>{_e(p['kind'])}{_e(score)}</td></tr>"
        )
    return (
        "<p>The first listed pairs (the warnings give the exact counts); look at them before trusting the accuracy.</p>"
        f'<table class="duplicates"><thead><tr><th>image</th><th>duplicate</th><th>kind</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _card(label: str, value: str, detail: str = "", extra_class: str = "") -> str:
    """A summary tile; ``label``, ``value`` and ``detail`` are plain text."""
    cls = f"card {extra_class}".strip()
    detail_html = f'<div class="detail">{_e(detail)}</div>' if detail else ""
    return (
        f'<div class="{cls}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div>{detail_html}</div>'
    )


def _summary_body(metrics: Mapping[str, Any], notes: Mapping[str, str]) -> str:
    n = metrics["n"]
    errors = metrics.get("errors", 0)
    auc = metrics.get("roc_auc")
    if _is_number(auc):
        auc_value, auc_detail = f"{auc:.4f}", "binary, class 1 positive"
    elif len(metrics.get("class_names", ())) > 2:
        auc_value, auc_detail = "—", "binary problems only"
    else:
        auc_value, auc_detail = "—", "undefined: one class present"
    bins = len(metrics.get("calibration_bins", ()))
    cards = [
        _card("Accuracy", _percent(metrics["accuracy"]), f"({_interval_text(metrics)})", "primary"),
        _card("Errors", f"{errors}", f"of {n} samples"),
        _card("Loss", _number(metrics.get("loss")), "mean negative log-likelihood"),
        _card("ROC-AUC", auc_value, auc_detail),
        _card("ECE", _number(metrics.get("ece"), 3), f"{bins} bins, 0 = calibrated"),
    ]
    html_text = f'<div class="cards">{"".join(cards)}</div>'
    if notes:
        items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in notes.items())
        html_text += f'<dl class="notes">{items}</dl>'
    return html_text


def _learning_curves_body(history: Sequence[Mapping[str, Any]]) -> str | None:
    if not history:
        return None
    return _chart(plot_learning_curves(history), "loss and accuracy by epoch and by wall time")


def _confusion_body(metrics: Mapping[str, Any]) -> str:
    names = metrics["class_names"]
    chart = _chart(plot_confusion_matrix(metrics["confusion_matrix"], names), "confusion matrix")
    return (
        '<p class="muted">Rows are true classes, columns predicted; '
        f"colour is the share of each true class.</p>{chart}"
    )


def _per_class_body(metrics: Mapping[str, Any]) -> str:
    def bar(value: float) -> str:
        # A CSS bar behind the number makes weak classes stand out without another chart.
        width = max(0.0, min(1.0, value)) * 100.0
        return f'<span class="bar" style="--v:{width:.1f}%">{value:.3f}</span>'

    rows = [
        [_e(c["class"]), bar(c["precision"]), bar(c["recall"]), bar(c["f1"]), str(c["support"])]
        for c in metrics["per_class"]
    ]
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        avg = metrics[key]
        rows.append(
            [
                f"<strong>{label}</strong>",
                f"{avg['precision']:.3f}",
                f"{avg['recall']:.3f}",
                f"{avg['f1']:.3f}",
                str(avg["support"]),
            ]
        )
    row_classes = [""] * len(metrics["per_class"]) + ["avg", "avg"]
    return _table(
        ("class", "precision", "recall", "F1", "support"),
        rows,
        (False, True, True, True, True),
        row_classes,
    )


def _calibration_body(metrics: Mapping[str, Any]) -> str:
    bins = metrics.get("calibration_bins", [])
    ece = metrics.get("ece")
    text = (
        f"Expected calibration error <strong>{_e(_number(ece, 3))}</strong> over {len(bins)} "
        f"confidence bins: on average the model's confidence differs from its accuracy by "
        f"{100.0 * ece:.1f} percentage points. A bar below its black tick (mean confidence) "
        "means over-confidence in that bin."
        if _is_number(ece)
        else "Expected calibration error unavailable."
    )
    rows = [
        [
            f"{b['lo']:.2f}–{b['hi']:.2f}",
            str(b["count"]),
            _e(_percent(b["confidence"])),
            _e(_percent(b["accuracy"])),
        ]
        for b in bins
    ]
    table = _table(
        ("confidence bin", "samples", "mean confidence", "accuracy"),
        rows,
        (False, True, True, True),
    )
    return (
        f"<p>{text}</p>"
        f"{_chart(plot_reliability(bins), 'reliability diagram')}"
        f"<details><summary>Bin table</summary>{table}</details>"
    )


def _mistakes_body(metrics: Mapping[str, Any], thumbnails: Mapping[int, bytes]) -> str:
    shown = metrics.get("most_confident_mistakes", [])
    every = metrics.get("misclassified", [])
    total = metrics.get("errors", len(every))
    if not total:
        return '<p class="muted">No mistakes: every sample was classified correctly.</p>'
    cards = []
    for mistake in shown:
        caption = (
            f'<span class="true">true: {_e(mistake["true"])}</span><br>'
            f'<span class="pred">pred: {_e(mistake["pred"])}</span> '
            f'<span class="conf">{_e(_percent(mistake["confidence"]))}</span>'
        )
        if mistake.get("id") is not None:
            caption += (
                f'<br><span class="id" title="{_e(mistake["id"])}">{_e(mistake["id"])}</span>'
            )
        image = thumbnails.get(mistake["index"])
        uri = _data_uri(image) if image else None
        alt = f"true {mistake['true']}, predicted {mistake['pred']}"
        visual = (
            f'<img src="{uri}" alt="{_e(alt)}">'
            if uri
            else f'<div class="noimg">#{_e(mistake["index"])}<br>no image</div>'
        )
        cards.append(f'<figure class="mistake">{visual}<figcaption>{caption}</figcaption></figure>')
    intro = (
        f'<p class="muted">The {len(shown)} most confident of {total} mistakes, '
        "most confident first. "
        "Confident mistakes are often label errors worth checking.</p>"
    )
    listed = every[:_MAX_MISTAKE_ROWS]
    rows = [
        [
            str(m["index"]),
            _e(m.get("id") if m.get("id") is not None else "—"),
            _e(m["true"]),
            _e(m["pred"]),
            _e(_percent(m["confidence"])),
        ]
        for m in listed
    ]
    more = f" (first {len(listed)})" if len(every) > len(listed) else ""
    table = _table(
        ("index", "id", "true", "predicted", "confidence"), rows, (True, False, False, False, True)
    )
    return (
        f'{intro}<div class="gallery">{"".join(cards)}</div>'
        f"<details><summary>All {total} mistakes{more}</summary>{table}</details>"
    )


def _environment_body(environment: Mapping[str, Any]) -> str:
    if not environment:
        return '<p class="muted">No environment recorded.</p>'
    rows = [
        [_e(key), _e(value if isinstance(value, str) else json.dumps(value, default=str))]
        for key, value in environment.items()
    ]
    return _table(("item", "value"), rows, (False, False))


_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--border:#d1d9e0;--panel:#f6f8fa;--accent:#0969da;
--good:#1a7f37;--bad:#cf222e;--warn-bg:#fff8c5;--warn-border:#d4a72c;--bar:#ddf4ff}
*{box-sizing:border-box}
html{scroll-behavior:smooth}
body{margin:0;color:var(--fg);background:#fff;
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
header{background:var(--panel);border-bottom:1px solid var(--border);padding:28px 0 14px}
h1{margin:0 0 4px;font-size:28px;line-height:1.25}
h2{margin:0 0 14px;font-size:21px;padding-bottom:6px;display:inline-block;
border-bottom:2px solid var(--accent)}
.subtitle{margin:0 0 12px;color:var(--muted);font-size:16px}
nav{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:14px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
.alert{margin:0 0 12px;padding:8px 12px;background:var(--warn-bg);
border:1px solid var(--warn-border);border-radius:6px;font-weight:600}
.alert a{color:#7d4e00}
section{padding:28px 0;border-bottom:1px solid var(--border)}
section:last-child{border-bottom:none}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card{border:1px solid var(--border);border-radius:10px;padding:12px 16px;background:#fff;
box-shadow:0 1px 2px rgba(31,35,40,.06)}
.card.primary{grid-column:span 2;background:linear-gradient(135deg,#f0f7ff,#fff)}
.card .label{font-size:12px;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
.card .value{font-size:28px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.3}
.card.primary .value{font-size:36px;color:var(--accent)}
.card .detail{font-size:13px;color:var(--muted)}
.notes{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:18px 0 0;
font-size:14px}
.notes dt{color:var(--muted)}
.notes dd{margin:0;font-weight:600}
.warning-box{background:var(--warn-bg);border:1px solid var(--warn-border);
border-left:6px solid var(--warn-border);border-radius:6px;padding:10px 16px}
.warning-box ul{margin:0;padding-left:20px}
#warnings h2{border-bottom-color:var(--warn-border)}
.table-wrap{overflow-x:auto;margin:8px 0}
.leaderboard{max-width:100%;border:1px solid var(--border);border-radius:6px}
.leaderboard table{font-size:13px;width:100%}
.leaderboard th,.leaderboard td{padding:5px 8px}
.leaderboard th{vertical-align:bottom;min-width:4em}
.leaderboard td.num{white-space:nowrap}
.leaderboard td:not(.num){min-width:9em;max-width:22em;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:14px;font-variant-numeric:tabular-nums}
th,td{padding:6px 12px;border-bottom:1px solid var(--border);text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
.num{text-align:right}
tbody tr:hover{background:#f6f8fa}
tr.avg td{background:var(--panel)}
tr:not(.avg)+tr.avg td{border-top:2px solid var(--border)}
.bar{display:inline-block;min-width:64px;padding:0 4px;border-radius:3px;
background:linear-gradient(90deg,var(--bar) var(--v),transparent var(--v))}
img.chart{display:block;max-width:100%;height:auto;margin:12px 0}
details{margin:12px 0}
summary{cursor:pointer;color:var(--accent)}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px;margin-top:12px}
.mistake{margin:0;border:1px solid var(--border);border-radius:8px;overflow:hidden;background:#fff}
.mistake img,.mistake .noimg{display:block;width:100%;height:140px;object-fit:contain;
background:#eef1f4}
.mistake .noimg{height:80px;display:flex;flex-direction:column;align-items:center;
justify-content:center;color:var(--muted);font-size:13px;text-align:center}
.mistake figcaption{padding:6px 8px;font-size:13px;line-height:1.4}
.true{color:var(--good);font-weight:600}
.pred{color:var(--bad);font-weight:600}
.conf{color:var(--muted);font-variant-numeric:tabular-nums}
.id{display:block;color:var(--muted);font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
pre{background:var(--panel);border:1px solid var(--border);border-radius:6px;padding:12px 14px;
overflow:auto;font-size:13px;line-height:1.45;max-height:600px}
footer{padding:20px 24px 40px;color:var(--muted);font-size:13px}
@media print{nav,.alert{display:none}details{display:block}section{break-inside:avoid-page}}
"""
