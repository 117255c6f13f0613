"""The one timing method every benchmark here uses, so a sceptic checks it once.

Rules, and why:

* **Each repetition is a fresh process** (:func:`run_json`): nothing warmed by one side (allocator
  pools, thread pools, page cache of imports) helps the next measurement of the other.
* **Interleaved repetitions** (:func:`interleaved`): A B A B … rather than A A A B B B, so a slow
  spell of a shared machine lands on both sides. At least :data:`MIN_REPEATS`.
* **Whole epochs of wall time after a warm-up epoch** (:func:`rate_from_epoch_ends`): both sides
  record ``time.perf_counter()`` when each epoch ends; the rate is images of the epochs after the
  first over the time between the first and last stamp. Data loading, augmentation and anything
  else an epoch does (a checkpoint write) count; one-off start-up and compilation fall in epoch 1.
* **Enough steps per epoch** (:func:`check_steps`): at least :data:`MIN_STEPS` batches, so the
  epoch boundary's cost is a small share.
* **Report the spread** (:class:`Samples`): median and min–max over repetitions, and the ratio
  of medians, never a mean of ratios nor a best-of.
* **Several figures per repetition** (:func:`interleaved_figures`): an accuracy and the wall time
  of the process that reached it, or a throughput and its p99, come from the same repetition.
* **Whole-process wall time** (:func:`run_timed`) where a side is a command a user runs: imports,
  start-up and writing the results all count.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EPOCH_CLOCK",
    "MIN_REPEATS",
    "MIN_STEPS",
    "Samples",
    "check_repeats",
    "check_steps",
    "interleaved",
    "interleaved_figures",
    "jpeg_corpus",
    "markdown_table",
    "rate_from_epoch_ends",
    "ratio_of_medians",
    "rounds",
    "run_json",
    "run_timed",
]

MIN_STEPS = 100  # batches per timed epoch
MIN_REPEATS = 3  # fresh-process repetitions per side

# Pasted into each side's subprocess script: the same epoch clock on both sides. ``EPOCH_ENDS``
# collects perf_counter() stamps; tellapart calls ``stamp`` from train()'s on_epoch_end hook,
# Keras from a callback's on_epoch_end.
EPOCH_CLOCK = r"""
import time as _time
EPOCH_ENDS = []
def stamp(*_args, **_kwargs):
    EPOCH_ENDS.append(_time.perf_counter())
    return False  # as an on_epoch_end hook: never ask to stop
"""


@dataclass(frozen=True)
class Samples:
    """One side's figures, one per fresh-process repetition (e.g. images/s)."""

    label: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def describe(self, unit: str = "img/s", digits: int = 1) -> str:
        """``median (min–max, n runs)``: the figure and how far repetitions strayed from it."""
        lo, hi = min(self.values), max(self.values)
        unit = f" {unit}" if unit else ""  # a bare figure (an accuracy) takes no space before the bracket
        return f"{self.median:,.{digits}f}{unit} (min–max {lo:,.{digits}f}–{hi:,.{digits}f}, {len(self.values)} runs)"


def ratio_of_medians(ours: Samples, theirs: Samples) -> float:
    """``ours.median / theirs.median``: robust to one slow repetition on either side."""
    return ours.median / theirs.median


def rate_from_epoch_ends(stamps: Sequence[float], images_per_epoch: int, warmup_epochs: int = 1) -> float:
    """Images/s over the whole epochs after ``warmup_epochs``, from epoch-end stamps (seconds).

    Raises:
        ValueError: Fewer than ``warmup_epochs + 1`` stamps: no timed epoch.
    """
    if len(stamps) < warmup_epochs + 1:
        raise ValueError(f"need {warmup_epochs + 1}+ epoch-end stamps to time one epoch after the warm-up; got {len(stamps)}")
    timed = len(stamps) - warmup_epochs
    return timed * images_per_epoch / (stamps[-1] - stamps[warmup_epochs - 1])


def check_steps(images: int, batch: int, minimum: int = MIN_STEPS) -> int:
    """Steps per epoch for ``images`` in batches of ``batch``; exits with the fix when too few."""
    steps = images // batch
    if steps < minimum:
        raise SystemExit(f"{images} images in batches of {batch} is {steps} steps per epoch; "
                         f"the method needs {minimum}+: pass --images {batch * minimum} or more")
    return steps


