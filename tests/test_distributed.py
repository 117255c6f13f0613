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
    import tellapart.runs as runs
    import tellapart.train._checkpointer as checkpointer
    import tellapart.train._epochs as epoch_loop
    from tellapart.train import config_from_dict, train

    cache, out, log, epochs, crash_after = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rank = int(os.environ["RANK"])
    seen_shards, writes = [], []
    real_shard, real_save, real_write = epoch_loop.shard_order, checkpointer.save_checkpoint, runs.atomic_write

    def shard(order, r, w):
        rows = real_shard(order, r, w)
        seen_shards.append(rows.tolist())
        return rows

    def save(path, payload):
        writes.append(str(path)); real_save(path, payload)

    def write(path, text):
        writes.append(str(path)); real_write(path, text)

    epoch_loop.shard_order, checkpointer.save_checkpoint = shard, save
    runs.atomic_write = epoch_loop.atomic_write = write  # run-folder files and the curves

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


# --------------------------------------------------------------------------- batch semantics, lr scaling, SyncBatchNorm


def test_distributed_config_round_trips_and_names_bad_choices() -> None:
    from tellapart._errors import UserError
    from tellapart.train import DistributedConfig, config_from_dict, config_to_dict, load_config

    cfg = load_config(None, ["distributed.batch=per_process", "distributed.scale_lr=sqrt", "distributed.sync_batchnorm=true"])
    assert cfg.distributed == DistributedConfig(batch="per_process", scale_lr="sqrt", sync_batchnorm=True)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert load_config(None).distributed == DistributedConfig()  # default: the global batch, lr as configured
    with pytest.raises(UserError, match="distributed.batch must be one of global, per_process; got 'local'"):
        load_config(None, ["distributed.batch=local"])
    with pytest.raises(UserError, match="distributed.scale_lr must be one of none, linear, sqrt"):
        load_config(None, ["distributed.scale_lr=square"])
    with pytest.raises(UserError, match="unknown key.*distributed.scale"):
        load_config(None, ["distributed.scale=linear"])
    with pytest.raises(UserError, match="distributed.scale_lr must be one of"):
        DistributedConfig(scale_lr="cubic")  # type: ignore[arg-type]  # the Python API checks too


@pytest.mark.parametrize(
    ("batch", "scale", "world", "rank_batch", "lr"),
    [
        ("global", "linear", 4, 16, 0.1),  # global batch = batch_size: k = 1, nothing to scale
        ("per_process", "none", 4, 64, 0.1),
        ("per_process", "linear", 4, 64, 0.4),  # Goyal et al.: k = 4 times the batch, 4 times the lr
        ("per_process", "sqrt", 4, 64, 0.2),
        ("per_process", "linear", 1, 64, 0.1),  # one process: k = 1
    ],
)
def test_rank_config_splits_the_batch_and_scales_the_lr(batch: str, scale: str, world: int, rank_batch: int, lr: float) -> None:
    from tellapart.train import load_config
    from tellapart.train._distributed import DistContext, rank_config

    cfg = load_config(None, ["batch_size=64", "optim.lr=0.1", f"distributed.batch={batch}", f"distributed.scale_lr={scale}"])
    got = rank_config(cfg, DistContext(0, world))
    assert got.batch_size == rank_batch
    assert got.optim.lr == pytest.approx(lr)
    assert cfg.optim.lr == 0.1  # the configured value is kept for the run folder: a resume scales it once again


def test_global_batch_that_does_not_split_names_both_fixes() -> None:
    from tellapart._errors import UserError
    from tellapart.train import load_config
    from tellapart.train._distributed import DistContext, rank_config

    with pytest.raises(UserError, match="multiple of the 3 processes, or set distributed.batch=per_process"):
        rank_config(load_config(None, ["batch_size=64"]), DistContext(0, 3))


