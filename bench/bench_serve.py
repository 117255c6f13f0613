"""Benchmark: a model server under 1, 4 and 16 concurrent clients vs in-process batched predict.

Serves a 64-px CNN (``s0_faces_cnn`` with random weights, unless ``--run`` names a model) on a
loopback port with one of two server stacks, ``--server``:

- ``tellapart`` (default): the real ``tellapart serve`` (FastAPI + uvicorn, its own asyncio
  micro-batcher). With ``--workers N`` > 1, uvicorn runs N processes of the same app
  (``tellapart.serve.create_app``, same limits and uvicorn settings as ``tellapart serve``); the
  batcher lives inside each process, so each worker batches only the requests it received.
- ``litserve``: ``bench/litserve_app.py``, LitServe's dynamic batching around the same
  ``Predictor`` (``--workers`` is its ``workers_per_device``: N inference processes plus N HTTP
  processes). Needs ``pip install 'tellapart[bench]'``.

Like for like: the same model (the same seeded weights, or ``--run``), the same 64 JPEG bytes sent
by the same client code, the same batching limits (``--max-batch`` images, ``--max-wait-ms``), the
same uvicorn keep-alive and connection limits, and the same answer fields. Before the load, the
first 8 images are sent one by one and their answers kept (``answers`` in the JSON);
``--compare-with`` an earlier result file checks that both servers gave the same top classes.

For each concurrency level it sends ``--requests`` single-image multipart requests (or stops at
``--time-limit`` seconds) from that many clients over keep-alive connections, and reports
throughput, p50/p95/p99 latency, errors and the server's memory summed over its process tree
(RSS counts pages shared by forked processes once per process; PSS shares them out), then the
batches the server formed. The baseline is in-process ``Predictor.predict_proba`` on the same
encoded images in batches of ``--max-batch`` (decode + forward), and the forward pass alone.
With several workers, ``--torch-threads 1`` keeps their PyTorch thread pools from fighting over
the cores (set for every process of either stack). uvicorn's "auto" event loop and HTTP parser
(uvloop and httptools when installed; LitServe installs both) serve both stacks alike and are
recorded in ``http_stack``.

The method (bench/_method.py): a round is a fresh server process (probe, warm-up, then every
concurrency level in turn) followed by the in-process baseline in a fresh process; ``--repeats``
rounds, so each setting is measured in every round, interleaved with the others. Printed: the
median over rounds of every figure, and min–max of throughput and p99; ``--out`` holds every
round too. The two stacks are two invocations, not interleaved sides of one, because
``--server``, ``--workers`` and ``--compare-with`` describe one stack per run: run them one after
the other.

Usage:
    python bench/bench_serve.py [--server tellapart|litserve] [--workers 1] [--requests 2000]
                                [--concurrency 1,4,16] [--time-limit 60] [--max-batch 32]
                                [--max-wait-ms 5] [--run RUN] [--out results.json]
                                [--torch-threads N] [--compare-with other-results.json] [--repeats 3]
Reproduce (alone on the machine: the clients and the server share its cores):
    .venv/bin/python bench/bench_serve.py --server tellapart --repeats 3 --out /tmp/serve-tellapart.json
    .venv/bin/python bench/bench_serve.py --server litserve --repeats 3 --out /tmp/serve-litserve.json --compare-with /tmp/serve-tellapart.json
Check that it runs (a few requests, one round; figures meaningless):
    .venv/bin/python bench/bench_serve.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _method import Samples, interleaved_figures, rounds, run_json
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


def tree_pids(root: int) -> list[int]:
    """``root`` and every process below it: LitServe and ``uvicorn --workers`` run several."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        except (OSError, IndexError):
            continue  # the process ended while the table was read
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _proc_kb(path: str, key: str) -> float:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def server_memory(root: int) -> dict[str, float]:
    """Memory of the server's whole process tree, MB: RSS summed (shared pages once per process) and PSS."""
    pids = tree_pids(root)
    rss = sum(_proc_kb(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
    pss = sum(_proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
    return {"server_processes": len(pids), "server_rss_mb": round(rss / 1024, 1), "server_pss_mb": round(pss / 1024, 1)}


#: Environment that hands the model and batching limits to :func:`tellapart_app` in each uvicorn worker.
_ENV_RUN, _ENV_BATCH, _ENV_WAIT = "TELLAPART_BENCH_RUN", "TELLAPART_BENCH_MAX_BATCH", "TELLAPART_BENCH_MAX_WAIT_MS"


def tellapart_app():  # type: ignore[no-untyped-def]
    """The ``tellapart serve`` app for ``uvicorn --factory --workers N``: one model and one batcher per worker."""
    from tellapart.predict import load as load_model
    from tellapart.serve import ServeConfig, create_app

    run = Path(os.environ[_ENV_RUN])
    config = ServeConfig(max_batch=int(os.environ[_ENV_BATCH]), max_wait_ms=float(os.environ[_ENV_WAIT]))
    return create_app(load_model(run), config, origin=run)


@dataclass(frozen=True)
class ServerSpec:
    """Which server stack runs, and its process count and batching limits (the same for every stack)."""

    stack: str  # "tellapart" or "litserve"
    workers: int  # processes that run the model
    max_batch: int  # most images per forward pass
    max_wait_ms: float  # longest a request waits for company, milliseconds
    torch_threads: int | None = None  # intra-op threads of each model process; None: PyTorch's default (every core)


def server_argv(spec: ServerSpec, run: Path, port: int, stats_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that start ``spec``'s server on ``port``."""
    env = dict(os.environ)
    if spec.torch_threads:  # read by PyTorch at import, in every process of the server's tree
        env.update(OMP_NUM_THREADS=str(spec.torch_threads), MKL_NUM_THREADS=str(spec.torch_threads))
    limits = ["--max-batch", str(spec.max_batch), "--max-wait-ms", str(spec.max_wait_ms)]
    if spec.stack == "litserve":
        app = str(Path(__file__).with_name("litserve_app.py"))
        return [sys.executable, app, str(run), "--port", str(port), "--workers", str(spec.workers), "--stats-dir", str(stats_dir), *limits], env
    if spec.workers == 1:  # the real CLI, as users run it
        return [sys.executable, "-m", "tellapart", "serve", str(run), "--host", "127.0.0.1", "--port", str(port), "--quiet", *limits], env
    # tellapart serve runs one uvicorn process; several need uvicorn's own supervisor and an app
    # factory, with the uvicorn settings tellapart/serve/_server.py uses
    env.update({_ENV_RUN: str(run), _ENV_BATCH: str(spec.max_batch), _ENV_WAIT: str(spec.max_wait_ms)})
    argv = [sys.executable, "-m", "uvicorn", "bench_serve:tellapart_app", "--factory", "--app-dir", str(Path(__file__).parent),
            "--workers", str(spec.workers), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--no-access-log", "--timeout-keep-alive", "5", "--timeout-graceful-shutdown", "10", "--limit-concurrency", "256"]  # fmt: skip
    return argv, env


def start_server(spec: ServerSpec, run: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    """Starts the server and returns once ``GET /health`` answers 200 (both stacks have it)."""
    import httpx

    argv, env = server_argv(spec, run, port, work / "batch-stats")
    log = work / "server.log"  # a file, not a pipe: a pipe nobody reads fills up and stalls the server
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"server did not come up within 180 s: {log.read_text(errors='replace')[-2000:]}")


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22: start time, clock ticks
    except (OSError, IndexError):
        return None


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the server, then SIGKILL to those of its processes still there after 30 s.

    A process is killed only if its start time is the one seen before the Ctrl-C, so a process
    that reused the number of one that ended is left alone.
    """
    started = {pid: _start_time(pid) for pid in tree_pids(process.pid)}
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for pid, when in started.items():
        if when is not None and _start_time(pid) == when:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    process.wait()


def server_batching(spec: ServerSpec, port: int, work: Path) -> dict[str, object]:
    """Batches the server formed: tellapart's ``/health`` (one worker's when several), LitServe's counters."""
    if spec.stack == "litserve":
        from litserve_app import read_stats

        return read_stats(work / "batch-stats")
    import httpx

    stats = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["batching"]
    return {**stats, "of_one_worker_of": spec.workers} if spec.workers > 1 else stats


def probe_answers(url: str, images: list[bytes]) -> list[dict[str, object]]:
    """Each image's top class and probability, sent one at a time (also warms the model up)."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for k, data in enumerate(images):
            r = client.post("/predict", files={"file": (f"{k}.jpg", data, "image/jpeg")})
            r.raise_for_status()
            body = r.json()
            top = body["predictions"][0]
            out.append({"model": body["model"], "label": top["label"], "probability": round(top["probability"], 6)})
    return out


def agreement(ours: list[dict[str, object]], theirs: list[dict[str, object]]) -> dict[str, object]:
    """Whether two servers answered the probe images alike: same model, same top class, probability gap."""
    pairs = list(zip(ours, theirs))
    return {
        "images": len(pairs),
        "same_model": all(a["model"] == b["model"] for a, b in pairs),
        "same_top_class": sum(a["label"] == b["label"] for a, b in pairs),
        "max_probability_gap": max((abs(float(a["probability"]) - float(b["probability"])) for a, b in pairs), default=0.0),  # type: ignore[arg-type]
    }


def http_stack() -> dict[str, object]:
    """uvicorn's event loop and HTTP parser here ("auto" picks uvloop and httptools when installed)."""
    import importlib.util

    import uvicorn

    return {"uvicorn": uvicorn.__version__, "uvloop": importlib.util.find_spec("uvloop") is not None,
            "httptools": importlib.util.find_spec("httptools") is not None}  # fmt: skip


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


IN_PROCESS_SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_serve import in_process, make_images
run, side, batch, requests, time_limit = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
print(json.dumps(in_process(run, make_images(64, side), batch, requests, time_limit)))
"""


def in_process_round(run: Path, args: argparse.Namespace) -> dict[str, float]:
    """The in-process baseline in a fresh process (the same seeded JPEGs, made again there)."""
    cmd = [sys.executable, "-c", IN_PROCESS_SCRIPT, str(Path(__file__).parent), str(run), str(args.image_side),
           str(args.max_batch), str(args.requests), str(args.time_limit)]  # fmt: skip
    return run_json(cmd)


def server_round(spec: ServerSpec, run: Path, images: list[bytes], args: argparse.Namespace, work: Path) -> dict[str, object]:
    """One fresh server: probe answers, a warm-up, every concurrency level, its batching; then stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shutil.rmtree(work / "batch-stats", ignore_errors=True)  # LitServe's counters: this server's batches only
    server = start_server(spec, run, port, work)
    out: dict[str, object] = {"idle": server_memory(server.pid), "levels": []}
    try:
        out["answers"] = probe_answers(url, images[:8])
        asyncio.run(load(url, images, 4 * spec.workers, 16 * spec.workers, args.time_limit))  # every worker's first batches
        for clients in [int(c) for c in args.concurrency.split(",")]:
            level = asyncio.run(load(url, images, clients, args.requests, args.time_limit))
            level.update(server_memory(server.pid))
            out["levels"].append(level)  # type: ignore[attr-defined]
            print(json.dumps(level), flush=True)
        out["server_batching"] = server_batching(spec, port, work)
    finally:
        stop_server(server)
    return out


def level_figures(levels: list[dict[str, float]]) -> dict[str, float]:
    """One server round's levels as named figures, ``"<clients>|<key>"``."""
    return {f"{lv['clients']}|{key}": float(value) for lv in levels for key, value in lv.items() if key != "clients"}


#: Figures that count things (requests, processes): their median is shown as a whole number.
COUNTS = ("requests", "ok", "errors", "server_processes")


def summarise_levels(samples: dict[str, Samples]) -> list[dict[str, object]]:
    """Per concurrency level: every figure's median over rounds, and the min–max of throughput and p99."""
    by_level: dict[int, dict[str, object]] = {}
    for name, s in samples.items():
        clients, key = name.split("|", 1)
        level = by_level.setdefault(int(clients), {"clients": int(clients), "rounds": len(s.values)})
        level[key] = int(s.median) if key in COUNTS else round(s.median, 2)
        if key in ("req_per_s", "p99_ms"):
            level[f"{key}_min_max"] = [round(min(s.values), 2), round(max(s.values), 2)]
    return [by_level[c] for c in sorted(by_level)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=("tellapart", "litserve"), default="tellapart", help="server stack (default: tellapart)")
    parser.add_argument("--workers", type=int, default=1, help="processes running the model (default: 1)")
    parser.add_argument("--torch-threads", type=int, help="PyTorch threads per server process (default: PyTorch's, every core)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level (default: 2000)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts (default: 1,4,16)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level at most (default: 60)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64, help="model input side, px (default: 64)")
    parser.add_argument("--image-side", type=int, default=256, help="side of the JPEGs sent, px (default: 256)")
    parser.add_argument("--run", type=Path, help="serve this model instead of a random 64-px CNN")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--compare-with", type=Path, help="an earlier --out file: check both servers gave the same answers")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds, each a fresh server and a fresh in-process baseline (3+)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 40 requests at 1 and 4 clients, 1 round (figures meaningless)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    n_rounds = rounds(args.repeats, args.smoke)
    if args.smoke:
        args.requests, args.concurrency, args.time_limit = 40, "1,4", 10.0
    spec = ServerSpec(args.server, args.workers, args.max_batch, args.max_wait_ms, args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = args.run or make_run(work, args.size)
        images = make_images(64, args.image_side)
        results: dict[str, object] = {"server": spec.stack, "workers": spec.workers, "torch_threads": spec.torch_threads, "cpu_count": os.cpu_count(),
                                      "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "image_side": args.image_side,
                                      "http_stack": http_stack(), "rounds": n_rounds}  # fmt: skip
        server_rounds: list[dict[str, object]] = []
        in_process_rounds: list[dict[str, float]] = []

        def serve(_round: int) -> dict[str, float]:
            server_rounds.append(server_round(spec, run, images, args, work))
            return level_figures(server_rounds[-1]["levels"])  # type: ignore[arg-type]

        def baseline(_round: int) -> dict[str, float]:
            in_process_rounds.append(in_process_round(run, args))
            return {k: v for k, v in in_process_rounds[-1].items() if k != "batch"}

        samples = interleaved_figures({"server": serve, "in-process": baseline}, n_rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
    results["idle"] = server_rounds[0]["idle"]
    results["answers"] = server_rounds[0]["answers"]
    results["levels"] = summarise_levels(samples["server"])
    results["level_rounds"] = [r["levels"] for r in server_rounds]
    results["server_batching"] = [r["server_batching"] for r in server_rounds]
    ip = {"batch": args.max_batch, **{k: round(s.median, 1) for k, s in samples["in-process"].items()}}
    results["in_process"] = {**ip, "rounds": in_process_rounds}
    print(f"server: {spec.stack}, {spec.workers} worker(s); {results['http_stack']}; medians of {n_rounds} round(s), min–max in brackets")
    print(f"{'clients':>7} {'req/s':>24} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>22} {'errors':>6} {'RSS MB':>7} {'PSS MB':>7} {'procs':>5}")
    for lv in results["levels"]:  # type: ignore[attr-defined]
        rps = f"{lv['req_per_s']} ({lv['req_per_s_min_max'][0]}–{lv['req_per_s_min_max'][1]})"
        p99 = f"{lv['p99_ms']} ({lv['p99_ms_min_max'][0]}–{lv['p99_ms_min_max'][1]})"
        print(f"{lv['clients']:>7} {rps:>24} {lv['p50_ms']:>8} {lv['p95_ms']:>8} {p99:>22} {lv['errors']:>6} "
              f"{lv['server_rss_mb']:>7} {lv['server_pss_mb']:>7} {lv['server_processes']:>5}")  # fmt: skip
    ips = samples["in-process"]
    print(f"in-process predict_proba, batches of {args.max_batch}: {ips['images_per_s'].describe()} "
          f"(forward only {ips['forward_only_images_per_s'].describe()})")
    for k, batching in enumerate(results["server_batching"], 1):  # type: ignore[arg-type]
        print(f"server batching, round {k}: {batching}")
    if args.compare_with:
        other = json.loads(args.compare_with.read_text())
        results["agreement"] = {"with": other.get("server"), **agreement(results["answers"], other.get("answers", []))}  # type: ignore[arg-type]
        print(f"answers vs {args.compare_with}: {results['agreement']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
