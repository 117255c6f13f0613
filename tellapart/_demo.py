"""The README's main job: synthetic faces -> cache -> ladder -> test evaluation -> report.html."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tellapart.data import PrepareConfig, Preprocess, SynthConfig, open_source, prepare, synth_faces
from tellapart.evaluate import evaluate_run
from tellapart.train import run_ladder

__all__ = ["run_demo"]


def run_demo(
    out: str | Path = "tellapart-demo",
    *,
    pairs: int = 600,
    image_size: int = 256,
    cache_size: int = 64,
    epochs: int = 12,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the whole pipeline on the built-in data; re-running resumes and reuses what is done.

    Returns the test metrics of the ladder's best model (by validation accuracy); the report's
    path is under ``"report"``.
    """
    out = Path(out)
    data = out / "data"
    if not (data / "face").is_dir():
        _say(progress, f"[1/4] writing {2 * pairs} synthetic images to {data}")
        synth_faces(data, SynthConfig(pairs=pairs, size=image_size, seed=seed), progress=progress)
    else:
        _say(progress, f"[1/4] reusing the images in {data}")
    _say(progress, f"[2/4] preparing the cache ({cache_size}x{cache_size} RGB, pairs kept within one split)")
    cache = prepare(open_source(data, kind="paired"), out / "cache", PrepareConfig(preprocess=Preprocess(size=cache_size)), progress=progress)
    _say(progress, "[3/4] training the ladder: linear -> MLP -> MLP+dropout -> CNN -> regularised CNN")
    base = {"epochs": epochs, "batch_size": 32, "seed": seed, "early_stopping": {"metric": "val_loss", "patience": 4}}
    leaderboard = run_ladder(cache, out / "ladder", base=base, progress=progress)
    best = leaderboard[0]
    _say(progress, f"[4/4] evaluating the best model on validation, {best['rung']}, once on the test split")
    metrics = evaluate_run(
        best["run"], cache=cache.path, leaderboard=leaderboard, report_dir=out,
        title=f"tellapart demo · synthetic faces vs comics · best: {best['rung']}",
    )
    (out / "summary.json").write_text(json.dumps({"best": best, "test_accuracy": metrics["accuracy"], "accuracy_ci": metrics["accuracy_ci"], "report": metrics["report"]}, indent=2))
    return metrics


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)
