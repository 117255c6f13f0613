"""Likely label errors in a prepared cache, found by confident learning (cleanlab).

A cheap model is cross-validated over the train and val rows: every row gets predicted class
probabilities from a model that never saw it (out of fold). cleanlab's ``find_label_issues``
then flags the rows whose given label the model finds much less likely than another class, by
per-class thresholds estimated from the same probabilities (Northcutt et al., "Confident
Learning", 2021), and ranks them by self-confidence: the out-of-fold probability of the given
label, lowest (most likely wrong) first.

The test split is never read: it is kept for the single final evaluation, and a label fixed
there because a model disagreed with it would make that evaluation flatter the model.

Models (``ISSUE_MODELS``) see pixels averaged down to at most 32 px and scaled to [0, 1]; all but
``logreg`` add HOG descriptors of the grey image (scikit-image). All are standardised and fitted
with scikit-learn, so a search takes seconds to a few minutes on 2 cores and needs no GPU.
``features`` is a logistic regression on feature vectors computed elsewhere, one per cache row
(:class:`IssueFeatures`: what a pretrained backbone makes of each image; ``tellapart data issues
--features BACKBONE`` computes and caches them with the training stage's backbones).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tellapart._errors import UserError
from tellapart._files import atomic_write

from ._cache import Cache
from ._split import stratified_cap

__all__ = [
    "ISSUE_FILTERS",
    "ISSUE_MODELS",
    "IssueFeatures",
    "LabelIssue",
    "LabelIssues",
    "check_issue_options",
    "find_label_issues",
    "issue_rows",
    "label_issues_section",
    "read_label_issues",
    "write_label_issues",
]

#: name -> what it is, for --help and the result's ``method``.
ISSUE_MODELS: dict[str, str] = {
    "logreg": "logistic regression on standardised pixels",
    "hog_logreg": "logistic regression on standardised pixels + HOG descriptors",
    "kernel": "logistic regression on an RBF kernel's Nystroem features of standardised pixels + HOG descriptors",
    "mlp": "one-hidden-layer MLP (256 units) on standardised pixels + HOG descriptors",
    "features": "logistic regression on standardised feature vectors given with the cache (IssueFeatures)",
}
#: What ``model="auto"`` picks (bench/bench_label_issues.py, 3% of labels flipped): the kernel
#: model flagged flips more precisely on 3,000 and 10,000 Fashion-MNIST images; on the 1,000 to
#: 1,500 rows of the digits and faces sets, where its fixed 1,500 landmarks cost the most time,
#: pixels + HOG with a linear model did better.
AUTO_MODEL_SMALL, AUTO_MODEL_LARGE, AUTO_LARGE_ROWS = "hog_logreg", "kernel", 2_000
#: cleanlab's ``filter_by`` methods that need nothing but labels and probabilities.
ISSUE_FILTERS: tuple[str, ...] = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
#: cleanlab's default is prune_by_noise_rate; "both" (a row must fail both of its rules) flagged as
#: many or fewer right labels, for a point or two of recall, on every set of bench/bench_label_issues.py.
DEFAULT_FILTER = "both"
DEFAULT_MAX_ROWS = 10_000  # rows cross-validated at most: 1-3 minutes with the default model on 2 busy cores (BENCHMARKS.md)
_PIXEL_SIDE = 32  # classical models see at most 32x32 px: more only slows them down
_HOG_SIDE = 64  # HOG of at most 64x64 px: about 7x7 cells whatever the image size
_CHUNK = 2048  # rows featurised at once: bounded memory for big caches
_KERNEL_COMPONENTS = 1500  # Nystroem landmarks: more cost time (cubic) for little accuracy
THUMBNAIL_PX = 96  # longest side of the thumbnails in the HTML page and report section
_HTML_LIMIT = 500  # rows listed in the HTML table; the JSON lists every flagged row
_OUT_FILES = ("label_issues.json", "label_issues.html")


@dataclass(frozen=True)
class IssueFeatures:
    """One feature vector per cache row, made elsewhere (a pretrained backbone), for the ``features`` model."""

    name: str  # what made them, in words, for the result's method: "efficientnet_lite0 features at 64 px"
    matrix: np.ndarray  # (rows in the cache, D) float32, may be a memory map: only the rows checked (issue_rows) are read


@dataclass(frozen=True)
class LabelIssue:
    """One row whose given label looks wrong."""

    row: int  # row index in the cache
    split: str  # train or val (never test)
    id: str  # the item's id: its path inside the source, or split/index for array sources
    path: str | None  # the original file, when the source was a folder or CSV list and it still exists
    given: str  # the label in the data
    suggested: str  # the class the out-of-fold model finds most likely
    self_confidence: float  # out-of-fold probability of the given label: low = likely wrong
    suggested_probability: float  # out-of-fold probability of the suggested class


@dataclass(frozen=True)
class LabelIssues:
    """The flagged rows, most likely wrong first, and how they were found."""

    issues: tuple[LabelIssue, ...]  # ranked by self-confidence, lowest first
    cache: str  # the cache folder checked
    rows_checked: int  # train+val rows cross-validated
    rows_available: int  # train+val rows in the cache
    sampled: bool  # True when rows_checked < rows_available (a stratified sample of max_rows)
    model: str  # the ISSUE_MODELS name that made the probabilities
    method: str  # the model, the folds and cleanlab's filter, in words
    folds: int  # cross-validation folds
    filter_by: str  # cleanlab's filter_by
    out_of_fold_accuracy: float  # agreement of the out-of-fold predictions with the given labels
    seconds: float  # features + cross-validation + cleanlab, wall clock

    @property
    def count(self) -> int:
        return len(self.issues)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, **asdict(self)}

    def summary(self) -> str:
        """One line: how many rows were flagged out of how many, and how."""
        sample = f" (a stratified sample of {self.rows_available:,} train+val rows)" if self.sampled else ""
        share = self.count / self.rows_checked if self.rows_checked else 0.0
        return (
            f"{self.count:,} likely label error(s) in {self.rows_checked:,} train+val rows{sample} ({share:.1%}); "
            f"{self.method}; out-of-fold accuracy {self.out_of_fold_accuracy:.1%}; {self.seconds:.0f} s"
        )

    def table(self, top: int = 50) -> str:
        """The ``top`` most likely errors as a plain-text table (id, given, suggested, score)."""
        shown = self.issues[:top]
        if not shown:
            return "no likely label errors found"
        width = min(60, max(len("file"), *(len(i.id) for i in shown)))
        lines = [f"{'file':<{width}}  {'given':<16} {'suggested':<16} {'score':>6}"]
        for i in shown:
            name = i.id if len(i.id) <= width else "..." + i.id[-(width - 3) :]
            lines.append(f"{name:<{width}}  {i.given[:16]:<16} {i.suggested[:16]:<16} {i.self_confidence:6.2g}")
        if len(self.issues) > top:
            lines.append(f"... and {len(self.issues) - top:,} more (all are in label_issues.json)")
        return "\n".join(lines)


def find_label_issues(
    cache: Cache,
    *,
    folds: int = 5,
    model: str = "auto",
    max_rows: int = DEFAULT_MAX_ROWS,
    filter_by: str = DEFAULT_FILTER,
    seed: int = 0,
    features: IssueFeatures | None = None,
) -> LabelIssues:
    """Cross-validates a cheap model over the train and val rows and flags likely label errors.

    Args:
        cache: the prepared cache; its test rows are never read.
        folds: stratified cross-validation folds; every class needs at least this many rows.
        model: a name in ``ISSUE_MODELS``, or ``"auto"``: ``features`` when ``features`` are given,
            else ``kernel`` from 2,000 rows checked, else ``hog_logreg``.
        max_rows: rows to cross-validate at most; above it a stratified sample is checked (the
            result says so), because the models' cost grows faster than linearly.
        filter_by: cleanlab's rule for which rows are issues (``ISSUE_FILTERS``).
        seed: folds, sample and model initialisation.
        features: feature vectors for the ``features`` model (required by it, refused by the others).

    Raises:
        UserError: an unknown model or filter, too few folds or rows, or a class with fewer rows
            than folds; the message names the option to change.
    """
    check_issue_options(model=model, folds=folds, max_rows=max_rows, filter_by=filter_by, with_features=features is not None)
    _check_features(cache, features)
    started = time.perf_counter()
    available = len(cache.indices("train")) + len(cache.indices("val"))
    rows = issue_rows(cache, max_rows, seed)
    name = model if model != "auto" else "features" if features is not None else AUTO_MODEL_LARGE if len(rows) >= AUTO_LARGE_ROWS else AUTO_MODEL_SMALL
    given = cache.labels[rows]
    present, compact = np.unique(given, return_inverse=True)  # classes absent from train+val have no column
    _check_class_sizes(cache, present, compact, folds)
    x = np.asarray(features.matrix[rows], dtype=np.float32) if features is not None else _features(name, cache, rows)
    probs = _out_of_fold_probabilities(x, compact, name, folds, seed)
    ranked = _cleanlab_issues(compact, probs, filter_by)
    names = [cache.class_names[k] for k in present]
    issues = tuple(_issue(cache, int(rows[k]), names, compact[k], probs[k]) for k in ranked)
    return LabelIssues(
        issues=issues,
        cache=str(cache.path),
        rows_checked=len(rows),
        rows_available=int(available),
        sampled=bool(len(rows) < available),
        model=name,
        method=f"{_described(name, features)}, {folds}-fold out-of-fold probabilities, cleanlab filter_by={filter_by}",
        folds=folds,
        filter_by=filter_by,
        out_of_fold_accuracy=round(float((probs.argmax(1) == compact).mean()), 6),
        seconds=round(time.perf_counter() - started, 3),
    )


def issue_rows(cache: Cache, max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0) -> np.ndarray:
    """The train+val rows :func:`find_label_issues` checks (ascending): all, or a stratified sample of ``max_rows``.

    What features made elsewhere (``IssueFeatures``) need to cover, and no more.
    """
    pool = np.concatenate([cache.indices("train"), cache.indices("val")])
    return np.sort(stratified_cap(pool, cache.labels, max_rows, seed=seed, salt=7919))


def check_issue_options(*, model: str, folds: int, max_rows: int, filter_by: str, with_features: bool) -> None:
    """Refuses options :func:`find_label_issues` cannot use, before anything is computed (UserError naming the option)."""
    if with_features and model not in ("auto", "features"):
        raise UserError(f"--features makes the model a logistic regression on them; drop --model {model} (or use --model features)")
    if not with_features and model == "features":
        raise UserError("--model features needs feature vectors: pass --features BACKBONE (e.g. efficientnet_lite0)")
    if model != "auto" and model not in ISSUE_MODELS:
        raise UserError(f"--model {model!r} is not a label-issue model; choose auto or one of {', '.join(ISSUE_MODELS)}")
    if folds < 2:
        raise UserError(f"--folds must be 2 or more (each row is predicted by a model fitted on the other folds), got {folds}")
    if max_rows < 2 * folds:
        raise UserError(f"--max-rows must be at least twice --folds ({2 * folds}), got {max_rows}")
    if filter_by not in ISSUE_FILTERS:
        raise UserError(f"--filter-by {filter_by!r} is not one of cleanlab's rules {', '.join(ISSUE_FILTERS)}")


def _check_features(cache: Cache, features: IssueFeatures | None) -> None:
    if features is None:
        return
    if features.matrix.ndim != 2 or len(features.matrix) != len(cache.labels):
        raise UserError(
            f"{features.name}: expected one feature vector per row of {cache.path} ({len(cache.labels):,} rows), "
            f"got an array of shape {tuple(features.matrix.shape)}"
        )


def _described(name: str, features: IssueFeatures | None) -> str:
    return f"logistic regression on standardised {features.name}" if features is not None else ISSUE_MODELS[name]


def _check_class_sizes(cache: Cache, present: np.ndarray, compact: np.ndarray, folds: int) -> None:
    if len(present) < 2:
        raise UserError(f"cache {cache.path}: its train and val rows hold fewer than two classes; nothing to compare labels with")
    counts = np.bincount(compact, minlength=len(present))
    smallest = int(counts.argmin())
    if counts[smallest] < folds:
        raise UserError(
            f"cache {cache.path}: class {cache.class_names[present[smallest]]!r} has {counts[smallest]} train+val row(s) "
            f"checked, fewer than --folds {folds}; lower --folds to {max(2, int(counts[smallest]))} or raise --max-rows"
        )


def _features(name: str, cache: Cache, rows: np.ndarray) -> np.ndarray:
    featurise: Callable[[np.ndarray], np.ndarray] = _pixels if name == "logreg" else _pixels_and_hog
    parts = [featurise(np.asarray(cache.pixels[rows[k : k + _CHUNK]])) for k in range(0, len(rows), _CHUNK)]
    return np.concatenate(parts)


def _pixels(pixels: np.ndarray) -> np.ndarray:
    """(n, side, side, c) uint8 -> (n, d) float32 in [0, 1], averaged down to at most 32 px a side."""
    return _resized(pixels.astype(np.float32) / 255.0, _PIXEL_SIDE).reshape(len(pixels), -1)


def _pixels_and_hog(pixels: np.ndarray) -> np.ndarray:
    return np.hstack([_pixels(pixels), _hog(pixels)])


def _hog(pixels: np.ndarray) -> np.ndarray:
    """HOG of the grey image (at most 64 px): 9 orientations, about 7x7 cells, 2x2 blocks."""
    from skimage.feature import hog

    grey = _resized(pixels.astype(np.float32).mean(-1, keepdims=True) / 255.0, _HOG_SIDE)[..., 0]
    cell = max(2, grey.shape[-1] // 7)
    return np.stack(
        [hog(img, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2), feature_vector=True) for img in grey]
    ).astype(np.float32)


def _resized(x: np.ndarray, side: int) -> np.ndarray:
    """(n, s, s, c) float32 averaged down to at most ``side`` px (area averaging, as the baselines do)."""
    if x.shape[1] <= side:
        return x
    import torch
    import torch.nn.functional as F

    t = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2), side)
    return t.permute(0, 2, 3, 1).numpy()


def _estimator(name: str, features: int, seed: int) -> Any:
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "mlp":
        return make_pipeline(
            StandardScaler(), MLPClassifier((256,), alpha=1e-2, max_iter=60, early_stopping=True, random_state=seed)
        )
    if name == "kernel":  # an RBF SVM's accuracy, with probabilities, at a linear model's cost
        nystroem = Nystroem(kernel="rbf", gamma=1.0 / features, n_components=_KERNEL_COMPONENTS, random_state=seed)
        return make_pipeline(StandardScaler(), nystroem, LogisticRegression(C=1.0, max_iter=300, tol=1e-3, random_state=seed))
    # strong regularisation: probabilities that are not overconfident on rows it fits (on 1,280
    # backbone features, C=0.01 flagged flips more precisely than 0.05 and 0.2: bench_label_issues.py)
    c = 0.01 if name == "features" else 0.05
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300, tol=1e-3, random_state=seed))


def _out_of_fold_probabilities(x: np.ndarray, labels: np.ndarray, name: str, folds: int, seed: int) -> np.ndarray:
    """(n, K) probabilities, each row from a model fitted on the other folds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # an unconverged cheap model still ranks labels; its accuracy is reported
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        warnings.simplefilter("ignore", category=UserWarning)  # Nystroem: fewer rows than components
        probs = cross_val_predict(_estimator(name, x.shape[1], seed), x, labels, cv=cv, method="predict_proba")
    return np.asarray(probs, dtype=np.float64)


