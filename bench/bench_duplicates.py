"""Benchmark: near-duplicate detection against ground truth, per image size, and its speed.

Ground truth is planted in real images: each of ``--copies`` randomly chosen images gets one
true near duplicate made from it by one edit (JPEG re-encoding at another quality, resizing,
a small crop, a shift, a brightness/contrast change, or a format change); every other pair of
the set (distinct images, many of the same class) is *not* a near duplicate. The images:

  * 8 px: scikit-learn's 8x8 digits (1,797 images, 0-16 scaled to 0-255);
  * 28 px: Fashion-MNIST (``/usr/share/datasets/fashion-mnist``);
  * 64, 256, 1024 px: photo-like synthetic faces (``tellapart.data.synth_faces``'s renderer).

Every set is written as image files and run through ``check_source`` (what ``tellapart data
check`` does), so the figures are the command's. Precision = flagged pairs that are planted /
flagged pairs; recall = planted pairs flagged / planted pairs. These are measured once per size:
they are counts that the seeded files fix, so repetitions would repeat them exactly.

Then the time of ``check_source`` on 10,000 and 100,000 Fashion-MNIST images (the 70,000
originals plus planted copies), by the method (bench/_method.py): each set is written once, each
timing is a fresh process (the check timed from just before it starts, imports excluded), the set
sizes interleave (10,000, 100,000, 10,000, …) for ``--repeats`` rounds, and the median and
min–max are printed.

Reproduce (alone on the machine):
    .venv/bin/python bench/bench_duplicates.py --repeats 3
    .venv/bin/python bench/bench_duplicates.py --sizes 8 28 --no-timing
    .venv/bin/python bench/bench_duplicates.py --scores             # the false pairs found, to calibrate floors
Check that it runs (small sets, one round; figures meaningless):
    .venv/bin/python bench/bench_duplicates.py --smoke
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from _method import interleaved, markdown_table, rounds, run_json
from PIL import Image

from tellapart.data import check_source, open_source

FMNIST = Path("/usr/share/datasets/fashion-mnist")
EDITS = ("jpeg", "resize", "crop", "shift", "tone", "format")


def digits_8px() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target


def fmnist(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for prefix in ("train", "t10k"):
        images.append(np.frombuffer(gzip.decompress((FMNIST / f"{prefix}-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8).reshape(-1, 28, 28))
        labels.append(np.frombuffer(gzip.decompress((FMNIST / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    return (x[:n], y[:n]) if n else (x, y)


def faces(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Photo-like faces; the two classes are the renderer's photo and comic of different faces."""
    from tellapart.data._synth import render_pair

    out = np.zeros((n, size, size, 3), np.uint8)
    for k in range(n):
        photo, comic = render_pair(np.random.default_rng([seed, size, k]), size)
        out[k] = photo if k % 2 == 0 else comic
    return out, np.arange(n) % 2


