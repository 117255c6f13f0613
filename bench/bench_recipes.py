"""Full-protocol runs of the five recipes on their stand-ins, timed: the RESULTS table of the recipes issue.

For each recipe: ``tellapart recipe standin NAME`` (made once, reused), then ``tellapart recipe run
NAME`` without ``--quick`` (the seed's protocol: image size, splits, models, search, epochs) in a
subprocess, timed end to end (cache preparation, every step, the one test evaluation and report).
Prints a markdown table: recipe, data actually used, test accuracy with its 95% interval, wall
time on this machine, and the seed's published figure (on the seed's real data).

Usage:
    .venv/bin/python bench/bench_recipes.py --work /tmp/recipes [--recipes s0_faces_ladder ...]
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tellapart.recipes import list_recipes

TELLAPART = [sys.executable, "-m", "tellapart.cli"]


def run_recipe(name: str, work: Path) -> dict:
    data, out = work / f"{name}-data", work / f"{name}-run"
    if not data.exists():
        subprocess.run(TELLAPART + ["recipe", "standin", name, "--out", str(data)], check=True)
    seconds = None
    if not (out / "summary.json").is_file():
        t0 = time.perf_counter()
        subprocess.run(TELLAPART + ["recipe", "run", name, "--data", str(data), "--out", str(out)], check=True)
        seconds = round(time.perf_counter() - t0, 1)
        (out / "wall_seconds.txt").write_text(str(seconds))
    elif (out / "wall_seconds.txt").is_file():
        seconds = float((out / "wall_seconds.txt").read_text())
    summary = json.loads((out / "summary.json").read_text())
    return {"recipe": name, "wall_seconds": seconds, **summary}


def table_row(s: dict) -> str:
    test = s["test"]
    lo, hi = test["accuracy_ci"]
    best = s["best"]
    baseline = s.get("baseline") or {}
    published = "; ".join(f"{k}: {v}" for k, v in (s.get("published") or {}).get("figures", {}).items())
    minutes = f"{s['wall_seconds'] / 60:.1f} min" if s.get("wall_seconds") else "?"
    return (
        f"| {s['recipe']} | {s['data_label']} | {best.get('rung')} ({best.get('model')}) | "
        f"{100 * test['accuracy']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] (n={test['n']}) | "
        f"{100 * (baseline.get('val_acc') or 0):.1f}% | {minutes} | {published} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for stand-ins and recipe runs (finished runs are reused)")
    parser.add_argument("--recipes", nargs="+", default=None, help="default: every bundled recipe")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    names = args.recipes or list_recipes()
    rows = []
    for name in names:
        s = run_recipe(name, args.work)
        rows.append(table_row(s))
        print(rows[-1], flush=True)
    header = (
        "| recipe | data used | chosen on validation | test accuracy [95% CI] | baseline val acc | wall time | seed's published figure |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
