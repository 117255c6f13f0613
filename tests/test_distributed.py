"""torchrun / DDP: shards, reductions, rank-0-only files, resume; and bounded memory from big caches."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tellapart.data import Cache, PrepareConfig, Preprocess, SynthConfig, open_source, prepare, synth_faces
from tellapart.train._distributed import shard_order


def test_shards_are_disjoint_cover_the_epoch_and_have_equal_length() -> None:
    order = np.random.default_rng(0).permutation(103)
    shards = [shard_order(order, r, 4) for r in range(4)]
    assert len({len(s) for s in shards}) == 1  # equal steps on every rank
    seen = np.concatenate(shards)
    assert set(seen.tolist()) == set(order.tolist())  # covers the epoch
    assert len(seen) - len(set(seen.tolist())) == (-103) % 4  # only the wrap-around padding repeats
    assert np.array_equal(shard_order(order, 0, 1), order)


DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import numpy as np, torch
    import tellapart.train._fit as fit
    from tellapart.train import config_from_dict, train

    cache, out, log, epochs, crash_after = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rank = int(os.environ["RANK"])
    seen_shards, writes = [], []
    real_shard, real_save, real_write = fit.shard_order, fit.save_checkpoint, fit._atomic_write

    def shard(order, r, w):
        rows = real_shard(order, r, w)
        seen_shards.append(rows.tolist())
        return rows

    def save(path, payload):
        writes.append(str(path)); real_save(path, payload)

    def write(path, text):
        writes.append(str(path)); real_write(path, text)

    fit.shard_order, fit.save_checkpoint, fit._atomic_write = shard, save, write

    def hook(epoch, row):
        if epoch == crash_after:
            os._exit(3)  # a kill between epochs: no cleanup, no goodbye
        return False

    cfg = config_from_dict({"model": {"name": "mlp", "args": {"hidden": [16]}}, "epochs": epochs, "batch_size": 8,
                            "precision": "fp32", "threads": 1, "checkpoint_every_s": 0})
    result = train(cache, cfg, out, resume=(out / "checkpoints" / "last.pt").is_file(), on_epoch_end=hook, progress=False)
    weights = torch.cat([p.detach().flatten() for p in result.model.parameters()]).tolist()
    (log / f"rank{rank}.json").write_text(json.dumps({"shards": seen_shards, "writes": writes, "weights": weights,
                                                       "world": result.summary["world_size"]}))
    """
)


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    synth_faces(root / "data", SynthConfig(pairs=20, size=32), progress=False)
    return prepare(open_source(root / "data"), root / "cache", PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False).path


def _torchrun(tmp: Path, cache: Path, out: Path, log: Path, epochs: int, crash_after: int) -> subprocess.CompletedProcess[str]:
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    log.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver),
           str(cache), str(out), str(log), str(epochs), str(crash_after)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_torchrun_two_processes_train_on_disjoint_shards_and_agree(tmp_path: Path, small_cache: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "log"
    done = _torchrun(tmp_path, small_cache, out, log, epochs=2, crash_after=-1)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((log / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    train_rows = set(Cache(small_cache).indices("train").tolist())
    first_epoch = [set(r["shards"][0]) for r in ranks]
    assert first_epoch[0] | first_epoch[1] == train_rows  # together they cover the epoch
    overlap = first_epoch[0] & first_epoch[1]
    assert len(overlap) <= 1  # disjoint but for the wrap-around padding of an odd count
    assert np.allclose(ranks[0]["weights"], ranks[1]["weights"])  # DDP kept the replicas identical
    assert ranks[1]["writes"] == [] and ranks[0]["writes"]  # only rank 0 writes files
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


@pytest.mark.slow
def test_torchrun_resumes_after_a_kill(tmp_path: Path, small_cache: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "log"
    killed = _torchrun(tmp_path, small_cache, out, log, epochs=3, crash_after=1)
    assert killed.returncode != 0
    assert (out / "checkpoints" / "last.pt").is_file()
    done = _torchrun(tmp_path, small_cache, out, log, epochs=3, crash_after=-1)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # no epoch lost or repeated
    ranks = [json.loads((log / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert np.allclose(ranks[0]["weights"], ranks[1]["weights"])


STREAM = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    import numpy as np
    from tellapart.train import config_from_dict, train
    from tellapart.data import Cache

    def rss_kb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    cfg = config_from_dict({"model": {"name": "linear"}, "epochs": 1, "batch_size": 256, "precision": "fp32",
                            "stream": sys.argv[3], "checkpoint_every_s": 0, "train_fraction": 0.03})
    train(sys.argv[1], cfg, sys.argv[2] + "-warmup", progress=False, tensorboard=False)  # libraries paged in
    baseline = rss_kb()
    peak = [baseline]
    def sample():
        while True:
            peak[0] = max(peak[0], rss_kb())
            time.sleep(0.01)
    threading.Thread(target=sample, daemon=True).start()
    cfg = config_from_dict({"model": {"name": "linear"}, "epochs": 1, "batch_size": 256, "precision": "fp32",
                            "stream": sys.argv[3], "checkpoint_every_s": 0})
    train(sys.argv[1], cfg, sys.argv[2], progress=False, tensorboard=False)
    time.sleep(0.05)
    print(peak[0] - baseline)
    """
)


@pytest.mark.slow
def test_training_streams_a_cache_larger_than_its_memory_budget(tmp_path: Path) -> None:
    """A 400 MB cache trains with resident memory bounded when streamed.

    The budget is the test's own: the process's resident memory may grow by at most half the
    cache while training (sampled every 10 ms against a baseline taken after imports). A control
    run through the memory map shows the budget would be broken otherwise.
    """
    from tellapart.data import SplitConfig

    n, side = 10_000, 116  # 10,000 x 116 x 116 x 3 bytes = 404 MB
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    header = bytes([0, 0, 8, 4]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    (folder / "train-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (folder / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + (np.arange(n) % 2).astype(np.uint8).tobytes())
    del images
    cache = prepare(open_source(folder), tmp_path / "cache", PrepareConfig(preprocess=Preprocess(size=side), split=SplitConfig(test=0.0, val=0.0)), progress=False)
    size_kb = Cache(cache.path).pixels.nbytes // 1024
    script = tmp_path / "stream.py"
    script.write_text(STREAM)
    budget_kb = size_kb // 2  # the memory budget this test sets itself: half the cache resident

    def growth(stream: str, run: str) -> int:
        done = subprocess.run([sys.executable, str(script), str(cache.path), str(tmp_path / run), stream],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.strip().splitlines()[-1])

    mapped_kb = growth("off", "run-mapped")  # control: through the memory map, the touched cache stays resident
    streamed_kb = growth("on", "run-streamed")
    assert mapped_kb > budget_kb, f"control held only {mapped_kb} kB resident; the test would prove nothing"
    assert streamed_kb < budget_kb, f"{streamed_kb} kB of the cache resident, over the budget {budget_kb} kB (cache {size_kb} kB)"
