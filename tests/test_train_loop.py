"""The loop: it learns, its loss options work, early stopping keeps the best epoch, test stays unread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures_train import TINY_CNN, easy_cache, easy_images, fast_config  # noqa: F401 - fixtures

from tellapart.data import Cache, epoch_order
from tellapart.train import Feeder, TrainState, evaluate, read_checkpoint, resolve_runtime, train, train_one_epoch
from tellapart.train._builders import build_model_for, build_optimizer


def _setup(cache: Cache, *overrides: str):  # type: ignore[no-untyped-def]
    cfg = fast_config(*overrides, epochs=5)
    torch.manual_seed(0)
    model, _ = build_model_for(cache, cfg)
    runtime = resolve_runtime("cpu", "fp32", "off", 1, is_conv=False)
    feeder = Feeder(cache.pixels, cache.labels, tuple(cache.mean), tuple(cache.std), runtime)
    state = TrainState(model, build_optimizer(model, cfg), torch.Generator().manual_seed(0))
    return cfg, state, feeder


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_loss_falls_over_epochs_on_separable_data(easy_cache: Cache, model: str) -> None:
    cfg, state, feeder = _setup(easy_cache, f"model.name={model}", "optim.lr=3e-3")
    rows = easy_cache.indices("train")
    steps = -(-len(rows) // cfg.batch_size)
    losses = []
    for epoch in range(cfg.epochs):
        result = train_one_epoch(state, feeder, epoch_order(rows, 0, epoch), cfg, steps_per_epoch=steps, progress=False)
        losses.append(result["train_loss"])
        state.epoch += 1
    assert losses[-1] < 0.5 * losses[0], losses
    assert state.step == cfg.epochs * steps  # one optimizer step per batch, the last one partial
    val = evaluate(state.model, feeder, easy_cache.indices("val"))
    assert val.accuracy >= 0.8


def test_single_logit_trains_with_bce_and_reports_two_probabilities(easy_cache: Cache, tmp_path: Path) -> None:
    result = train(easy_cache, fast_config("model.name=linear", "single_logit=true", epochs=3), tmp_path / "run", progress=False)
    assert result.model.classifier.out_features == 1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    runtime = resolve_runtime("cpu", "fp32", "off", 1, is_conv=False)
    feeder = Feeder(easy_cache.pixels, easy_cache.labels, tuple(easy_cache.mean), tuple(easy_cache.std), runtime)
    val = evaluate(result.model, feeder, easy_cache.indices("val"))
    assert val.probs.shape == (len(easy_cache.indices("val")), 2)
    np.testing.assert_allclose(val.probs.sum(1), 1.0, atol=1e-6)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["model"]["single_logit"] is True


def test_balanced_class_weights_train(easy_cache: Cache, tmp_path: Path) -> None:
    result = train(easy_cache, fast_config("model.name=linear", "class_weights=balanced"), tmp_path / "run", progress=False)
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    assert result.summary["val_acc"] is not None


def test_bf16_autocast_trains_and_is_recorded(easy_cache: Cache, tmp_path: Path) -> None:
    result = train(easy_cache, fast_config(*TINY_CNN, "precision=bf16", epochs=1), tmp_path / "run", progress=False)
    assert result.summary["precision"] == "bf16" and np.isfinite(result.history[0]["train_loss"])
    assert result.model.classifier.weight.dtype == torch.float32  # autocast: the weights stay fp32


def test_early_stopping_stops_at_patience_and_restores_the_best_epoch(easy_cache: Cache, tmp_path: Path) -> None:
    # A min_delta no epoch can beat: epoch 1 is the best, and patience 2 stops after epoch 3.
    cfg = fast_config(*TINY_CNN, "early_stopping.patience=2", "early_stopping.min_delta=100", epochs=6)
    seen: list[int] = []
    result = train(easy_cache, cfg, tmp_path / "run", progress=False, on_epoch_end=lambda e, row: seen.append(e) or False)
    assert seen == [1, 2, 3]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.best_epoch == 1 and result.summary["best_epoch"] == 1
    best = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 3
    weights = {k: v.cpu() for k, v in result.model.state_dict().items()}
    for key, value in best["state_dict"].items():
        assert torch.equal(weights[key], value), key
    assert any(not torch.equal(weights[k], v) for k, v in last["state_dict"].items())  # not the last epoch's

    again = train(easy_cache, cfg, tmp_path / "run", resume=True, progress=False)  # a stopped run stays stopped
    assert [r["epoch"] for r in again.history] == [1, 2, 3] and again.best_epoch == 1


def test_hook_can_stop_training(easy_cache: Cache, tmp_path: Path) -> None:
    result = train(easy_cache, fast_config("model.name=linear", epochs=5), tmp_path / "run", progress=False,
                   on_epoch_end=lambda epoch, row: epoch >= 2)  # fmt: skip
    assert len(result.history) == 2 and result.summary["epochs"] == 2


def test_training_never_reads_the_test_split(easy_cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = Cache.indices

    def spy(self: Cache, split: str) -> np.ndarray:
        asked.append(split)
        return real(self, split)

    monkeypatch.setattr(Cache, "indices", spy)
    touched: set[int] = set()
    import tellapart.train._loop as loop

    real_batches = loop.iter_batches

    def batches(pixels, labels, order, *args, **kwargs):  # type: ignore[no-untyped-def]
        for item in real_batches(pixels, labels, order, *args, **kwargs):
            touched.update(int(r) for r in item[2])
            yield item

    monkeypatch.setattr(loop, "iter_batches", batches)
    train(easy_cache, fast_config("model.name=linear", "early_stopping.patience=1"), tmp_path / "run", progress=False)
    assert "test" not in asked and {"train", "val"} <= set(asked)
    test_rows = set(real(easy_cache, "test").tolist())
    assert test_rows and not touched & test_rows
