"""A LitServe server for a tellapart model, so LitServe can be measured against ``tellapart serve``.

Like for like with ``tellapart serve``: the same model and preprocessing (``tellapart.load(RUN)``,
``Predictor.decode_image`` then ``Predictor.predict_pixels``), the same batching limits (at most
``--max-batch`` images per forward pass, at most ``--max-wait-ms`` ms spent collecting them), the
same uvicorn settings (keep-alive 5 s, at most 256 connections, no access log) and the same JSON
answer to ``POST /predict`` with a multipart ``file`` field: ``{"model", "predictions": [{"name",
"label", "probability", "top_k"}]}`` with the top 5 classes.

Where LitServe 0.2 works differently, by its design rather than by choice here:

- ``--workers`` inference processes (``workers_per_device``), each with its own copy of the model,
  plus as many HTTP server processes; requests travel between them through multiprocessing queues.
- The HTTP process parses the multipart body; the image bytes are then pickled to an inference
  worker, which decodes each image (``decode_request``) one after another before the forward pass,
  on the same process as the model. ``tellapart serve`` decodes on a thread pool beside the model.
- Its batch window starts when the worker starts collecting, not when the first request arrives.
- A body that is not a form is read as JSON, so raw image bytes (``tellapart serve``'s other way
  in) are not accepted; an image that fails to decode fails every request of its batch.

Each worker counts its batches in a small memory-mapped file under ``--stats-dir`` (no system
call per batch); :func:`read_stats` sums them, for the same "batches formed" figure that
``tellapart serve`` reports at ``GET /health``.

Usage:
    python bench/litserve_app.py RUN [--port 8000] [--workers 1] [--max-batch 32] [--max-wait-ms 5]
                                     [--stats-dir DIR]
Needs LitServe: ``pip install 'tellapart[bench]'``.
"""

from __future__ import annotations

import argparse
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException

#: Classes in each answer, as ``tellapart serve``'s default ``top_k``.
TOP_K = 5

#: batches, images, largest batch: three little-endian int64 per worker file.
_COUNTERS = struct.Struct("<qqq")


class _BatchCounter:
    """Batches and images one inference worker ran, kept in a memory-mapped file another process reads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w+b") as f:
            f.truncate(_COUNTERS.size)
            self._map = mmap.mmap(f.fileno(), _COUNTERS.size)
        self.batches = self.images = self.largest = 0

    def add(self, images: int) -> None:
        self.batches += 1
        self.images += images
        self.largest = max(self.largest, images)
        _COUNTERS.pack_into(self._map, 0, self.batches, self.images, self.largest)


def read_stats(stats_dir: Path) -> dict[str, float]:
    """Batching over every worker that wrote under ``stats_dir``, in ``tellapart serve``'s /health terms."""
    batches = images = largest = 0
    for path in sorted(stats_dir.glob("worker-*.bin")):
        b, n, big = _COUNTERS.unpack(path.read_bytes()[: _COUNTERS.size])
        batches, images, largest = batches + b, images + n, max(largest, big)
    mean = images / batches if batches else 0.0
    return {"batches": batches, "images": images, "largest_batch": largest, "mean_batch": round(mean, 3)}


def top_k_answer(name: str, probs: np.ndarray, classes: list[str], top_k: int) -> dict[str, Any]:
    """One image's answer, field for field as ``tellapart serve``'s ``POST /predict`` writes it."""
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [{"label": classes[int(k)], "probability": float(probs[int(k)])} for k in order]
    return {"name": name, "label": top[0]["label"], "probability": top[0]["probability"], "top_k": top}


class TellapartAPI(ls.LitAPI):
    """Serves ``tellapart.load(run)`` with LitServe's dynamic batching.

    Args:
        run: the model folder ``tellapart serve`` would be given (run, export, ...).
        max_batch: most images per forward pass.
        max_wait_ms: longest the worker collects a batch, milliseconds.
        stats_dir: folder for the per-worker batch counters; None counts nothing.
    """

    def __init__(self, run: Path, *, max_batch: int, max_wait_ms: float, stats_dir: Path | None = None) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=max_wait_ms / 1000)
        self.model_path = run
        self.max_batch = max_batch
        self.stats_dir = stats_dir

    def setup(self, device: str) -> None:
        import tellapart

        self.predictor = tellapart.load(self.model_path)
        self.classes = list(self.predictor.class_names)
        self.top_k = min(TOP_K, len(self.classes))
        self.counter = _BatchCounter(self.stats_dir / f"worker-{os.getpid()}.bin") if self.stats_dir else None

    # LitServe reads decode_request's ``request`` annotation and encode_response's return annotation
    # as the endpoint's FastAPI types: left bare, the body arrives as a parsed form (starlette FormData)
    # and the answer is written as plain JSON, with no response model to validate it against.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        upload = request.get("file") if hasattr(request, "get") else None
        if upload is None or not hasattr(upload, "file"):
            raise HTTPException(400, "the multipart body holds no file: send the image as a file field (curl -F file=@img.jpg)")
        upload.file.seek(0)
        name = upload.filename or "file-0"
        try:
            return name, self.predictor.decode_image(upload.file.read())
        except ValueError as exc:
            raise HTTPException(400, f"{name!r}: {exc}") from None

    def batch(self, inputs: list[tuple[str, np.ndarray]]) -> tuple[list[str], np.ndarray]:
        return [name for name, _ in inputs], np.stack([pixels for _, pixels in inputs])

    def predict(self, x: tuple[list[str], np.ndarray]) -> list[tuple[str, np.ndarray]]:
        names, pixels = x
        probs = self.predictor.predict_pixels(pixels, batch_size=max(self.max_batch, len(pixels)))
        if self.counter is not None:
            self.counter.add(len(pixels))
        return list(zip(names, probs))

    def unbatch(self, output: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
        return output

    def encode_response(self, output: tuple[str, np.ndarray]):  # type: ignore[no-untyped-def]
        name, probs = output
        return {"model": self.predictor.model_id, "predictions": [top_k_answer(name, probs, self.classes, self.top_k)]}


def build_server(run: Path, *, workers: int, max_batch: int, max_wait_ms: float, stats_dir: Path | None) -> ls.LitServer:
    """The LitServer: ``workers`` CPU inference processes, each batching up to ``max_batch`` images."""
    api = TellapartAPI(run, max_batch=max_batch, max_wait_ms=max_wait_ms, stats_dir=stats_dir)
    return ls.LitServer(api, accelerator="cpu", workers_per_device=workers, disable_openapi_url=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the model folder, as for tellapart serve")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="inference processes (LitServe's workers_per_device; default: 1)")
    parser.add_argument("--max-batch", type=int, default=32, help="most images per forward pass (default: 32)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="longest a batch is collected, ms (default: 5)")
    parser.add_argument("--stats-dir", type=Path, help="write per-worker batch counters here")
    args = parser.parse_args()
    server = build_server(args.run, workers=args.workers, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, stats_dir=args.stats_dir)
    # uvicorn settings as tellapart serve's: keep-alive 5 s, 256 connections at most, no access log
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False,
               access_log=False, timeout_keep_alive=5, limit_concurrency=256)  # fmt: skip


if __name__ == "__main__":  # LitServe spawns its inference workers, which import this file again
    main()
