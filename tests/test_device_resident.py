"""Training rows kept on the device give the same batches, and the same training, as the memory-map path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fixtures_train import TINY_CNN, easy_cache, easy_images, fast_config  # noqa: F401 - fixtures

from tellapart.data import Cache, epoch_order, iter_batches, to_tensor
from tellapart.train import Feeder, TrainState, resolve_runtime, train_one_epoch
from tellapart.train._augment import augment_batch
from tellapart.train._builders import build_model_for, build_optimizer
from tellapart.train._loop import _batch_rows, device_pixels


def _feeder(cache: Cache, channels_last: bool = False) -> Feeder:
    runtime = resolve_runtime("cpu", "fp32", "on" if channels_last else "off", 1, is_conv=True)
    return Feeder(cache.pixels, cache.labels, tuple(cache.mean), tuple(cache.std), runtime)


def test_the_cpu_keeps_reading_the_memory_map(easy_cache: Cache) -> None:
    rows = easy_cache.indices("train")
    assert device_pixels(easy_cache.pixels, rows, "cpu") is None
    assert _feeder(easy_cache).resident(rows) is None


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_batches_equal_memory_map_batches(easy_cache: Cache, channels_last: bool) -> None:
    feeder = _feeder(easy_cache, channels_last)
    order = epoch_order(easy_cache.indices("train"), 0, 3)
    held = feeder.resident(order, force=True)
    assert held is not None and held.pixels.dtype == torch.uint8
    device_rows = list(_batch_rows(order, 7, 1))
    host = list(iter_batches(feeder.pixels, feeder.labels, order, 7, start_batch=1))
    assert len(device_rows) == len(host)
    for rows, (pixels, _, host_rows) in zip(device_rows, host):
        np.testing.assert_array_equal(rows, host_rows)
        ours = feeder.normalise(held.take(rows))
        theirs = to_tensor(pixels, feeder.mean, feeder.std, channels_last=channels_last)  # the data package's own conversion
        assert torch.equal(ours, theirs) and torch.equal(feeder.tensor(pixels), theirs)
        assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert feeder.resident(order, force=True) is held  # placed once, reused every epoch


def test_training_on_device_rows_matches_training_from_the_memory_map(easy_cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> list[dict[str, float]]:
        cfg = fast_config("model.name=mlp", "augment.hflip=true", epochs=2)
        torch.manual_seed(0)
        model, _ = build_model_for(easy_cache, cfg)
        state = TrainState(model, build_optimizer(model, cfg), torch.Generator().manual_seed(0))
        feeder, rows = _feeder(easy_cache), easy_cache.indices("train")
        steps = -(-len(rows) // cfg.batch_size)
        results = []
        for epoch in range(2):
            results.append(train_one_epoch(state, feeder, epoch_order(rows, 0, epoch), cfg, steps_per_epoch=steps, progress=False))
            state.epoch += 1
        return results

    from_map = run()
    forced = Feeder.resident
    monkeypatch.setattr(Feeder, "resident", lambda self, order, force=False: forced(self, order, force=True))
    on_device = run()
    for a, b in zip(from_map, on_device):
        assert (a["train_loss"], a["train_acc"], a["train_seen"]) == (b["train_loss"], b["train_acc"], b["train_seen"])


def test_augmentations_follow_the_batch_device_and_generator(easy_cache: Cache) -> None:
    """Parameters come from the CPU generator whatever the batch's device, so a run augments alike anywhere."""
    feeder = _feeder(easy_cache)
    x = feeder.tensor(easy_cache.pixels[:8])
    cfg = fast_config("augment.hflip=true", "augment.rotate=10", "augment.cutout=0.25").augment
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1), black=feeder.black)
    b = augment_batch(x.contiguous(memory_format=torch.channels_last), cfg, torch.Generator().manual_seed(1), black=feeder.black)
    assert a.device == x.device and torch.allclose(a, b, atol=1e-6)
