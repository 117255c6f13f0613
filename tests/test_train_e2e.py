"""Runs and ladders end to end: the run folder, resuming after a kill, the leaderboard, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.optim.optimizer import register_optimizer_step_post_hook
from _fixtures_train import (  # noqa: F401 - fixtures
    TINY_CNN,
    csv_rows,
    easy_cache,
    easy_images,
    easy_run,
    fast_config,
    write_easy_images,
)

from tellapart import UserError
from tellapart.cli import main
from tellapart.data import Cache, PrepareConfig, Preprocess, SynthConfig, open_source, prepare, synth_faces
from tellapart.train import Rung, load_model, run_ladder, rung_run, train

RUN_FILES = {
    "config.yaml",
    "environment.json",
    "metrics.csv",
    "summary.json",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
}


def test_run_folder_holds_config_ledger_curves_and_checkpoints(easy_run: Path, easy_cache: Cache) -> None:
    files = {p.relative_to(easy_run).as_posix() for p in easy_run.rglob("*") if p.is_file()}
    assert RUN_FILES <= files
    assert any(f.startswith("tb/events.out.tfevents") for f in files)
    assert not any(Path(f).name.startswith(".") for f in files)  # no temporary files left behind

    config = yaml.safe_load((easy_run / "config.yaml").read_text())
    assert config["model"]["name"] == "cnn" and config["epochs"] == 2
    assert Path(config["cache"]) == easy_cache.path.resolve()
    env = json.loads((easy_run / "environment.json").read_text())
    assert env["cache_fingerprint"] == easy_cache.fingerprint and env["precision"] == "fp32" and env["torch"]

    rows = csv_rows(easy_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    summary = json.loads((easy_run / "summary.json").read_text())
    assert summary["epochs"] == 2 and 1 <= summary["best_epoch"] <= 2
    assert summary["val_acc"] == float(rows[summary["best_epoch"] - 1]["val_acc"])


def test_tensorboard_events_hold_the_training_curves(easy_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(easy_run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= tags
    losses = events.Scalars("loss/train")
    rows = csv_rows(easy_run / "metrics.csv")
    assert [e.step for e in losses] == [1, 2]
    assert [e.value for e in losses] == pytest.approx([float(r["train_loss"]) for r in rows])


def test_checkpoint_loads_safely_and_rebuilds_the_same_model(easy_run: Path, easy_cache: Cache, tmp_path: Path) -> None:
    ckpt = torch.load(easy_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["class_names"] == easy_cache.class_names == ["left", "right"]
    assert ckpt["preprocess"]["size"] == 16 and len(ckpt["preprocess"]["mean"]) == 3

    # The same config trained again gives the same weights; the rebuilt model gives the same outputs.
    result = train(easy_cache, fast_config(*TINY_CNN), tmp_path / "again", progress=False)
    loaded = load_model(easy_run)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), result.model(x))
    assert loaded.class_names == ["left", "right"]


class _KilledAt:
    """Raises KeyboardInterrupt right after optimizer step ``step`` (1-based), like a Ctrl-C mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step, self.taken = step, 0

    def __call__(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        self.taken += 1
        if self.taken == self.step:
            raise KeyboardInterrupt


def test_resume_after_a_kill_mid_epoch_matches_an_uninterrupted_run(easy_cache: Cache, tmp_path: Path) -> None:
    settings = (*TINY_CNN, "deterministic=true", "checkpoint_every_s=1e-9", "augment.hflip=true", "schedule.name=cosine",
                "model.args.dense=[16]", "model.args.dense_dropout=0.2")  # fmt: skip
    cfg = fast_config(*settings, epochs=3)
    steps_per_epoch = -(-len(easy_cache.indices("train")) // cfg.batch_size)
    assert steps_per_epoch >= 3
    whole = train(easy_cache, cfg, tmp_path / "whole", progress=False)

    run = tmp_path / "killed"
    handle = register_optimizer_step_post_hook(_KilledAt(steps_per_epoch + 2))
    try:
        with pytest.raises(KeyboardInterrupt):
            train(easy_cache, cfg, run, progress=False)
    finally:
        handle.remove()
    assert [int(r["epoch"]) for r in csv_rows(run / "metrics.csv")] == [1]
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["state"]["epoch"], saved["state"]["batch"]) == (1, 1)  # the kill came mid-epoch 2

    with pytest.raises(UserError, match="already holds files"):
        train(easy_cache, cfg, run, progress=False)  # no silent overwrite without resume
    resumed = train(easy_cache, cfg, run, resume=True, progress=False)

    rows = csv_rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for got, want in zip(rows, csv_rows(tmp_path / "whole" / "metrics.csv")):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert float(got[key]) == float(want[key]), (got["epoch"], key)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    want = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    for key in want:
        assert torch.equal(last[key], want[key]), key
    assert resumed.best_epoch == whole.best_epoch
    load_model(run)  # the best checkpoint is usable

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3]  # no epoch logged twice


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed(easy_cache: Cache, tmp_path: Path) -> None:
    # The common Ctrl-C: early in epoch 1, before any checkpoint (none mid-epoch here).
    cfg = fast_config("model.name=linear", epochs=2)
    handle = register_optimizer_step_post_hook(_KilledAt(2))
    try:
        with pytest.raises(KeyboardInterrupt):
            train(easy_cache, cfg, tmp_path / "run", progress=False)
    finally:
        handle.remove()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    result = train(easy_cache, cfg, tmp_path / "run", resume=True, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert [int(r["epoch"]) for r in csv_rows(tmp_path / "run" / "metrics.csv")] == [1, 2]


def test_resume_refuses_another_cache_and_an_empty_folder(easy_run: Path, tmp_path: Path) -> None:
    other_src = tmp_path / "other"
    write_easy_images(other_src, per_class=6, seed=1)
    other = prepare(open_source(other_src), tmp_path / "other-cache", PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False)
    with pytest.raises(UserError, match="another cache"):
        train(other, fast_config(), easy_run, resume=True, progress=False)
    with pytest.raises(UserError, match="nothing to resume"):
        train(other, fast_config(), tmp_path / "new", resume=True, progress=False)


def test_a_failed_start_leaves_the_run_folder_reusable(easy_cache: Cache, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown model 'cnnn'.*did you mean"):
        train(easy_cache, fast_config("model.name=cnnn"), tmp_path / "run", progress=False)
    train(easy_cache, fast_config("model.name=linear", epochs=1), tmp_path / "run", progress=False)  # the fixed command
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a folder"):
        train(easy_cache, fast_config("model.name=linear", epochs=1), tmp_path / "file", progress=False)


# --------------------------------------------------------------------------- ladder

THREE_RUNGS = (
    Rung("linear", {"model": {"name": "linear"}}),
    Rung("mlp", {"model": {"name": "mlp", "args": {"hidden": [16]}}}),
    Rung("cnn", {"model": {"name": "cnn", "args": {"blocks": [{"filters": 8, "pool": "max"}], "global_pool": True}}}),
)
LADDER_BASE = {"epochs": 2, "device": "cpu", "precision": "fp32", "threads": 1, "batch_size": 8, "checkpoint_every_s": 0}


def test_ladder_ranks_by_validation_accuracy_and_resumes_without_retraining(easy_cache: Cache, tmp_path: Path) -> None:
    out = tmp_path / "ladder"
    rows = run_ladder(easy_cache, out, rungs=THREE_RUNGS, base=LADDER_BASE, progress=False)
    assert sorted(r["rung"] for r in rows) == ["cnn", "linear", "mlp"]
    accs = [r["val_acc"] for r in rows]
    assert accs == sorted(accs, reverse=True) and [r["rank"] for r in rows] == [1, 2, 3]
    assert json.loads((out / "leaderboard.json").read_text()) == rows
    table = csv_rows(out / "leaderboard.csv")
    assert [t["rung"] for t in table] == [r["rung"] for r in rows]
    assert all((out / name / "summary.json").is_file() for name in ("linear", "mlp", "cnn"))

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    stamps.update({p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/*.pt")})
    again = run_ladder(easy_cache, out, rungs=THREE_RUNGS, base=LADDER_BASE, progress=False)
    assert again == rows
    for path, mtime in stamps.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"

    with pytest.raises(UserError, match="started with another config"):  # never silently reused for other settings
        run_ladder(easy_cache, out, rungs=THREE_RUNGS, base={**LADDER_BASE, "epochs": 3}, progress=False)


def test_ladder_with_two_seeds_reports_the_spread(easy_cache: Cache, tmp_path: Path) -> None:
    rows = run_ladder(easy_cache, tmp_path / "ladder", rungs=THREE_RUNGS[:1], base=LADDER_BASE, seeds=2, progress=False)
    assert rows[0]["seeds"] == 2 and rows[0]["val_acc_std"] is not None and rows[0]["val_acc_std"] >= 0
    assert (tmp_path / "ladder" / "linear" / "seed-0" / "summary.json").is_file()
    assert (tmp_path / "ladder" / "linear" / "seed-1" / "summary.json").is_file()
    configs = [yaml.safe_load((tmp_path / "ladder" / "linear" / f"seed-{k}" / "config.yaml").read_text()) for k in (0, 1)]
    assert [c["seed"] for c in configs] == [0, 1]
    assert rung_run(tmp_path / "ladder", rows[0]) == tmp_path / "ladder" / "linear" / "seed-0"  # what evaluate reads


def test_an_interrupted_ladder_resumes_where_it_stopped(easy_cache: Cache, tmp_path: Path) -> None:
    out = tmp_path / "ladder"
    handle = register_optimizer_step_post_hook(_KilledAt(2))  # in the first rung's first epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            run_ladder(easy_cache, out, rungs=THREE_RUNGS, base=LADDER_BASE, progress=False)
    finally:
        handle.remove()
    rows = run_ladder(easy_cache, out, rungs=THREE_RUNGS, base=LADDER_BASE, progress=False)
    assert len(rows) == 3 and all(r["epochs"] == 2 for r in rows)


def test_a_ladder_with_a_misspelt_model_fails_before_training_anything(easy_cache: Cache, tmp_path: Path) -> None:
    rungs = (*THREE_RUNGS[:2], Rung("typo", {"model": {"name": "mlpp"}}))
    with pytest.raises(UserError, match="rung 'typo'.*unknown model 'mlpp'"):
        run_ladder(easy_cache, tmp_path / "ladder", rungs=rungs, base=LADDER_BASE, progress=False)
    assert not (tmp_path / "ladder").exists()


@pytest.mark.parametrize("seeds", [0, -1])
def test_ladder_needs_at_least_one_seed(easy_cache: Cache, tmp_path: Path, seeds: int) -> None:
    with pytest.raises(UserError, match="seeds"):
        run_ladder(easy_cache, tmp_path / "ladder", rungs=THREE_RUNGS[:1], base=LADDER_BASE, seeds=seeds, progress=False)


@pytest.mark.slow
def test_cnn_beats_linear_on_synthetic_faces(tmp_path: Path) -> None:
    synth_faces(tmp_path / "faces", SynthConfig(pairs=150, size=64), progress=False)
    cache = prepare(open_source(tmp_path / "faces"), tmp_path / "cache", PrepareConfig(preprocess=Preprocess(size=32), workers=1), progress=False)
    rungs = (
        Rung("linear", {"model": {"name": "linear"}, "optim": {"name": "sgd", "lr": 0.01}}),
        Rung("s0_cnn", {"model": {"name": "s0_faces_cnn"}}),
    )
    rows = run_ladder(cache, tmp_path / "ladder", rungs=rungs, base={**LADDER_BASE, "epochs": 6, "batch_size": 32}, progress=False)
    acc = {r["rung"]: r["val_acc"] for r in rows}
    assert acc["s0_cnn"] > acc["linear"], acc


# --------------------------------------------------------------------------- CLI


def test_cli_train_then_resume_a_finished_run(easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", str(easy_cache.path), "--model", "linear", "--epochs", "1", "--out", str(out), "--quiet",
            *[f"--set={s}" for s in ("device=cpu", "precision=fp32", "threads=1", "batch_size=8", "optim.lr=1e-2")]]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "linear" and summary["epochs"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # a finished run resumes to its end: nothing to do
    assert [r["epoch"] for r in csv_rows(out / "metrics.csv")] == ["1"]


def test_cli_train_with_seeds_resumes_with_or_without_the_flag(easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", str(easy_cache.path), "--model", "linear", "--epochs", "1", "--seeds", "2", "--out", str(tmp_path / "run"),
            "--quiet", "--set=device=cpu", "--set=threads=1", "--set=batch_size=8"]  # fmt: skip
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["seeds"] == 2 and row["val_acc_std"] is not None
    (tmp_path / "run" / "seed-1" / "summary.json").unlink()  # as if killed at the very end
    assert main([*args, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["val_acc"] == row["val_acc"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{cache}", "--model", "nosuchnet", "--out", "{tmp}/a"], "unknown model 'nosuchnet'"),
        (["train", "{cache}", "--set", "optim.lr", "--out", "{tmp}/b"], "--set expects key=value"),
        (["train", "{cache}", "--set", "optim.lrr=1", "--out", "{tmp}/c"], "optim.lrr"),
        (["train", "{tmp}/no-cache", "--out", "{tmp}/d"], "not a prepared cache"),
        (["train", "{cache}", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/e"], "config file not found"),
        (["ladder", "{cache}", "--set", "epochs=zero", "--out", "{tmp}/f"], "epochs"),
        (["ladder", "{cache}", "--ladder", "{tmp}/missing.yaml", "--out", "{tmp}/g"], "ladder file not found"),
        (["train", "{cache}", "--epochs", "0", "--out", "{tmp}/h"], "epochs=0"),
        (["ladder", "{cache}", "--epochs", "0", "--out", "{tmp}/i"], "epochs=0"),
        (["ladder", "{cache}", "--seeds", "0", "--out", "{tmp}/j"], "seeds"),
        (["train", "{cache}", "--seeds", "0", "--out", "{tmp}/k"], "--seeds"),
    ],
)
def test_cli_user_errors_are_one_line(
    argv: list[str], message: str, easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(cache=easy_cache.path, tmp=tmp_path) for a in argv]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_ladder_from_a_yaml_file(easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ladder = tmp_path / "ladder.yaml"
    ladder.write_text(yaml.safe_dump({"base": LADDER_BASE, "rungs": [{"name": "lin", "config": {"model": {"name": "linear"}}},
                                                                       {"name": "tiny", "config": {"model": {"name": "mlp", "args": {"hidden": [8]}}}}]}))  # fmt: skip
    out = tmp_path / "out"
    assert main(["ladder", str(easy_cache.path), "--ladder", str(ladder), "--out", str(out), "--epochs", "1", "--set", "optim.lr=1e-2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "leaderboard:" in printed and "lin" in printed and "tiny" in printed
    rows = csv_rows(out / "leaderboard.csv")  # the classical baselines ride along on the same split
    assert {r["rung"] for r in rows} == {"lin", "tiny", "baseline:logreg", "baseline:svm_pixels", "baseline:hog_svm"}
    assert {r["kind"] for r in rows if r["rung"].startswith("baseline:")} == {"classical"}
    assert yaml.safe_load((out / "tiny" / "config.yaml").read_text())["epochs"] == 1
    assert (out / "lin" / "checkpoints" / "best.pt").is_file()


def test_cli_end_to_end_from_images_to_predictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's path in one go: synth -> prepare -> ladder -> evaluate -> export -> predict."""
    monkeypatch.chdir(tmp_path)
    fast = [f"--set={s}" for s in ("device=cpu", "precision=fp32", "threads=1", "batch_size=8", "optim.lr=3e-3")]
    Path("ladder.yaml").write_text(yaml.safe_dump({"rungs": [
        {"name": "linear", "config": {"model": {"name": "linear"}}},
        {"name": "cnn", "config": {"model": {"name": "s0_faces_cnn"}}},
    ]}))  # fmt: skip
    assert main(["data", "synth", "--out", "faces", "--pairs", "16", "--size", "32", "--quiet"]) == 0
    assert main(["data", "prepare", "faces", "--out", "cache", "--size", "16", "--workers", "1", "--quiet"]) == 0
    assert main(["ladder", "cache", "--out", "ladder", "--ladder", "ladder.yaml", "--epochs", "2", "--quiet", *fast]) == 0
    assert main(["evaluate", "ladder"]) == 0
    best = next(r["rung"] for r in json.loads(Path("ladder/leaderboard.json").read_text()) if r.get("kind") != "classical")
    assert main(["export", f"ladder/{best}"]) == 0
    assert main(["predict", f"ladder/{best}", "faces/face", "faces/comics/*.jpg", "-o", "predictions.csv", "--quiet"]) == 0
    capsys.readouterr()

    assert Path("ladder/report.html").is_file() and Path(f"ladder/{best}/model.onnx").is_file()
    metrics = json.loads(Path("ladder/metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] > 0
    predictions = csv_rows(Path("predictions.csv"))
    assert len(predictions) == 32 and {p["label"] for p in predictions} <= {"comics", "face"}
