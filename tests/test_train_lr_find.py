"""The learning-rate range test: its schedule, its suggestion, its files, and that it leaves training alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures_train import TINY_CNN, csv_rows, easy_cache, easy_images, fast_config  # noqa: F401 - fixtures

from tellapart import UserError
from tellapart.cli import main
from tellapart.data import Cache
from tellapart.train import find_lr, suggest_lr, train
from tellapart.train._lr_find import DIVERGENCE, range_test_lr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_range_test_lr_grows_exponentially_from_start_to_exactly_end() -> None:
    lrs = [range_test_lr(k, 5, 1e-4, 1.0) for k in range(5)]
    assert lrs[0] == 1e-4 and lrs[-1] == 1.0
    assert np.allclose(np.diff(np.log10(lrs)), 1.0)


def test_suggestion_is_the_steepest_descent_before_the_minimum() -> None:
    lrs = np.logspace(-6, 1, 71)  # 10 points per decade
    losses = 1.0 - 0.9 / (1 + np.exp(-3 * (np.log10(lrs) + 3)))  # falls fastest at 1e-3
    losses[-10:] = np.linspace(0.2, 5.0, 10)  # then diverges: a steep rise, not a descent
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3)
    assert suggest_lr(lrs, np.linspace(1.0, 3.0, 71)) == lrs[0]  # never falls: the smallest lr tried


def test_find_lr_suggests_a_finite_lr_in_range_and_writes_csv_and_png(easy_cache: Cache, tmp_path: Path) -> None:
    result = find_lr(easy_cache, fast_config(*TINY_CNN), tmp_path / "lr", start_lr=1e-6, end_lr=1.0, steps=40, progress=False)
    assert math.isfinite(result.suggested_lr) and 1e-6 <= result.suggested_lr <= 1.0
    assert len(result.lrs) == len(result.losses)
    assert len(result.lrs) == 40 or result.diverged
    assert result.lrs[0] == 1e-6 and list(result.lrs) == sorted(result.lrs)
    assert min(result.losses) < result.losses[0]  # the easy images are learnt as the lr grows
    assert result.csv == tmp_path / "lr" / "lr_find.csv" and result.plot == tmp_path / "lr" / "lr_find.png"
    rows = csv_rows(result.csv)
    assert [float(r["lr"]) for r in rows] == pytest.approx(list(result.lrs), rel=1e-5)
    assert [float(r["loss"]) for r in rows] == pytest.approx(list(result.losses), rel=1e-5)
    assert result.plot.read_bytes().startswith(PNG_MAGIC)


def test_find_lr_stops_when_the_loss_diverges(easy_cache: Cache) -> None:
    # Label smoothing punishes the huge logits of a linear model at a huge lr: the loss blows up.
    cfg = fast_config("model.name=linear", "optim.name=sgd", "label_smoothing=0.2", "single_logit=true")
    result = find_lr(easy_cache, cfg, start_lr=1e-5, end_lr=1e4, steps=60, progress=False)
    assert result.diverged and len(result.lrs) < 60
    assert result.losses[-1] > DIVERGENCE * min(result.losses) or not math.isfinite(result.losses[-1])
    assert result.csv is None and result.plot is None  # no folder given, no files


def test_training_after_find_lr_starts_from_the_same_weights(easy_cache: Cache, tmp_path: Path) -> None:
    cfg = fast_config(*TINY_CNN, epochs=1)
    before = train(easy_cache, cfg, tmp_path / "before", progress=False).history[0]["train_loss"]
    torch.manual_seed(123)
    find_lr(easy_cache, cfg, steps=20, progress=False)
    after_find = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_find, torch.rand(3))  # the caller's random numbers are untouched
    after = train(easy_cache, cfg, tmp_path / "after", progress=False).history[0]["train_loss"]
    assert after == before


def test_find_lr_refuses_too_few_steps_and_a_reversed_range(easy_cache: Cache) -> None:
    with pytest.raises(UserError, match="at least 5 steps.*--steps"):
        find_lr(easy_cache, fast_config(), steps=2, progress=False)
    with pytest.raises(UserError, match="start lr < end lr.*--start-lr"):
        find_lr(easy_cache, fast_config(), start_lr=1.0, end_lr=1e-3, progress=False)


def test_cli_lr_find_prints_the_suggestion_and_the_set_line(
    easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = [a for s in ("device=cpu", "precision=fp32", "threads=1", "batch_size=8") for a in ("--set", s)]
    argv = ["lr-find", str(easy_cache.path), "--model", "linear", *fast, "--out", str(tmp_path / "lr"), "--steps", "30", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "suggested lr:" in out
    line = next(x for x in out.splitlines() if "--set optim.lr=" in x)
    assert 1e-7 <= float(line.split("optim.lr=")[1]) <= 10
    assert (tmp_path / "lr" / "lr_find.csv").is_file() and (tmp_path / "lr" / "lr_find.png").is_file()
    assert len(csv_rows(tmp_path / "lr" / "lr_find.csv")) <= 30

    assert main(["lr-find", str(easy_cache.path), "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--steps" in err and len(err.strip().splitlines()) == 1
