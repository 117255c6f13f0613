"""``evaluate``: a run's best checkpoint on a cache split -> ``metrics.json`` + ``report.html``.

Every read of the test split is recorded in the run folder (``test_reads.json``), so a report
can say how often the test set has been looked at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tellapart._errors import UserError
from tellapart.data import Cache, ShardSet, is_shard_set, label_issues_section, read_label_issues
from tellapart._files import atomic_write
from tellapart.runs import RunDir
from tellapart.train import Feeder, evaluate, load_model, read_metrics, resolve_runtime

from ._compare import comparison_section, comparisons_json, paired_comparison
from ._ledger import TestLedger
from ._metrics import classification_metrics
from ._report import ReportInputs, write_report

__all__ = ["evaluate_run", "run_cache", "leaderboard_rows", "THUMBNAIL_PX"]

THUMBNAIL_PX = 160  # longest side of gallery thumbnails: keeps the report small


def run_cache(run: Path, cache: str | Path | None = None) -> Cache:
    """The cache a run trained on (from its config.yaml), unless ``cache`` names another.

    A shard set stands for any of its parts present here: each holds the whole val and test splits.
    """
    if cache is not None:
        return _open_cache(cache)
    config = RunDir(run).config
    if not config.is_file():
        raise UserError(f"{run} has no config.yaml; pass the cache with --cache")
    path = (yaml.safe_load(config.read_text()) or {}).get("cache")
    if not path or not Path(path).is_dir():
        raise UserError(f"the cache this run trained on ({path}) is gone; pass it with --cache")
    return _open_cache(path)


def _open_cache(path: str | Path) -> Cache:
    return ShardSet(path).first_present() if is_shard_set(path) else Cache(path)


def _leakage_warnings(cache: Cache, split: str) -> list[str]:
    """One line per kind of duplicate linking ``split`` to another split, with its exact count."""
    counts = cache.duplicates
    warnings = []
    for kind in ("exact", "near"):
        n = counts.crossing(kind, split)
        if n:
            pairs = [p for p in counts.examples[kind] if split in (p["a_split"], p["b_split"]) and p["a_split"] != p["b_split"]]
            examples = "; ".join(f"{p['a']} [{p['a_split']}] ~ {p['b']} [{p['b_split']}]" for p in pairs[:5])
            warnings.append(
                f"{n} {kind} duplicate pair(s) link the {split} split to another split, found at prepare "
                f"time; the {split} accuracy may be optimistic. E.g. {examples}"
            )
    return warnings


def _leakage_pairs(cache: Cache, split: str, limit: int = 12) -> list[dict[str, Any]]:
    """The first ``limit`` listed pairs linking ``split`` to another split, with thumbnails of both images."""
    row = {image_id: k for k, image_id in enumerate(cache.ids)}
    shown: list[dict[str, Any]] = []
    for kind, pairs in cache.duplicates.examples.items():
        for p in pairs:
            if len(shown) < limit and split in (p["a_split"], p["b_split"]) and p["a_split"] != p["b_split"] and p["a"] in row and p["b"] in row:
                shown.append({**p, "kind": kind, "a_image": cache.thumbnail_png(row[p["a"]], THUMBNAIL_PX), "b_image": cache.thumbnail_png(row[p["b"]], THUMBNAIL_PX)})
    return shown


def leaderboard_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ladder/tuning rows as the report shows them (the chart plots validation accuracy)."""
    keep = ("params", "val_acc_std", "val_loss", "best_epoch", "epochs", "train_seconds", "images_per_s", "seeds")
    return [
        {"rank": r.get("rank"), "name": r.get("rung", r.get("name")), "model": r.get("model"), "val_acc": r.get("val_acc"),
         **{k: r.get(k) for k in keep if k in r}}
        for r in rows
    ]


