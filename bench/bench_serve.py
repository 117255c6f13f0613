"""Benchmark: ``tellapart serve`` under 1, 4 and 16 concurrent clients vs in-process batched predict.

Serves a 64-px CNN (``s0_faces_cnn`` with random weights, unless ``--run`` names a model) with
the real ``tellapart serve`` on a loopback port, then, for each concurrency level, sends
``--requests`` single-image multipart requests (or stops at ``--time-limit`` seconds) from that
many clients over keep-alive connections, and reports throughput, p50/p95/p99 latency, errors and
the server's resident memory. The baseline is in-process ``Predictor.predict_proba`` on the same
encoded images in batches of ``--max-batch`` (decode + forward), and the forward pass alone.

Usage:
    python bench/bench_serve.py [--requests 2000] [--concurrency 1,4,16] [--time-limit 60]
                                [--max-batch 32] [--max-wait-ms 5] [--run RUN] [--out results.json]
Run it alone on the machine: the clients and the server share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_run(work: Path, size: int) -> Path:
    """A run folder holding a randomly initialised ``s0_faces_cnn`` at ``size`` px (speed only)."""
    import torch

    from tellapart.models import create_model
    from tellapart.train import save_checkpoint

    torch.manual_seed(0)
    spec = {"name": "s0_faces_cnn", "args": {}, "in_chans": 3, "num_outputs": 2, "input_size": size, "single_logit": False}
    model = create_model("s0_faces_cnn", in_chans=3, num_classes=2, input_size=size).eval()
    pre = {"size": size, "grayscale": False, "fit": "stretch", "mean": [0.5] * 3, "std": [0.25] * 3, "channels_last": False}
    run = work / "run"
    save_checkpoint(run / "checkpoints" / "best.pt", {"model": spec, "state_dict": model.state_dict(), "class_names": ["a", "b"], "preprocess": pre, "epoch": 0})
    return run


def make_images(n: int, side: int) -> list[bytes]:
    """``n`` distinct JPEGs of ``side`` px, as a phone or a web page would send them."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        coarse.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run: Path, port: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tellapart", "serve", str(run), "--host", "127.0.0.1", "--port", str(port), "--quiet",
            "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]  # fmt: skip
    process = subprocess.Popen(argv, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not come up within 120 s")


async def load(url: str, images: list[bytes], clients: int, requests: int, time_limit: float) -> dict[str, float]:
    """``clients`` workers share ``requests`` requests (bounded by ``time_limit`` s); latencies in ms."""
    import httpx

    latencies: list[float] = []
    errors = 0
    next_request = 0
    stop_at = time.monotonic() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_request, errors
        while next_request < requests and time.monotonic() < stop_at:
            k = next_request
            next_request += 1
            started = time.perf_counter()
            try:
                r = await client.post("/predict", files={"file": (f"{k}.jpg", images[k % len(images)], "image/jpeg")})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        seconds = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "clients": clients, "requests": len(latencies) + errors, "ok": len(latencies), "errors": errors,
        "seconds": round(seconds, 3), "req_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def in_process(run: Path, images: list[bytes], batch: int, requests: int, time_limit: float) -> dict[str, float]:
    """Images/s of ``predict_proba`` (decode + forward) and of the forward pass alone, in batches."""
    from tellapart.predict import load as load_model

    predictor = load_model(run)
    stream = [images[k % len(images)] for k in range(requests)]
    predictor.predict_proba(stream[:batch], batch_size=batch)  # warm-up
    done, started = 0, time.perf_counter()
    while done < len(stream) and time.perf_counter() - started < time_limit:
        predictor.predict_proba(stream[done : done + batch], batch_size=batch)
        done += len(stream[done : done + batch])
    full = done / (time.perf_counter() - started)
    pixels = np.stack([predictor.decode_image(b) for b in images[:batch]])
    done, started = 0, time.perf_counter()
    while done < requests and time.perf_counter() - started < time_limit:
        predictor.predict_pixels(pixels, batch_size=batch)
        done += len(pixels)
    forward = done / (time.perf_counter() - started)
    return {"batch": batch, "images_per_s": round(full, 1), "forward_only_images_per_s": round(forward, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level (default: 2000)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts (default: 1,4,16)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level at most (default: 60)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64, help="model input side, px (default: 64)")
    parser.add_argument("--image-side", type=int, default=256, help="side of the JPEGs sent, px (default: 256)")
    parser.add_argument("--run", type=Path, help="serve this model instead of a random 64-px CNN")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_run(Path(tmp), args.size)
        images = make_images(64, args.image_side)
        port = free_port()
        server = start_server(run, port, args.max_batch, args.max_wait_ms)
        results: dict[str, object] = {"cpu_count": os.cpu_count(), "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                                      "image_side": args.image_side, "server_rss_mb_idle": round(rss_mb(server.pid), 1), "levels": []}  # fmt: skip
        try:
            for clients in [int(c) for c in args.concurrency.split(",")]:
                level = asyncio.run(load(f"http://127.0.0.1:{port}", images, clients, args.requests, args.time_limit))
                level["server_rss_mb"] = round(rss_mb(server.pid), 1)
                results["levels"].append(level)  # type: ignore[attr-defined]
                print(json.dumps(level), flush=True)
            import httpx

            results["server_batching"] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["batching"]
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        results["in_process"] = in_process(run, images, args.max_batch, args.requests, args.time_limit)
    print(f"{'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS MB':>7}")
    for lv in results["levels"]:  # type: ignore[attr-defined]
        print(f"{lv['clients']:>7} {lv['req_per_s']:>8} {lv['p50_ms']:>8} {lv['p95_ms']:>8} {lv['p99_ms']:>8} {lv['errors']:>6} {lv['server_rss_mb']:>7}")
    ip = results["in_process"]
    print(f"in-process predict_proba, batches of {ip['batch']}: {ip['images_per_s']} img/s (forward only {ip['forward_only_images_per_s']} img/s)")  # type: ignore[index]
    print(f"server batching: {results['server_batching']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
