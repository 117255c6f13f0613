"""Full-protocol runs of the five recipes on their stand-ins, timed: the RESULTS table of the recipes.

For each recipe: ``tellapart recipe standin NAME`` (made once, reused, not timed), then ``tellapart
recipe run NAME`` without ``--quick`` (the seed's protocol: image size, splits, models, search,
epochs) in a fresh process, timed whole (cache preparation, every step, the one test evaluation
and report). Prints a markdown table: recipe, data actually used, test accuracy, wall time on
this machine, and the seed's published figure (on the seed's real data).

The method (bench/_method.py): every run is a fresh process into its own folder
(``NAME-run-R``); the recipes interleave (each recipe once per round) for ``--repeats`` rounds;
printed: median and min–max of the test accuracy and of the whole-process wall time. A recipe is
one side, not two, so there is no ratio; a round's seeds are the recipe's own, so repetitions
measure the machine's spread of wall time, not a spread over seeds. A finished run folder is
reused with the wall time it recorded (these runs take hours); an unfinished one is run afresh.

Reproduce (alone on the machine):
    .venv/bin/python bench/bench_recipes.py --work /tmp/recipes --repeats 3 [--recipes s0_faces_ladder ...]
Check that it runs (one recipe's --quick protocol cut to 2 epochs, one round; figures meaningless):
    .venv/bin/python bench/bench_recipes.py --work /tmp/recipes-smoke --smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _method import Samples, interleaved_figures, rounds, run_timed

from tellapart.recipes import list_recipes

TELLAPART = [sys.executable, "-m", "tellapart.cli"]


def run_recipe(name: str, work: Path, r: int, quick: bool) -> dict:
    """Round r of recipe ``name``: its summary, with the wall seconds of its fresh ``recipe run`` process."""
    flag = ["--quick"] if quick else []
    data, out = work / f"{name}-data", work / f"{name}-run-{r}"
    if not data.exists():
        subprocess.run(TELLAPART + ["recipe", "standin", name, "--out", str(data), "--quiet", *flag], check=True)
    wall = out / "wall_seconds.txt"
    if not ((out / "summary.json").is_file() and wall.is_file()):
        shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resume of a half-finished one
        cmd = TELLAPART + ["recipe", "run", name, "--data", str(data), "--out", str(out), *flag, *(["--set", "epochs=2"] if quick else [])]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        seconds = run_timed(cmd, log=work / f"{name}-run-{r}.log")
        wall.write_text(str(round(seconds, 1)))
    summary = json.loads((out / "summary.json").read_text())
    return {"recipe": name, "wall_seconds": float(wall.read_text()), **summary}


def figures_of(s: dict) -> dict[str, float]:
    return {"test accuracy": s["test"]["accuracy"], "wall s": s["wall_seconds"], "baseline val acc": (s.get("baseline") or {}).get("val_acc") or 0.0}


def table_row(s: dict, samples: dict[str, Samples], chosen: set[str]) -> str:
    """One recipe's row: figures from the first round's summary, spreads over every round."""
    published = "; ".join(f"{k}: {v}" for k, v in (s.get("published") or {}).get("figures", {}).items())
    acc, wall = samples["test accuracy"], samples["wall s"]
    minutes = Samples("wall min", tuple(v / 60 for v in wall.values))
    return (
        f"| {s['recipe']} | {s['data_label']} | {', '.join(sorted(chosen))} | "
        f"{Samples('test %', tuple(100 * v for v in acc.values)).describe('%', 2)} (n={s['test']['n']}) | "
        f"{100 * samples['baseline val acc'].median:.1f}% | {minutes.describe('min', 1)} | {published} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for stand-ins and recipe runs (finished runs are reused)")
    parser.add_argument("--recipes", nargs="+", default=None, help="default: every bundled recipe")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process runs per recipe (3+)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: s0_faces_ladder's --quick protocol cut to 2 epochs, 1 round (figures meaningless)")
    args = parser.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    names = ["s0_faces_ladder"] if args.smoke else args.recipes or list_recipes()
    args.work.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, list[dict]] = {name: [] for name in names}

    def side(name: str) -> Callable[[int], dict[str, float]]:
        def measure(r: int) -> dict[str, float]:
            summaries[name].append(run_recipe(name, args.work, r, args.smoke))
            return figures_of(summaries[name][-1])

        return measure

    samples = interleaved_figures({name: side(name) for name in names}, n_rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
    header = (
        "| recipe | data used | chosen on validation (every round) | test accuracy | baseline val acc | wall time | seed's published figure |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [table_row(summaries[name][0], samples[name], {f"{s['best'].get('rung')} ({s['best'].get('model')})" for s in summaries[name]}) for name in names]
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
