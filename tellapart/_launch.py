"""Process start-up settings that must be in place before Python allocates anything.

glibc's default malloc returns large freed blocks to the OS and faults them back in on the next
batch; for small-CNN training on the CPU that page-fault churn dominated (measured 2.5x slower
on the 150x150 grid CNN). Raising the mmap/trim thresholds keeps the memory in the process.
These variables are read once at process start, so training commands re-execute themselves.
"""

from __future__ import annotations

import os
import sys

__all__ = ["MALLOC_SETTINGS", "reexec_with_tuned_malloc"]

MALLOC_SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": "10000000000",  # bytes: never serve allocations by mmap
    "MALLOC_TRIM_THRESHOLD_": "10000000000",  # bytes: never give freed heap back to the OS
    "MALLOC_TOP_PAD_": "1000000000",  # bytes of slack grown with each heap extension
}


def reexec_with_tuned_malloc() -> None:
    """Replaces this process with itself under the malloc settings, once (Linux/glibc only).

    Set ``TELLAPART_NO_REEXEC=1`` to opt out (e.g. under a profiler).
    """
    if not sys.platform.startswith("linux") or os.environ.get("TELLAPART_NO_REEXEC"):
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_SETTINGS.items()):
        return
    env = {**os.environ, **MALLOC_SETTINGS, "TELLAPART_NO_REEXEC": "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tellapart", *sys.argv[1:]], env)