def test_sync_batchnorm_keeps_checkpoint_keys_and_is_a_noted_no_op_in_one_process(
    small_cache: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import torch

    from tellapart.models import create_model
    from tellapart.train import config_from_dict, read_checkpoint, train

    plain = create_model("cnn", in_chans=3, num_classes=2, input_size=16)
    keys = list(plain.state_dict())
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(create_model("cnn", in_chans=3, num_classes=2, input_size=16))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert list(synced.state_dict()) == keys  # same names: checkpoints of a synced run load into the plain model
    plain.load_state_dict(synced.state_dict())

    cfg = config_from_dict({"model": {"name": "cnn"}, "epochs": 1, "batch_size": 8, "precision": "fp32", "threads": 1,
                            "checkpoint_every_s": 0, "distributed": {"sync_batchnorm": True}})  # fmt: skip
    result = train(small_cache, cfg, tmp_path / "run", progress=False, tensorboard=False)
    assert "distributed.sync_batchnorm ignored: one process" in capfd.readouterr().err
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in result.model.modules())
    assert list(read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state_dict"]) == keys


RECORDER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    import tellapart.train._fit as fit
    import tellapart.train._loop as loop
    from tellapart.train import config_from_dict, train

    data, out, log, cfg = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
    rank = int(os.environ["RANK"])
    record = {"batches": [], "ids": []}
    real_batches, real_open = loop.iter_batches, fit._open_data

    def batches(pixels, labels, order, batch_size, **kw):
        for item in real_batches(pixels, labels, order, batch_size, **kw):
            if "start_batch" in kw:  # training batches (evaluation calls without it)
                record["batches"].append(len(item[2]))
                record["ids"].extend(record["part_ids"][r] for r in item[2].tolist())
            yield item

    def open_data(path):
        cache, share = real_open(path)
        record["part"], record["part_ids"] = cache.path.name, cache.ids
        return cache, share

    loop.iter_batches, fit._open_data = batches, open_data
    try:
        result = train(data, config_from_dict(cfg), out, progress=False, tensorboard=False)
    except Exception as exc:
        (log / f"rank{rank}.json").write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise SystemExit(2)
    record["weights"] = torch.cat([p.detach().flatten() for p in result.model.parameters()]).tolist()
    (log / f"rank{rank}.json").write_text(json.dumps(record))
    """
)


def _record_torchrun(tmp: Path, data: Path, out: Path, cfg: dict) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    driver, log = tmp / "recorder.py", tmp / "log"
    driver.write_text(RECORDER)
    log.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver),
           str(data), str(out), str(log), json.dumps(cfg)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ranks = [json.loads(p.read_text()) for p in sorted(log.glob("rank*.json"))]
    return done, ranks


_MLP = {"model": {"name": "mlp", "args": {"hidden": [16]}}, "precision": "fp32", "threads": 1, "checkpoint_every_s": 0}


@pytest.mark.slow
def test_torchrun_per_process_batch_with_linear_lr_scaling(tmp_path: Path, small_cache: Path) -> None:
    cfg = {**_MLP, "epochs": 2, "batch_size": 8, "optim": {"lr": 1e-3},
           "distributed": {"batch": "per_process", "scale_lr": "linear"}}  # fmt: skip
    done, ranks = _record_torchrun(tmp_path, small_cache, tmp_path / "run", cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    train_rows = len(Cache(small_cache).indices("train"))
    steps = -(-(-(-train_rows // 2)) // 8)  # ceil(ceil(rows / 2 ranks) / 8)
    for r in ranks:  # each rank took batch_size rows a step (the epoch's last batch holds the rest), not batch_size / 2
        assert len(r["batches"]) == 2 * steps
        assert r["batches"][: steps - 1] == [8] * (steps - 1) and max(r["batches"]) == 8
    assert np.allclose(ranks[0]["weights"], ranks[1]["weights"])
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["lr"]) for r in rows] == [pytest.approx(2e-3)] * 2  # global batch 16 = 2 x 8: lr x 2
    ledger = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert ledger["lr"] == pytest.approx(2e-3)
    assert ledger["distributed"] | {"lr": 0} == {"world_size": 2, "batch": "per_process", "per_process_batch": 8, "global_batch": 16,
                                                 "scale_lr": "linear", "configured_lr": 1e-3, "lr": 0, "sync_batchnorm": False}  # fmt: skip
    assert "distributed" in (tmp_path / "run" / "config.yaml").read_text()  # as configured: scale_lr, lr 1e-3
    assert "lr: 0.001" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.slow
def test_torchrun_sync_batchnorm_on_cpu_is_refused_with_the_way_out(tmp_path: Path, small_cache: Path) -> None:
    """PyTorch's SyncBatchNorm raises on CPU tensors in a process group; tellapart says so before training."""
    cfg = {**_MLP, "model": {"name": "cnn"}, "epochs": 1, "batch_size": 8, "distributed": {"sync_batchnorm": True}}
    done, ranks = _record_torchrun(tmp_path, small_cache, tmp_path / "run", cfg)
    assert done.returncode != 0
    assert len(ranks) == 2
    for r in ranks:
        assert r["error"].startswith("UserError: distributed.sync_batchnorm needs CUDA")
        assert "--set distributed.sync_batchnorm=false" in r["error"]


# --------------------------------------------------------------------------- shard sets (one part per machine)


@pytest.mark.slow
def test_torchrun_on_a_shard_set_reads_one_part_per_rank(tmp_path: Path) -> None:
    from _images import write_class_folders

    from tellapart.data import shard_cache

    write_class_folders(tmp_path / "ds", {"ant": 13, "bee": 12})  # 17 train images: parts of 9 and 8
    small_cache = prepare(open_source(tmp_path / "ds"), tmp_path / "cache", PrepareConfig(preprocess=Preprocess(size=8), workers=1), progress=False).path
    parts = [Cache(p) for p in shard_cache(small_cache, 2, tmp_path / "set", progress=False)]
    assert sorted(len(p.indices("train")) for p in parts) == [8, 9]  # unequal: the shorter part must wrap
    cfg = {**_MLP, "epochs": 2, "batch_size": 4}
    done, ranks = _record_torchrun(tmp_path, tmp_path / "set", tmp_path / "run", cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["part"] for r in ranks] == ["part-000", "part-001"]  # rank k opened part k only
    part_train = [{p.ids[i] for i in p.indices("train")} for p in parts]
    read = [set(r["ids"]) for r in ranks]
    assert read == part_train  # each rank read all of its part's train rows and nothing else
    assert not read[0] & read[1]  # disjoint
    source = Cache(small_cache)
    assert read[0] | read[1] == {source.ids[i] for i in source.indices("train")}  # covering the train split
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"])  # the same steps on every rank (DDP would hang otherwise)
    assert sum(ranks[0]["batches"]) == sum(ranks[1]["batches"]) == 2 * max(len(t) for t in part_train)  # the shorter part wraps
    assert np.allclose(ranks[0]["weights"], ranks[1]["weights"])  # DDP kept the replicas identical
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"cache: {(tmp_path / 'set').resolve()}" in config


def test_a_one_part_set_trains_in_one_process_resumes_and_evaluates(small_cache: Path, tmp_path: Path) -> None:
    """The set's fingerprint is what a run records: resume checks it; evaluation reads a part's test split."""
    from tellapart._errors import UserError
    from tellapart.data import ShardSet, shard_cache
    from tellapart.evaluate import evaluate_run
    from tellapart.train import config_from_dict, read_checkpoint, train

    shard_cache(small_cache, 1, tmp_path / "set", progress=False)
    cfg = config_from_dict({**_MLP, "epochs": 1, "batch_size": 8})
    train(tmp_path / "set", cfg, tmp_path / "run", progress=False, tensorboard=False)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["cache_fingerprint"] == ShardSet(tmp_path / "set").fingerprint
    with pytest.raises(UserError, match="trained on another cache"):
        train(small_cache, cfg, tmp_path / "run", resume=True, progress=False)
    train(tmp_path / "set", cfg, tmp_path / "run", resume=True, progress=False, tensorboard=False)  # already done: no error
    metrics = evaluate_run(tmp_path / "run")
    assert metrics["n"] == len(Cache(small_cache).indices("test"))