def _cleanlab_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str) -> np.ndarray:
    """Indices of the flagged rows, lowest self-confidence first."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    with warnings.catch_warnings():  # cleanlab warns about tiny classes; the class-size check covers them
        warnings.simplefilter("ignore")
        ranked = cleanlab_find(labels, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence", n_jobs=1)
    return np.asarray(ranked, dtype=np.int64)


def _issue(cache: Cache, row: int, names: list[str], given: int, probs: np.ndarray) -> LabelIssue:
    suggested = int(probs.argmax())
    path = cache.source_path(row)
    return LabelIssue(
        row=row,
        split=str(cache.splits[row]),
        id=str(cache.manifest["ids"][row]),
        path=str(path) if path is not None else None,
        given=names[given],
        suggested=names[suggested],
        self_confidence=round(float(probs[given]), 6),
        suggested_probability=round(float(probs[suggested]), 6),
    )


# --------------------------------------------------------------------------- output


def _default_out(cache: Cache) -> Path:
    """Beside the cache, never inside it: a cache folder holding other files is not rebuilt."""
    return cache.path.parent / f"{cache.path.name}-label-issues"


def write_label_issues(issues: LabelIssues, cache: Cache, out: str | Path | None = None, *, top: int = 50) -> tuple[Path, Path]:
    """Writes ``label_issues.json`` (every flagged row) and a self-contained ``label_issues.html``.

    Args:
        issues: what :func:`find_label_issues` returned for ``cache``.
        cache: the cache, for thumbnails.
        out: a new or empty folder, or one these files were written to before; default
            ``CACHE-label-issues`` beside the cache.
        top: thumbnails shown in the page (the table below them lists up to 500 rows).

    Raises:
        UserError: ``out`` is a file, or a folder holding files tellapart did not write there.
    """
    folder = Path(out) if out is not None else _default_out(cache)
    _claim_folder(folder)
    json_path, html_path = folder / _OUT_FILES[0], folder / _OUT_FILES[1]
    record = {"written_by": "tellapart", "kind": "label-issues", "cache_fingerprint": cache.fingerprint, **issues.to_json()}
    atomic_write(json_path, json.dumps(record, indent=2))
    title, body = label_issues_section(issues, cache, top=top)
    atomic_write(html_path, _page(title, body))
    return json_path, html_path


def read_label_issues(cache: Cache) -> LabelIssues | None:
    """The label issues ``tellapart data issues`` wrote beside ``cache`` (its default folder), if they are of this cache.

    Reports include them: a check run once shows in every later report of the same cache. A file
    from another cache (the fingerprint differs: the data or the preparation changed) or one that
    cannot be read is ignored.
    """
    path = _default_out(cache) / _OUT_FILES[0]
    try:
        record = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("kind") != "label-issues" or record.get("cache_fingerprint") != cache.fingerprint:
        return None
    fields = {f.name for f in dataclasses.fields(LabelIssues)} - {"issues"}
    try:
        issues = tuple(LabelIssue(**i) for i in record["issues"])
        return LabelIssues(issues=issues, **{k: record[k] for k in fields})
    except (KeyError, TypeError):
        return None


def _claim_folder(folder: Path) -> None:
    """Creates ``folder`` or checks it holds only our two files: nothing a user wrote is replaced."""
    if folder.exists() and (not folder.is_dir() or folder.is_symlink()):
        raise UserError(f"{folder} exists and is not a folder; choose another --out")
    if folder.is_dir():
        names = {p.name for p in folder.iterdir()}
        foreign = sorted(names - set(_OUT_FILES))
        if foreign or (names and not _written_by_us(folder / _OUT_FILES[0])):
            listed = ", ".join((foreign or sorted(names))[:3])
            raise UserError(
                f"{folder} exists and holds files tellapart did not write there ({listed}); nothing was changed: "
                "choose another --out, or empty the folder yourself"
            )
    folder.mkdir(parents=True, exist_ok=True)


def _written_by_us(path: Path) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("written_by") == "tellapart" and record.get("kind") == "label-issues"


def label_issues_section(issues: LabelIssues, cache: Cache, *, top: int = 24) -> tuple[str, str]:
    """(title, trusted HTML) of the label-issue section, for the evaluation report's ``extra_sections``.

    Every text from the data is escaped; the thumbnails are embedded PNGs, so the HTML needs no
    files beside it.
    """
    e = html.escape
    intro = (
        f'<p class="muted">{e(issues.summary())}. Score: the out-of-fold probability of the given label '
        "(low = likely wrong). Check these images before trusting the labels; test images were not checked.</p>"
    )
    if not issues.issues:
        return "Likely label errors", intro
    cards = []
    for issue in issues.issues[:top]:
        uri = f"data:image/png;base64,{base64.b64encode(cache.thumbnail_png(issue.row, THUMBNAIL_PX, enlarge_small=True)).decode('ascii')}"
        caption = (  # the report's colours: the suspect label red ("pred"), the likely one green ("true")
            f'<span class="pred">given: {e(issue.given)}</span><br>'
            f'<span class="true">suggested: {e(issue.suggested)}</span> '
            f'<span class="conf">{issue.self_confidence:.2g}</span><br>'
            f'<span class="id" title="{e(issue.id)}">{e(issue.id)}</span>'
        )
        alt = f"given {issue.given}, suggested {issue.suggested}"
        cards.append(f'<figure class="mistake"><img src="{uri}" alt="{e(alt)}"><figcaption>{caption}</figcaption></figure>')
    listed = issues.issues[:_HTML_LIMIT]
    rows = "".join(
        f"<tr><td>{i.row}</td><td>{e(i.split)}</td><td>{e(i.id)}</td><td>{e(i.given)}</td>"
        f'<td>{e(i.suggested)}</td><td class="num">{i.self_confidence:.3g}</td></tr>'
        for i in listed
    )
    more = f" (first {len(listed)}; every one is in label_issues.json)" if issues.count > len(listed) else ""
    table = (
        "<table><thead><tr><th>row</th><th>split</th><th>id</th><th>given</th><th>suggested</th><th>score</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )
    body = (
        f'{intro}<div class="gallery">{"".join(cards)}</div>'
        f"<details><summary>All {issues.count} flagged rows{more}</summary>{table}</details>"
    )
    return "Likely label errors", body


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#1f2328;margin:24px auto;max-width:1100px;padding:0 16px}
.muted{color:#59636e}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:12px;margin:12px 0}
.mistake{margin:0;border:1px solid #d1d9e0;border-radius:8px;overflow:hidden;background:#fff}
.mistake img{display:block;width:100%;height:110px;object-fit:contain;background:#f6f8fa;image-rendering:pixelated}
.mistake figcaption{padding:6px 8px;font-size:12px;word-break:break-all}
.true{color:#1a7f37}.pred{color:#cf222e}.id{color:#59636e}
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #d1d9e0;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
