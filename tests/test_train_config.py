"""Pure pieces of training: the config (YAML + ``--set``), learning-rate schedules, augmentations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tellapart import UserError
from tellapart.train import (
    AugmentConfig,
    ScheduleConfig,
    TrainConfig,
    augment_batch,
    config_from_dict,
    config_to_dict,
    load_config,
    lr_at,
)
from tellapart.train._augment import cutout, random_affine, random_hflip

# --------------------------------------------------------------------------- config


def test_yaml_file_then_set_overrides(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  name: mlp\n  args: {hidden: [64, 16]}\noptim:\n  lr: 1e-2\nepochs: 3\n")
    cfg = load_config(path, ["optim.lr=1e-3", "model.args.hidden=[32]", "augment.hflip=true", "schedule.name=cosine"])
    assert cfg.model.name == "mlp"
    assert cfg.model.args == {"hidden": [32]}
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.augment.hflip is True
    assert cfg.schedule.name == "cosine"
    assert cfg.epochs == 3


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "2.5e+1", "1.0e-3", ".5"])
def test_exponent_notation_is_a_float(text: str) -> None:
    # PyYAML (YAML 1.1) reads "1e-3" as a string; the help's own example must still work.
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == pytest.approx(float(text))


def test_int_for_a_float_field_becomes_float() -> None:
    cfg = load_config(None, ["optim.lr=1", "optim.weight_decay=0", "optim.betas=[1, 0.99]"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert isinstance(cfg.optim.weight_decay, float)
    assert cfg.optim.betas == (1.0, 0.99)


@pytest.mark.parametrize(
    ("override", "named"),
    [("optim.lrr=0.1", "optim.lrr"), ("bogus=1", "bogus"), ("early_stopping.patiense=2", "early_stopping.patiense")],
)
def test_unknown_key_is_named(override: str, named: str) -> None:
    with pytest.raises(UserError, match=f"unknown key.*{named}"):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("epochs=abc", "epochs"),
        ("epochs=true", "epochs"),
        ("optim.lr=fast", "optim.lr"),
        ("augment.hflip=[1]", "augment.hflip"),
        ("schedule.name=linear", "schedule.name"),
        ("optim=3", "optim"),
    ],
)
def test_wrong_type_is_named(override: str, named: str) -> None:
    with pytest.raises(UserError, match=named):
        load_config(None, [override])


def test_schedule_choice_error_lists_the_choices() -> None:
    with pytest.raises(UserError, match="constant.*cosine.*onecycle"):
        load_config(None, ["schedule.name=linear"])


@pytest.mark.parametrize("bad", ["optim.lr", "=3", "epochs=0", "optim.lr=-1"])
def test_malformed_or_out_of_range_set(bad: str) -> None:
    with pytest.raises(UserError):
        load_config(None, [bad])


def test_missing_or_invalid_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_config_round_trips_through_a_plain_dict() -> None:
    cfg = load_config(
        None, ["model.name=mlp", "model.args.hidden=[32, 8]", "optim.betas=[0.8, 0.9]", "augment.cutout=0.25", "seed=7"]
    )
    plain = config_to_dict(cfg)
    assert plain["optim"]["betas"] == [0.8, 0.9]  # YAML/JSON friendly
    assert config_from_dict(plain) == cfg
    assert config_from_dict(config_to_dict(TrainConfig())) == TrainConfig()


# --------------------------------------------------------------------------- schedules

TOTAL, PER_EPOCH, LR = 100, 10, 0.1


def _lrs(cfg: ScheduleConfig) -> list[float]:
    return [lr_at(s, TOTAL, PER_EPOCH, LR, cfg) for s in range(TOTAL)]


def test_warmup_ramps_linearly_to_the_peak() -> None:
    lrs = _lrs(ScheduleConfig(name="constant", warmup_epochs=2))
    ramp = lrs[:20]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    assert ramp[0] == pytest.approx(LR / 20)
    assert lrs[19] == pytest.approx(LR)
    assert lrs[20:] == [LR] * 80


def test_constant_is_constant() -> None:
    assert _lrs(ScheduleConfig(name="constant")) == [LR] * TOTAL


def test_cosine_decays_to_the_final_fraction() -> None:
    cfg = ScheduleConfig(name="cosine", final_lr_fraction=0.1)
    lrs = _lrs(cfg)
    assert lrs[0] == pytest.approx(LR)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[50] == pytest.approx(LR * (0.1 + 0.9 * 0.5))  # half way: half way down
    assert lr_at(TOTAL, TOTAL, PER_EPOCH, LR, cfg) == pytest.approx(0.1 * LR)
    assert lrs[-1] == pytest.approx(0.1 * LR, rel=0.01)


def test_onecycle_rises_peaks_and_falls() -> None:
    lrs = _lrs(ScheduleConfig(name="onecycle"))
    peak = max(range(TOTAL), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(LR)
    assert 20 <= peak <= 35  # 30% of training by default
    assert lrs[0] < 0.1 * LR and lrs[-1] < 0.01 * LR


# --------------------------------------------------------------------------- augmentations


def _batch(n: int = 8, side: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))


def test_augmentations_repeat_for_the_same_generator_state_and_keep_shapes() -> None:
    cfg = AugmentConfig(hflip=True, rotate=15, translate=0.1, scale=0.1, brightness=0.2, contrast=0.2, cutout=0.25)
    x = _batch()
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_hflip_mirrors_exactly_the_chosen_samples() -> None:
    x = _batch(64)
    y = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(y[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # each sample is either mirrored or untouched
    assert 16 < sum(flipped) < 48  # about half


def test_cutout_zeroes_one_square_of_the_asked_side() -> None:
    x = torch.ones(32, 1, 16, 16)
    y = cutout(x, torch.Generator().manual_seed(0), size=0.25)  # 4 px
    for img in y[:, 0]:
        zero = (img == 0).nonzero()
        rows, cols = zero[:, 0], zero[:, 1]
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(zero) == height * width  # one solid rectangle
        assert height <= 4 and width <= 4  # clipped at the border, never larger
        inside = 0 < rows.min() and rows.max() < 15 and 0 < cols.min() and cols.max() < 15
        if inside:
            assert height == width == 4


def test_zero_rotation_and_translation_is_identity() -> None:
    x = _batch()
    y = random_affine(x, torch.Generator().manual_seed(0), rotate=0.0, translate=0.0, scale=0.0)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    assert not AugmentConfig().enabled  # and the default config augments nothing


def test_translation_moves_the_image() -> None:
    x = torch.zeros(16, 1, 16, 16)
    x[:, 0, 6:10, 6:10] = 1.0
    y = random_affine(x, torch.Generator().manual_seed(0), rotate=0.0, translate=0.2, scale=0.0)
    grid = torch.arange(16.0)
    centre_x = (y[:, 0].sum(1) * grid).sum(1) / y[:, 0].sum((1, 2))
    assert (centre_x - 7.5).abs().max() > 1.0  # some sample moved more than a pixel
    assert (centre_x - 7.5).abs().max() <= 0.2 * 16 + 0.5  # and none beyond the asked range
