"""Device, precision and memory-format choices, made once per run and recorded in its ledger."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tellapart._errors import UserError

__all__ = ["Runtime", "resolve_runtime", "environment_ledger", "mostly_grouped_convs"]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for fp32
    channels_last: bool
    threads: int

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 autocast then trains small CNNs about 2x faster (measured)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here; use --set device=cpu")
    return device


def mostly_grouped_convs(model: torch.nn.Module) -> bool:
    """Whether over a quarter of the model's Conv2d layers are grouped (depthwise separable: MobileNet, EfficientNet).

    Such nets train fastest in fp32 on the CPU (measured: MobileNetV2, fp32 channels_last), because
    bf16 depthwise kernels are slow there; plain CNNs train about 2x faster with bf16 autocast.
    """
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    grouped = sum(m.groups > 1 for m in convs)
    return bool(convs) and 4 * grouped > len(convs)


def resolve_runtime(
    device: str, precision: str, channels_last: str, threads: int, *, is_conv: bool, grouped_convs: bool = False
) -> Runtime:
    """Turns config choices (auto/on/off) into what this machine will actually use.

    ``precision: auto`` on the CPU picks bf16 autocast only for conv nets (``is_conv``) whose convolutions
    are not mostly grouped/depthwise (``grouped_convs``, see :func:`mostly_grouped_convs`), and only on
    CPUs with fast bf16; otherwise fp32. On a GPU it picks bf16 where supported, else fp16.
    """
    dev = resolve_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    amp: torch.dtype | None
    if precision == "fp32":
        amp = None
    elif precision == "bf16":
        amp = torch.bfloat16
    elif precision == "fp16":
        if dev.type != "cuda":
            raise UserError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        amp = torch.float16
    else:  # auto
        if dev.type == "cuda":
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp = torch.bfloat16 if (cpu_has_fast_bf16() and is_conv and not grouped_convs) else None
    cl = is_conv if channels_last == "auto" else channels_last == "on"
    return Runtime(dev, amp, cl, torch.get_num_threads())


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment_ledger(runtime: Runtime, **extra: Any) -> dict[str, Any]:
    """Versions, hardware and choices: what a reader needs to trust or repeat a run."""
    import numpy
    import torchvision

    import tellapart

    return {
        "tellapart": tellapart.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": str(runtime.device),
        "device_name": torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else platform.processor(),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "threads": runtime.threads,
        "malloc_tuned": "MALLOC_MMAP_THRESHOLD_" in os.environ,
        **extra,
    }