def check_repeats(repeats: int, minimum: int = MIN_REPEATS) -> int:
    """``repeats``, or exit naming the option when below the method's minimum."""
    if repeats < minimum:
        raise SystemExit(f"--repeats {repeats}: the method needs {minimum}+ interleaved repetitions per side")
    return repeats


def rounds(repeats: int, smoke: bool) -> int:
    """Rounds to run: 1 for ``--smoke`` (a check that the script runs), else ``repeats`` checked by :func:`check_repeats`."""
    return 1 if smoke else check_repeats(repeats)


def interleaved(sides: Mapping[str, Callable[[], float]], repeats: int, *, log: Callable[[str], None] = print) -> dict[str, Samples]:
    """Runs every side once per round, in the given order, ``repeats`` rounds: A B A B …

    Args:
        sides: Label → a call that runs one fresh-process repetition and returns its figure.
        repeats: Rounds.
        log: Where each repetition's figure is reported as it arrives.
    """
    values: dict[str, list[float]] = {label: [] for label in sides}
    for round_ in range(1, repeats + 1):
        for label, measure in sides.items():
            values[label].append(measure())
            log(f"  round {round_}/{repeats} {label}: {values[label][-1]:,.1f}")
    return {label: Samples(label, tuple(v)) for label, v in values.items()}


def interleaved_figures(
    sides: Mapping[str, Callable[[int], Mapping[str, float]]], repeats: int, *, log: Callable[[str], None] = print
) -> dict[str, dict[str, Samples]]:
    """As :func:`interleaved`, for repetitions that each give several named figures.

    Each call is given its round, 0-based, so a round can have its own seed and output folder
    (and a later side of a round can read what an earlier one wrote).

    Args:
        sides: Label → a call that runs round r's fresh-process repetition and returns figure name → value.
        repeats: Rounds.
        log: Where each repetition's figures are reported as they arrive.

    Returns:
        Label → figure name → that figure's samples, one per round (a figure a repetition did not
        give is left out of that repetition's samples).
    """
    values: dict[str, dict[str, list[float]]] = {label: {} for label in sides}
    for round_ in range(1, repeats + 1):
        for label, measure in sides.items():
            figures = measure(round_ - 1)
            for name, value in figures.items():
                values[label].setdefault(name, []).append(float(value))
            log(f"  round {round_}/{repeats} {label}: " + ", ".join(f"{k} {v:,.4g}" for k, v in figures.items()))
    return {label: {name: Samples(f"{label} {name}", tuple(v)) for name, v in figs.items()} for label, figs in values.items()}


def run_timed(cmd: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None) -> float:
    """Runs ``cmd`` in a fresh process; the wall seconds of the whole process.

    Args:
        cmd: The command line.
        env: Variables added to this process's environment.
        log: File for the process's stdout and stderr (default: kept in memory, shown on failure).

    Raises:
        RuntimeError: The process failed; the message holds the end of its output.
    """
    started = time.perf_counter()
    if log is None:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
        seconds, code, tail = time.perf_counter() - started, out.returncode, (out.stdout + out.stderr)[-3000:]
    else:
        with log.open("w") as sink:
            code = subprocess.run(list(cmd), stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, check=False).returncode
        seconds, tail = time.perf_counter() - started, log.read_text(errors="replace")[-3000:]
    if code != 0:
        raise RuntimeError(f"{' '.join(str(c) for c in cmd[:4])} … exited {code}:\n{tail}")
    return seconds


def run_json(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> dict:
    """Runs ``cmd`` in a fresh process; its last stdout line, parsed as JSON.

    Raises:
        RuntimeError: The process failed; the message holds the end of its stderr.
    """
    out = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} … exited {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def jpeg_corpus(folder: Path, quality: int) -> str:
    """The measured properties of a folder of JPEGs: count, pixel size(s), mean file size, quality used."""
    from PIL import Image

    files = sorted(folder.rglob("*.jpg"))
    if not files:
        return f"{folder}: no JPEG files"
    sizes = set()
    for path in files[:: max(1, len(files) // 50)]:  # a spread of 50 is enough to see every size
        with Image.open(path) as im:
            sizes.add(im.size)
    kib = statistics.mean(p.stat().st_size for p in files) / 1024
    dims = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
    return f"{len(files)} JPEGs, {dims} px, mean {kib:.1f} KiB per file, written at JPEG quality {quality}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, for pasting results into BENCHMARKS.md."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