def edit(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A true near duplicate of ``img`` and the file format to save it in."""
    side = min(img.size)
    if kind == "jpeg":
        q = int(rng.integers(60, 96))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())), "JPEG"
    if kind == "resize":  # smaller (down to 3/4) or larger (up to 2x), as scrapers store it
        f = float(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.25, 2.0)]))
        return img.resize((max(4, round(img.width * f)), max(4, round(img.height * f))), Image.Resampling.BICUBIC), "PNG"
    if kind == "crop":  # up to 5% off each side, at least one pixel in all
        c = max(1, round(0.05 * side))
        box = [int(rng.integers(0, c + 1)) for _ in range(4)]
        if not any(box):
            box[int(rng.integers(0, 4))] = 1
        return img.crop((box[0], box[1], img.width - box[2], img.height - box[3])), "PNG"
    if kind == "shift":  # up to 4% of the side (at least one pixel), the border filled by the edge colour
        s = max(1, round(0.04 * side))
        dx, dy = 0, 0
        while (dx, dy) == (0, 0):
            dx, dy = (int(v) for v in rng.integers(-s, s + 1, 2))
        arr = np.asarray(img)
        pad = [(abs(dy), abs(dy)), (abs(dx), abs(dx))] + [(0, 0)] * (arr.ndim - 2)
        big = np.pad(arr, pad, mode="edge")
        y0, x0 = abs(dy) - dy, abs(dx) - dx
        return Image.fromarray(big[y0 : y0 + arr.shape[0], x0 : x0 + arr.shape[1]]), "PNG"
    if kind == "tone":  # contrast x0.75-1.25, brightness -25..+25 levels
        a, b = rng.uniform(0.75, 1.25), rng.uniform(-25, 25)
        arr = np.clip(np.asarray(img, np.float32) * a + b, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr), "PNG"
    if kind == "format":  # another container, colour images to grey
        fmt = str(rng.choice(["BMP", "TIFF", "WEBP"]))
        out = img.convert("L") if img.mode == "RGB" and rng.random() < 0.5 else img
        return out, fmt
    raise ValueError(kind)


def write_set(folder: Path, images: np.ndarray, labels: np.ndarray, copies: int, seed: int) -> tuple[set[frozenset[str]], dict[str, str]]:
    """Writes ``images`` as class folders plus planted copies; returns the true pairs and each copy's edit."""
    rng = np.random.default_rng(seed)
    base_fmt = "PNG" if images.shape[1] < 64 else "JPEG"
    ids = []
    for k, (x, y) in enumerate(zip(images, labels)):
        name = f"c{y}/{k:06d}.{'png' if base_fmt == 'PNG' else 'jpg'}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / name, base_fmt, **({"quality": 90} if base_fmt == "JPEG" else {}))
        ids.append(name)
    truth, kinds = set(), {}
    for n, k in enumerate(rng.choice(len(images), size=min(copies, len(images)), replace=False).tolist()):
        kind = EDITS[n % len(EDITS)]
        copy, fmt = edit(Image.open(folder / ids[k]), kind, rng)
        name = f"c{labels[k]}/copy{n:06d}.{fmt.lower()}"
        copy.save(folder / name, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        truth.add(frozenset((ids[k], name)))
        kinds[name] = kind
    return truth, kinds


def score_set(images: np.ndarray, labels: np.ndarray, copies: int, seed: int, workers: int, scores: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        truth, kinds = write_set(Path(tmp), images, labels, copies, seed)
        report = check_source(open_source(tmp), workers=workers, progress=False)
    flagged = {frozenset((d["a"], d["b"])): d for d in report.near_duplicates}
    flagged |= {frozenset((g[0], b)): {"a": g[0], "b": b, "similarity": 1.0} for g in report.exact_duplicates for b in g[1:]}
    hits = flagged.keys() & truth
    missed = Counter(kinds[max(p, key=lambda s: "copy" in s)] for p in truth - hits)
    false = [flagged[p] for p in flagged.keys() - truth]
    if scores:
        for d in false[:10]:
            print(f"    false: {d}", file=sys.stderr)
    return {
        "n": report.total,
        "planted": len(truth),
        "flagged": len(flagged),
        "precision": len(hits) / len(flagged) if flagged else 1.0,
        "recall": len(hits) / len(truth),
        "missed": dict(missed),
    }


CHECK_SCRIPT = r"""
import json, sys, time
from tellapart.data import check_source, open_source
folder, workers = sys.argv[1], int(sys.argv[2])
started = time.perf_counter()  # from just before the check: imports are not the check's cost
report = check_source(open_source(folder), workers=workers, progress=False)
print(json.dumps({"images": report.total, "seconds": time.perf_counter() - started}))
"""


def timing_set(folder: Path, n: int) -> None:
    """``n`` 28-px Fashion-MNIST files in ``folder``: the 70,000 originals, then planted copies shifted by a pixel."""
    x, y = fmnist()
    reps = -(-n // len(x))
    x, y = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
    if n > 70_000:  # beyond the originals: planted copies (shifted by a pixel), not identical files
        x = x.copy()
        x[70_000:] = np.roll(x[70_000:], 1, axis=2)
    write_set(folder, x, y, copies=0, seed=0)


def time_check(folder: Path, workers: int) -> float:
    """Seconds of ``check_source`` over ``folder`` in one fresh process."""
    return float(run_json([sys.executable, "-c", CHECK_SCRIPT, str(folder), str(workers)])["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 28, 64, 256, 1024])
    p.add_argument("--images", type=int, default=4000, help="distinct images per size (fewer at 256 and 1024 px: rendering is slow)")
    p.add_argument("--copies", type=int, default=600, help="planted near duplicates per size")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--timing-images", type=int, nargs="+", default=[10_000, 100_000], help="28-px set sizes timed (default: 10000 100000)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process timings per set size (3+)")
    p.add_argument("--smoke", action="store_true", help="check the script runs: 8 and 28 px, 300 images, 1,000-image timing, 1 round (figures meaningless)")
    p.add_argument("--scores", action="store_true", help="print the false pairs found")
    args = p.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    if args.smoke:
        args.sizes, args.images, args.copies, args.timing_images = [8, 28], 300, 50, [1_000]
    rows = []
    for size in args.sizes:
        if size == 8:
            images, labels = digits_8px()
        elif size == 28:
            images, labels = fmnist(args.images)
        else:
            n = {64: args.images // 4, 256: args.images // 16, 1024: args.images // 40}.get(size, args.images // 16)
            images, labels = faces(max(n, 40), size)
        copies = min(args.copies, len(images) // 3)
        result = score_set(images, labels, copies, seed=size, workers=args.workers, scores=args.scores)
        rows.append((size, result))
        print(f"{size:5d} px: {result}", file=sys.stderr)
    print("\n| side (px) | images | planted pairs | flagged | precision | recall | missed by edit |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for size, r in rows:
        missed = ", ".join(f"{k} {v}" for k, v in sorted(r["missed"].items())) or "none"  # type: ignore[union-attr]
        print(f"| {size} | {r['n']:,} | {r['planted']} | {r['flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | {missed} |")
    if not args.no_timing:
        with tempfile.TemporaryDirectory() as tmp:
            folders = {n: Path(tmp) / f"n{n}" for n in args.timing_images}
            for n, folder in folders.items():
                timing_set(folder, n)  # written once; every timed run reads the same files, warm in the page cache
            print(f"\ncheck_source on 28-px Fashion-MNIST files, {args.workers} workers:", file=sys.stderr, flush=True)
            samples = interleaved({f"{n:,}": (lambda folder=folder: time_check(folder, args.workers)) for n, folder in folders.items()},
                                  n_rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
        print()
        print(markdown_table(["images (28 px files)", "workers", "check_source time"], [[n, args.workers, s.describe("s", 2)] for n, s in samples.items()]))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