def evaluate_run(
    run: str | Path,
    *,
    split: str = "test",
    cache: str | Path | None = None,
    leaderboard: list[dict[str, Any]] | None = None,
    report_dir: str | Path | None = None,
    title: str | None = None,
    notes: dict[str, str] | None = None,
    compare: Mapping[str, np.ndarray] | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
    warnings: Sequence[str] = (),
    allow_unfinished: bool = False,
) -> dict[str, Any]:
    """Evaluates the best checkpoint of ``run`` on ``split``; writes metrics.json and report.html.

    Args:
        run: a run folder written by ``train``.
        split: test (default), val or train.
        cache: the cache to read (default: the one the run trained on).
        leaderboard: rows shown on top of the report (ladder and tuning reports).
        report_dir: where to write the files (default: the run folder).
        notes: extra key/value lines for the report's summary (e.g. a recipe's published figures).
        compare: other models' predicted labels on the same ``split`` rows, in ascending row
            order (name -> labels): each gets a paired test against this run in the report and
            in ``metrics["comparisons"]``.
        extra_sections: (title, trusted HTML) sections for the report (e.g. how a budget was spent).
        warnings: lines the reader must see, shown with the report's own warnings.
        allow_unfinished: test a run whose training has not finished (no summary.json); the report
            says so. Without it such a run is refused (:class:`TestLedger`).
    """
    run = Path(run)
    loaded = load_model(run)
    data = run_cache(run, cache)
    ledger = TestLedger(data, RunDir(run))
    unfinished = ledger.unfinished(allow=allow_unfinished) if split != "train" else None
    trained_on = {data.fingerprint, data.info.set_fingerprint}  # a part stands for its set
    if loaded.checkpoint.get("cache_fingerprint") not in trained_on:
        raise UserError(f"{data.path} is not the cache {run} was trained on; pass the right one with --cache")
    # fp32 for the record: metrics should not depend on the speed settings used in training
    runtime = resolve_runtime("cpu", "fp32", "on" if loaded.preprocess.get("channels_last") else "off", 0, is_conv=True)
    pre = loaded.preprocess
    feeder = Feeder(data.pixels, data.labels, tuple(pre["mean"]), tuple(pre["std"]), runtime)
    rows = ledger.rows(split, allow_unfinished=True)  # (refused above when not allowed)
    result = evaluate(loaded.model, feeder, rows)
    ids = [data.ids[r] for r in result.rows]
    metrics = classification_metrics(result.probs, result.labels, loaded.class_names, ids=ids)
    reads = ledger.record(split, len(rows), metrics["accuracy"])
    comparisons = [paired_comparison(result.labels, result.probs.argmax(1), np.asarray(pred), name) for name, pred in (compare or {}).items()]
    if comparisons:
        metrics["comparisons"] = comparisons_json(comparisons)
    out_dir = RunDir(Path(report_dir) if report_dir else run)
    record = {
        **metrics,
        "split": split,
        "run": str(run),
        "checkpoint": "best",
        "best_epoch": loaded.checkpoint.get("epoch"),
        "cache": str(data.path),
        "reads_of_split": reads,
        **({"unfinished": unfinished} if unfinished else {}),
    }
    atomic_write(out_dir.evaluation(split), json.dumps(record, indent=2))
    thumbnails = {m["index"]: data.thumbnail_png(int(result.rows[m["index"]]), THUMBNAIL_PX) for m in metrics["most_confident_mistakes"]}
    leakage = _leakage_warnings(data, split)
    warnings = [*warnings, *leakage, *([f"{unfinished}: its numbers are not those of the finished model"] if unfinished else [])]
    if reads > 1:
        warnings.append(f"this model has read the {split} split {reads} times; only the first reading is an unbiased estimate")
    config, environment = _run_record(RunDir(run))
    inputs = ReportInputs(
        title=title or f"{run.name} · {loaded.checkpoint['model']['name']} · {split}",
        metrics=metrics,
        history=read_metrics(run),
        thumbnails=thumbnails,
        config=config,
        environment=environment,
        leaderboard=leaderboard_rows(leaderboard) if leaderboard else (),
        warnings=warnings,
        duplicate_pairs=_leakage_pairs(data, split) if leakage else (),
        extra_sections=[
            *([comparison_section(loaded.checkpoint["model"]["name"], comparisons)] if comparisons else []),
            *_label_issue_sections(data),
            *extra_sections,
        ],
        notes={
            "split": f"{split} ({len(rows)} images, never used for model selection)" if split == "test" else split,
            "reads of this split": str(reads),
            "model": f"{loaded.checkpoint['model']['name']} (best epoch {loaded.checkpoint.get('epoch')} on validation)"
                     + (f"; {unfinished}" if unfinished else ""),
            "cache": str(data.path),
            **(notes or {}),
        },
    )
    record["report"] = str(write_report(out_dir.report(split), inputs))
    return record


def _label_issue_sections(cache: Cache) -> list[tuple[str, str]]:
    """The likely label errors ``tellapart data issues`` found in this cache, when it was run on it."""
    issues = read_label_issues(cache)
    return [label_issues_section(issues, cache)] if issues is not None else []


def _run_record(run: RunDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's resolved config and environment ledger, for the report (empty when absent)."""
    config = yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}
    environment = json.loads(run.environment.read_text()) if run.environment.is_file() else {}
    return config or {}, environment
