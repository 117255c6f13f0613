"""Micro-benchmark: tellapart's Mish vs ``torch.nn.Mish``, forward + backward, on 2 CPU threads.

One (128, 64, 32, 32) float32 tensor (S3's first feature maps at batch 128). Each side runs
``--reps`` timed forward+backward passes after 3 untimed ones (the first builds tellapart's
one-pass kernel); the sides interleave for ``--repeats`` rounds in one process (bench/_method.py's
reporting: median, min–max, ratio of medians). In-process and kernel-level: indicative of the
activation's cost only, not of training speed (bench_train.py measures that).

Reproduce (alone on the machine):
    .venv/bin/python bench/bench_mish.py --repeats 3 --reps 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _method import check_repeats, interleaved, ratio_of_medians
from torch import nn

from tellapart.models import Mish


def per_pass_ms(module: nn.Module, x0: torch.Tensor, reps: int) -> float:
    """Median milliseconds of one forward + backward pass."""
    for _ in range(3):
        x = x0.clone().requires_grad_()
        module(x).sum().backward()
    times = []
    for _ in range(reps):
        x = x0.clone().requires_grad_()
        started = time.perf_counter()
        y = module(x)
        y.backward(torch.ones_like(y))
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3+)")
    parser.add_argument("--reps", type=int, default=15, help="timed passes per side per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    check_repeats(args.repeats)
    torch.set_num_threads(args.threads)
    x0 = torch.randn(128, 64, 32, 32)
    samples = interleaved(
        {"torch.nn.Mish": lambda: per_pass_ms(nn.Mish(), x0, args.reps), "tellapart Mish": lambda: per_pass_ms(Mish(), x0, args.reps)},
        args.repeats,
    )
    for s in samples.values():
        print(f"{s.label}: {s.describe('ms')}")
    print(f"speed-up (ratio of median times): {ratio_of_medians(samples['torch.nn.Mish'], samples['tellapart Mish']):.2f}x")


if __name__ == "__main__":
    main()
